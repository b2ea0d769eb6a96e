//! The lab's error type: every variant names the command or step that failed.

use std::io;
use std::net::IpAddr;
use std::process::ExitStatus;
use std::time::Duration;

/// What went wrong while building, driving or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The program could not be started at all (not found, not executable).
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// A setup or query command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// A command or process did not finish, or did not print what was awaited, in time.
    #[error("`{command}` did not {what} within {limit:?}; stderr: {stderr}")]
    Timeout {
        /// The command line.
        command: String,
        /// What was awaited ("finish", "print a line matching …").
        what: String,
        /// The bound that passed.
        limit: Duration,
        /// Its stderr so far, trimmed.
        stderr: String,
    },
    /// A spawned process closed its stdout (usually: exited) before printing the awaited line.
    #[error("`{command}` closed its stdout before it printed {what}; stderr: {stderr}")]
    Ended {
        /// The command line.
        command: String,
        /// What was awaited.
        what: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
    /// A command's output could not be understood.
    #[error("unexpected output from `{command}`: {detail}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The lab is IPv4 only; a profile named an IPv6 proxy.
    #[error("the lab is IPv4 only, but the profile publishes {0}")]
    Ipv6(IpAddr),
    /// A loss percentage above 100.
    #[error("loss of {0}% is not a percentage")]
    LossPercent(u8),
    /// Waiting for or killing a spawned process failed.
    #[error("could not {action} `{command}`: {source}")]
    Process {
        /// "wait for", "kill", …
        action: &'static str,
        /// The command line.
        command: String,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The lab was already torn down.
    #[error("the lab {0} was already torn down")]
    TornDown(String),
}
