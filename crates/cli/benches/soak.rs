//! The soak (not a test): 1,000 allocations at the audio rate (50 packets/s × 160 bytes) for
//! 10 minutes through a relay governed by a control plane, with 5% of the allocations replaced
//! per minute; prints loss, the relay's RSS at start and end, the allocations left, and the
//! usage the control plane metered against the traffic sent. What it sets up and how each
//! figure is read: `tests/soak/mod.rs`. Asserts nothing; BENCHMARKS.md has the figures.
//!
//! ```sh
//! cargo bench -p cloudproxy --bench soak          # release build, the full soak
//! SOAK_ALLOCATIONS=50 SOAK_SECS=20 SOAK_CHURN=60 cargo bench -p cloudproxy --bench soak
//! ```
//!
//! Environment: `SOAK_RELAY_FLAGS` (more relay flags, space-separated), `SOAK_ALLOCATIONS` (1000), `SOAK_SECS` (600), `SOAK_CHURN` (percent per
//! minute, 5), `SOAK_PPS` (50), `SOAK_SIZE` (160), `SOAK_WARMUP` (seconds of sending before
//! the start RSS, 10).

// Its unit tests are compiled here without a harness to run them.
#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/soak/mod.rs"]
mod soak;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a valid value")),
        Err(_) => default,
    }
}

fn main() {
    // libtest-style flags (`--bench`) are passed by cargo; nothing to parse.
    let full = soak::Soak::full();
    let soak = soak::Soak {
        allocations: env("SOAK_ALLOCATIONS", full.allocations),
        seconds: env("SOAK_SECS", full.seconds),
        churn_percent: env("SOAK_CHURN", full.churn_percent),
        pps: env("SOAK_PPS", full.pps),
        size: env("SOAK_SIZE", full.size),
        warmup: env("SOAK_WARMUP", full.warmup),
        setup_timeout: full.setup_timeout,
        // SOAK_RELAY_FLAGS="--fast-path xdp --xdp-interface lo --xdp-mode generic", say.
        relay_flags: std::env::var("SOAK_RELAY_FLAGS")
            .map(|f| f.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    eprintln!("{soak:?}: {}", common::cloudproxy_bin().display());
    let report = soak::run(&soak);
    println!("{report}");
    println!("{}", report.bench);
}
