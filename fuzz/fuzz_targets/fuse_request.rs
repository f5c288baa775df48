//! libFuzzer entry point for [`vhu_fuzz::fuse_request::run`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vhu_fuzz::fuse_request::run(data));
