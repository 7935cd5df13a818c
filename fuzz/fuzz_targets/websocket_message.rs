//! A WebSocket client message and the selection it makes.
#![no_main]
libfuzzer_sys::fuzz_target!(|body: &str| cloudai_master::fuzzing::websocket_message(body));
