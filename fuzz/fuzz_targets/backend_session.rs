//! libFuzzer entry point for `vhu_fuzz::backend_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vhu_fuzz::backend_session::run(data));
