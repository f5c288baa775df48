//! libFuzzer entry point for [`vhu_fuzz::frontend_backend_pair::run`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vhu_fuzz::frontend_backend_pair::run(data));
