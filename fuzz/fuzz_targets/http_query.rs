//! The query string of `GET /api/tasks`, decoded and checked.
#![no_main]
libfuzzer_sys::fuzz_target!(|query: &str| cloudai_master::fuzzing::tasks_query(query));
