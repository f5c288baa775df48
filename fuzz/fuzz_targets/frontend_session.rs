//! libFuzzer entry point for [`vhu_fuzz::frontend_session::run`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vhu_fuzz::frontend_session::run(data));
