#![no_main]

// The body is `cloudproxy_fuzz::token`, also run on the corpus by `cargo test`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudproxy_fuzz::token(data));
