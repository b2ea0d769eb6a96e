//! The XDP fast path's kernel maps as the relay left them, read with `bpftool` (the test
//! reads what the kernel holds, not what the relay says it installed).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Relay flags for the fast path on the loopback interface in generic mode (`lo` has no
/// native XDP).
pub(crate) const GENERIC_ON_LO: [&str; 6] = [
    "--fast-path",
    "xdp",
    "--xdp-interface",
    "lo",
    "--xdp-mode",
    "generic",
];

/// The newest maps named `c2p` and `p2c` (the running relay's: one XDP relay at a time here).
pub(crate) fn relay_maps() -> (u64, u64) {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .expect("run bpftool");
    let maps: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let newest = |name: &str| {
        maps.as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"] == name)
            .filter_map(|m| m["id"].as_u64())
            .max()
            .unwrap_or_else(|| panic!("no map {name}: {maps}"))
    };
    (newest("c2p"), newest("p2c"))
}

/// A kernel entry, from its raw bytes (network order, as the program reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Entry {
    pub(crate) fn channel(&self) -> u16 {
        u16::from_be_bytes([self.key[12], self.key[13]])
    }
    pub(crate) fn peer_port(&self) -> u16 {
        u16::from_be_bytes([self.value[10], self.value[11]])
    }
    pub(crate) fn expires_ns(&self) -> u64 {
        u64::from_ne_bytes(self.value[16..24].try_into().unwrap())
    }
}

pub(crate) fn dump(id: u64) -> Vec<Entry> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "id", &id.to_string()])
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool map dump {id}: {out:?}");
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
            .collect()
    };
    let entries: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Entry {
            key: bytes(&e["key"]),
            value: bytes(&e["value"]),
        })
        .collect()
}

/// Waits (bounded) until map `id` holds `n` entries; returns them.
pub(crate) fn expect_entries(id: u64, n: usize, what: &str) -> Vec<Entry> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = dump(id);
        if e.len() == n {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} entries, not {n}: {e:?}",
            e.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
