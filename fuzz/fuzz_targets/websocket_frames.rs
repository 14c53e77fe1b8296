#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::websocket_frames(data));
