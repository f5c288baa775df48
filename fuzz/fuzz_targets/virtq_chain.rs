//! libFuzzer entry point for [`vhu_fuzz::virtq_chain::run`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vhu_fuzz::virtq_chain::run(data));
