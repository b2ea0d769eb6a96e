//! The naming scheme (README "Names"): one secret environment variable, with the earlier
//! names still read and a deprecation warning, as a script would see it from outside.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{cloudproxy_bin, run_bounded};

const OLD: [&str; 3] = [
    "CLOUDPROXY_STATIC_SECRET",
    "CLOUDPROXY_APP_SECRET",
    "CLOUDPROXY_BENCH_SECRET",
];

/// `cloudproxy creds` with only `env` set; returns (password line, stderr lines).
fn creds_with(env: &[(&str, &str)]) -> (String, Vec<String>) {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["creds", "--id", "alice", "--ttl", "1h"]);
    cmd.env_remove("CLOUDPROXY_SECRET");
    for old in OLD {
        cmd.env_remove(old);
    }
    cmd.envs(env.iter().copied());
    let run = run_bounded("cloudproxy creds", cmd, Duration::from_secs(20));
    assert!(run.success(), "{env:?}: {run:?}");
    let password = run
        .output
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no password line: {}", run.output))
        .to_owned();
    let stderr = run
        .output
        .lines()
        .filter_map(|l| l.strip_prefix("[stderr] "))
        .map(str::to_owned)
        .collect();
    (password, stderr)
}

#[test]
fn one_secret_variable_and_the_old_names_with_a_warning() {
    // The expiry is in the username, so two runs a second apart differ: compare the
    // variables within the same second by retrying a mismatch that straddles one.
    for attempt in 0.. {
        let (new, new_err) = creds_with(&[("CLOUDPROXY_SECRET", "s3cret")]);
        assert!(
            new_err.is_empty(),
            "no warning for the current name: {new_err:?}"
        );
        let mut same_second = true;
        for old in OLD {
            let (pw, err) = creds_with(&[(old, "s3cret")]);
            assert!(
                err.iter().any(|l| l.contains(old)
                    && l.contains("deprecated")
                    && l.contains("CLOUDPROXY_SECRET")),
                "{old}: {err:?}"
            );
            same_second &= pw == new;
        }
        // Both set: the current name wins, and the old one is said to be ignored.
        let (both, err) = creds_with(&[
            ("CLOUDPROXY_SECRET", "s3cret"),
            ("CLOUDPROXY_APP_SECRET", "other"),
        ]);
        assert!(err.iter().any(|l| l.contains("ignored")), "{err:?}");
        same_second &= both == new;
        if same_second {
            return;
        }
        assert!(
            attempt < 3,
            "the old variables do not give the same credential"
        );
    }
}
