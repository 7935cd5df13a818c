//! A line typed at the REPL, through the command parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|line: &str| cloudai_master::fuzzing::repl_line(line));
