//! Sizes, durations, ids, addresses, images and commands from flags, the
//! REPL and requests, through the shared parsers and validators.
#![no_main]
use cloudai_common::{units, validate};

libfuzzer_sys::fuzz_target!(|text: &str| {
    let _ = units::parse_size(text);
    let _ = units::parse_duration(text);
    let _ = validate::id("id", text);
    let _ = validate::address("address", text);
    let _ = validate::image(text);
    let words: Vec<String> = text.split(' ').map(str::to_string).collect();
    let _ = validate::command(&words);
    let env = words
        .iter()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = validate::env(&env);
});
