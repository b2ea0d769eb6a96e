#![no_main]

// The body is `cloudproxy_fuzz::stun_server`, also run on the corpus by `cargo test`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudproxy_fuzz::stun_server(data));
