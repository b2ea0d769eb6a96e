//! Namespace names, creation and deletion, stale cleanup and the availability probe.
//!
//! A lab's namespaces are named `cpl<pid>x<n><role>`: `pid` is the creating process, `n` a
//! per-process counter and `role` one letter (`g` router, `c` client, `r` relay, `m` media, `p`
//! the availability probe). The pid makes names unique across test binaries running at once and
//! tells [`cleanup_stale`] whether the owner is gone.

use std::path::Path;
use std::process;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::command::check;
use crate::LabError;

/// The first characters of every namespace the lab creates.
const PREFIX: &str = "cpl";

/// Role letters that may end a lab namespace name.
const SUFFIXES: &str = "gcrmp";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A fresh `cpl<pid>x<n>` stem for this process.
pub(crate) fn next_lab_id() -> String {
    format!(
        "{PREFIX}{}x{}",
        process::id(),
        NEXT_LAB.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid that created `name`, if `name` is a lab namespace name.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('x')?;
    let counter = rest.strip_suffix(|c| SUFFIXES.contains(c))?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(counter) {
        return None;
    }
    pid.parse().ok()
}

/// `ip netns add NAME`.
pub(crate) fn add(name: &str) -> Result<(), LabError> {
    check("ip", &["netns", "add", name], None).map(drop)
}

/// `ip netns delete NAME`. The veths inside go with it once no process is left in it.
pub(crate) fn delete(name: &str) -> Result<(), LabError> {
    check("ip", &["netns", "delete", name], None).map(drop)
}

/// The names `ip netns list` prints (it may append ` (id: N)`).
pub(crate) fn list() -> Result<Vec<String>, LabError> {
    let out = check("ip", &["netns", "list"], None)?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Removes the namespaces (and kills the processes inside them) that earlier runs of the lab
/// left behind when their process died without tearing down, e.g. killed by a test timeout.
///
/// Only names of the lab's own form whose creating pid no longer exists are touched, so labs
/// of live test processes, in this binary or another, are safe. Returns the names removed.
pub fn cleanup_stale() -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    for name in list()? {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Best effort: leftover servers would otherwise keep the namespace alive unseen.
        let _ = kill_inside(&name);
        match delete(&name) {
            Ok(()) => removed.push(name),
            // Another process cleaning up at the same moment may have been first.
            Err(e) if list()?.contains(&name) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(removed)
}

/// SIGKILLs every process inside namespace `name`, by pid (`ip netns pids`).
fn kill_inside(name: &str) -> Result<(), LabError> {
    let out = check("ip", &["netns", "pids", name], None)?;
    let pids: Vec<&str> = out.split_whitespace().collect();
    if pids.is_empty() {
        return Ok(());
    }
    let mut args = vec!["-c", "kill -KILL \"$@\"", "sh"];
    args.extend(pids);
    check("sh", &args, None).map(drop)
}

/// Whether labs can be built here: root, `nft` present, and a namespace can be created, can run
/// `nft` inside it, and can be deleted again.
pub(crate) fn probe() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid != Some("0") {
        return Err(format!(
            "not root (effective uid {}): network namespaces need root",
            euid.unwrap_or("unknown")
        ));
    }
    check("nft", &["--version"], None).map_err(|e| format!("nftables unusable: {e}"))?;
    let name = format!("{}p", next_lab_id());
    add(&name).map_err(|e| format!("cannot create a network namespace: {e}"))?;
    let inside = check(
        "ip",
        &["netns", "exec", &name, "nft", "list", "ruleset"],
        None,
    );
    let deleted = delete(&name);
    inside.map_err(|e| format!("nft does not work inside a namespace: {e}"))?;
    deleted.map_err(|e| format!("cannot delete a network namespace: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_accepts_only_lab_names() {
        assert_eq!(owner_pid("cpl1234x0g"), Some(1234));
        assert_eq!(owner_pid("cpl7x12p"), Some(7));
        assert_eq!(owner_pid("cpl1234x0"), None);
        assert_eq!(owner_pid("cpl1234xg"), None);
        assert_eq!(owner_pid("cplx0g"), None);
        assert_eq!(owner_pid("cpl12a4x0g"), None);
        assert_eq!(owner_pid("cpl1234x0z"), None);
        assert_eq!(owner_pid("blue"), None);
    }

    #[test]
    fn lab_ids_are_unique_and_parse_back() {
        let a = next_lab_id();
        let b = next_lab_id();
        assert_ne!(a, b);
        assert_eq!(owner_pid(&format!("{a}m")), Some(process::id()));
    }
}
