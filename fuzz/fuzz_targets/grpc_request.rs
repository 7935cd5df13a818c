//! gRPC request bodies from workers and agents (type chosen by the first
//! byte), decoded and put through the master's checks and conversions.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudai_master::fuzzing::grpc_request(data));
