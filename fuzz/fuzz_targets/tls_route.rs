#![no_main]

// The body is `cloudproxy_fuzz::tls_route`, also run on the corpus by `cargo test`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudproxy_fuzz::tls_route(data));
