//! One line of a `cloudai-master export` file, as `import` reads it.
#![no_main]
libfuzzer_sys::fuzz_target!(|line: &str| cloudai_master::fuzzing::import_line(line));
