//! libFuzzer entry point for [`vhu_fuzz::frame_decode::run`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vhu_fuzz::frame_decode::run(data));
