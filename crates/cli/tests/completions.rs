//! `cloudproxy completions SHELL`: scripts for bash, zsh and fish that name the subcommands
//! and nested flags, and a bash script that bash itself parses and completes with.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{cloudproxy_bin, run_bounded, which};

fn completions(shell: &str) -> String {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["completions", shell]);
    let run = run_bounded("cloudproxy completions", cmd, Duration::from_secs(30));
    assert!(run.success(), "{shell}: {run:?}");
    assert!(!run.output.contains("[stderr]"), "{shell}: {}", run.output);
    run.output
}

#[test]
fn bash_zsh_and_fish_scripts_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = completions(shell);
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        for sub in [
            "up",
            "relay",
            "join",
            "diagnose",
            "admin",
            "completions",
            "requests",
            "allowlist",
        ] {
            assert!(
                script.contains(sub),
                "{shell} script does not mention {sub}"
            );
        }
        // Flags of nested commands.
        for flag in [
            "relay-ip",
            "allow-peer",
            "tls-proxy",
            "join-timeout",
            "effective-at",
        ] {
            assert!(
                script.contains(flag),
                "{shell} script does not mention --{flag}"
            );
        }
    }
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["completions", "tcsh"]);
    let run = run_bounded("cloudproxy completions tcsh", cmd, Duration::from_secs(30));
    assert_eq!(run.status.and_then(|s| s.code()), Some(2), "{run:?}");
}

#[test]
fn bash_parses_the_bash_script_and_it_completes() {
    let Some(bash) = which("bash") else {
        panic!("bash is not installed");
    };
    let dir = common::TempDir::new("completions");
    let file = dir.0.join("cloudproxy.bash");
    std::fs::write(&file, completions("bash")).unwrap();
    let mut cmd = Command::new(&bash);
    cmd.arg("-n").arg(&file);
    let run = run_bounded("bash -n", cmd, Duration::from_secs(30));
    assert!(run.success(), "bash -n: {run:?}");
    // Sourced, it registers a completion for `cloudproxy`, and completing `cloudproxy rel`
    // offers `relay`.
    let probe = format!(
        "source {}; complete -p cloudproxy; COMP_WORDS=(cloudproxy rel); COMP_CWORD=1; \
         COMP_LINE='cloudproxy rel'; COMP_POINT=${{#COMP_LINE}}; _cloudproxy cloudproxy rel cloudproxy; \
         printf 'reply:%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let mut cmd = Command::new(&bash);
    cmd.args(["--norc", "--noprofile", "-c", &probe]);
    let run = run_bounded("bash completion", cmd, Duration::from_secs(30));
    assert!(run.success(), "{run:?}");
    assert!(run.output.contains("-F _cloudproxy"), "{}", run.output);
    assert!(
        run.output.lines().any(|l| l == "reply:relay"),
        "{}",
        run.output
    );
}
