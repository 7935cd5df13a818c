//! Join tokens and API tokens, as the master and workers parse them.
#![no_main]
libfuzzer_sys::fuzz_target!(|token: &str| {
    let _ = cloudai_common::tls::JoinToken::parse(token);
    cloudai_master::fuzzing::api_token(token);
});
