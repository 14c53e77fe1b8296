#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| events::protocol::fuzz_request(data));
