//! The relay's XDP fast path: ChannelData over UDP forwarded in the kernel
//! (`bpf/relay.bpf.c`), following entries user space installs and removes.
//!
//! One [`FastPath`] per relay process, attached to one interface. An entry is one channel
//! binding, both directions: client → peer (strip the 4-byte ChannelData header, send from
//! the relayed address) and peer → client (add it, send from the listener the client used).
//! Entries carry an expiry on the kernel's monotonic clock (the clock of [`Instant`]), so a
//! binding or permission that lapses stops being forwarded in the kernel even before user
//! space removes it. Anything without a live entry goes to the relay's sockets unchanged.
//!
//! Each direction of an entry has a counter (payload packets and bytes, per CPU), read with
//! [`FastPath::counters`]: what the kernel forwarded never reaches the relay's sockets, so usage
//! metering adds these.
//!
//! IPv4 and IPv6 (a binding's addresses are all of one family); IPv6 extension headers and
//! IPv4 options or fragments take the socket path.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuValues};
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;

/// The compiled program (empty when this build had no clang; see [`BUILT_WITHOUT`]).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay.bpf.o"));

/// Why this build has no XDP program ("" when it has one).
pub const BUILT_WITHOUT: &str = include_str!(concat!(env!("OUT_DIR"), "/relay.bpf.why"));

/// Entries each map holds (the program's MAX_ENTRIES).
pub const MAX_ENTRIES: u32 = 65_536;

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the driver (XDP_FLAGS_DRV_MODE): fastest; not every driver has it.
    Native,
    /// On the generic path (XDP_FLAGS_SKB_MODE): any interface, slower.
    Generic,
}

/// Why the fast path is not running.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// This build has no XDP program (no clang at build time); the carried text is [`BUILT_WITHOUT`].
    #[error("this relay was built without its XDP program: {0}")]
    NotBuilt(&'static str),
    /// The kernel refused to load the program (no privilege, verifier, old kernel).
    #[error("cannot load the XDP program (needs root or CAP_BPF + CAP_NET_ADMIN): {0}")]
    Load(String),
    /// The program loaded but could not be attached to the interface.
    #[error("cannot attach the XDP program to {interface} in {mode:?} mode: {why}")]
    Attach {
        /// The interface named in the configuration.
        interface: String,
        /// The attach mode tried.
        mode: Mode,
        /// The kernel's or loader's reason.
        why: String,
    },
    /// A BPF map could not be found, read or written.
    #[error("XDP map {map}: {why}")]
    Map {
        /// The map's name in the program.
        map: &'static str,
        /// The loader's reason.
        why: String,
    },
    /// Every map entry ([`MAX_ENTRIES`]) holds a channel already.
    #[error("all {MAX_ENTRIES} fast-path entries are in use")]
    Full,
    /// A channel mixed IPv4 and IPv6 addresses, which one map entry cannot hold.
    #[error("a channel's addresses must all be IPv4 or all IPv6")]
    MixedFamilies,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError {
    move |e| XdpError::Map {
        map,
        why: e.to_string(),
    }
}

// The maps' keys and values, laid out as in `bpf/relay.bpf.c`, for an address of `A`:
// `[u8; 4]` (the program's `__u32` IPv4 maps) or `[u8; 16]` (its IPv6 maps). Addresses,
// ports and the channel number are in network byte order.

/// A 4-byte IPv4 or a 16-byte IPv6 address, as the maps hold it.
trait Addr: aya::Pod + Default + Eq + std::hash::Hash + std::fmt::Debug {}
impl Addr for [u8; 4] {}
impl Addr for [u8; 16] {}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct C2pKey<A> {
    client_ip: A,
    listener_ip: A,
    client_port: u16,
    listener_port: u16,
    channel: u16,
    pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct C2pVal<A> {
    relay_ip: A,
    peer_ip: A,
    relay_port: u16,
    peer_port: u16,
    counter: u32,
    expires_ns: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct P2cKey<A> {
    peer_ip: A,
    relay_ip: A,
    peer_port: u16,
    relay_port: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct P2cVal<A> {
    /// Where a peer's datagram goes: the client side of the binding, which is also the binding's
    /// key in the other direction (C's `p2c_val` spells the same fields out, same offsets).
    client: C2pKey<A>,
    counter: u32,
    pad2: u32,
    expires_ns: u64,
}

/// Payload packets and bytes one direction of an entry forwarded.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets forwarded.
    pub packets: u64,
    /// Payload bytes forwarded.
    pub bytes: u64,
}

// SAFETY: `repr(C)` structs of byte arrays and integers whose padding fields are explicit, so
// every bit pattern is valid and no byte is uninitialised (the field order leaves no implicit
// padding for either address size).
unsafe impl<A: Addr> aya::Pod for C2pKey<A> {}
// SAFETY: as above.
unsafe impl<A: Addr> aya::Pod for C2pVal<A> {}
// SAFETY: as above.
unsafe impl<A: Addr> aya::Pod for P2cKey<A> {}
// SAFETY: as above.
unsafe impl<A: Addr> aya::Pod for P2cVal<A> {}
// SAFETY: as above.
unsafe impl aya::Pod for Counter {}

// The sizes the program's maps were declared with.
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<C2pKey<[u8; 4]>>() == 16 && size_of::<C2pVal<[u8; 4]>>() == 24);
    assert!(size_of::<P2cKey<[u8; 4]>>() == 12 && size_of::<P2cVal<[u8; 4]>>() == 32);
    assert!(size_of::<C2pKey<[u8; 16]>>() == 40 && size_of::<C2pVal<[u8; 16]>>() == 48);
    assert!(size_of::<P2cKey<[u8; 16]>>() == 36 && size_of::<P2cVal<[u8; 16]>>() == 56);
};

/// The client → peer and peer → client maps of one address family.
struct Maps<A: Addr> {
    c2p: HashMap<MapData, C2pKey<A>, C2pVal<A>>,
    p2c: HashMap<MapData, P2cKey<A>, P2cVal<A>>,
}

impl<A: Addr> Maps<A> {
    fn take(ebpf: &mut Ebpf, c2p: &'static str, p2c: &'static str) -> Result<Self, XdpError> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or(XdpError::Map {
                map: name,
                why: "missing from the object".into(),
            })
        };
        Ok(Self {
            c2p: HashMap::try_from(take(c2p)?).map_err(map_err(c2p))?,
            p2c: HashMap::try_from(take(p2c)?).map_err(map_err(p2c))?,
        })
    }

    fn insert(
        &mut self,
        ck: C2pKey<A>,
        pk: P2cKey<A>,
        ids: Installed,
        expires_ns: u64,
    ) -> Result<(), XdpError> {
        let cv = C2pVal {
            relay_ip: pk.relay_ip,
            peer_ip: pk.peer_ip,
            relay_port: pk.relay_port,
            peer_port: pk.peer_port,
            counter: ids.to_peer,
            expires_ns,
        };
        let pv = P2cVal {
            client: ck,
            counter: ids.to_client,
            pad2: 0,
            expires_ns,
        };
        self.c2p.insert(ck, cv, 0).map_err(map_err("c2p"))?;
        self.p2c.insert(pk, pv, 0).map_err(map_err("p2c"))
    }

    fn remove(&mut self, ck: &C2pKey<A>, pk: &P2cKey<A>) {
        let _ = self.c2p.remove(ck);
        let _ = self.p2c.remove(pk);
    }

    fn len(&self) -> (usize, usize) {
        (self.c2p.keys().count(), self.p2c.keys().count())
    }
}

/// One channel binding, as the fast path forwards it. Its addresses are all IPv4 or all IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// The client's address (the 5-tuple's remote side).
    pub client: SocketAddr,
    /// The relay listener the client reached.
    pub listener: SocketAddr,
    /// The channel number (0x4000–0x7FFE).
    pub number: u16,
    /// The allocation's relayed transport address.
    pub relay: SocketAddr,
    /// The peer bound to the channel.
    pub peer: SocketAddr,
}

/// A binding's keys in the kernel's maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Keys {
    V4(C2pKey<[u8; 4]>, P2cKey<[u8; 4]>),
    V6(C2pKey<[u8; 16]>, P2cKey<[u8; 16]>),
}

fn v4(a: SocketAddr) -> Option<([u8; 4], u16)> {
    match a.ip() {
        IpAddr::V4(ip) => Some((ip.octets(), a.port().to_be())),
        IpAddr::V6(_) => None,
    }
}

fn v6(a: SocketAddr) -> Option<([u8; 16], u16)> {
    match a.ip() {
        IpAddr::V6(ip) => Some((ip.octets(), a.port().to_be())),
        IpAddr::V4(_) => None,
    }
}

impl Channel {
    /// The keys, or `None` when the addresses mix families.
    fn keys(&self) -> Option<Keys> {
        let addrs = [self.client, self.listener, self.relay, self.peer];
        if let [Some(c), Some(l), Some(r), Some(p)] = addrs.map(v4) {
            let (ck, pk) = keys_of(c, l, r, p, self.number);
            return Some(Keys::V4(ck, pk));
        }
        if let [Some(c), Some(l), Some(r), Some(p)] = addrs.map(v6) {
            let (ck, pk) = keys_of(c, l, r, p, self.number);
            return Some(Keys::V6(ck, pk));
        }
        None
    }
}

/// Both directions' keys from (address, port) pairs of one family, in network byte order.
fn keys_of<A: Addr>(
    client: (A, u16),
    listener: (A, u16),
    relay: (A, u16),
    peer: (A, u16),
    number: u16,
) -> (C2pKey<A>, P2cKey<A>) {
    (
        C2pKey {
            client_ip: client.0,
            listener_ip: listener.0,
            client_port: client.1,
            listener_port: listener.1,
            channel: number.to_be(),
            pad: 0,
        },
        P2cKey {
            peer_ip: peer.0,
            relay_ip: relay.0,
            peer_port: peer.1,
            relay_port: relay.1,
        },
    )
}

impl Keys {
    /// The client → peer half, which names the binding (a client's channel number names one
    /// peer).
    fn binding(&self) -> BindingKey {
        match self {
            Keys::V4(c, _) => BindingKey::V4(*c),
            Keys::V6(c, _) => BindingKey::V6(*c),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BindingKey {
    V4(C2pKey<[u8; 4]>),
    V6(C2pKey<[u8; 16]>),
}

/// Where an installed channel's counters are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Counter of client → peer.
    pub to_peer: u32,
    /// Counter of peer → client.
    pub to_client: u32,
}

/// The loaded, attached program and its maps. Dropping it detaches the program.
pub struct FastPath {
    // Owns the program, so the attachment; dropped last.
    _ebpf: Ebpf,
    v4: Maps<[u8; 4]>,
    v6: Maps<[u8; 16]>,
    counters: PerCpuArray<MapData, Counter>,
    cpus: usize,
    /// By binding, with the keys in force for it.
    installed: std::collections::HashMap<BindingKey, (Keys, Installed)>,
    free_counters: Vec<u32>,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("entries", &self.installed.len())
            .finish_non_exhaustive()
    }
}

impl FastPath {
    /// Loads the program and attaches it to `interface`.
    pub fn load(interface: &str, mode: Mode) -> Result<Self, XdpError> {
        if OBJECT.is_empty() {
            return Err(XdpError::NotBuilt(BUILT_WITHOUT));
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| XdpError::Load(e.to_string()))?;
        let program: &mut Xdp = ebpf
            .program_mut("relay_fast_path")
            .ok_or_else(|| XdpError::Load("no program relay_fast_path in the object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| XdpError::Load(e.to_string()))?;
        program.load().map_err(|e| XdpError::Load(e.to_string()))?;
        let flags = match mode {
            Mode::Native => XdpFlags::DRV_MODE,
            Mode::Generic => XdpFlags::SKB_MODE,
        };
        program
            .attach(interface, flags)
            .map_err(|e| XdpError::Attach {
                interface: interface.into(),
                mode,
                why: e.to_string(),
            })?;
        let v4 = Maps::take(&mut ebpf, "c2p", "p2c")?;
        let v6 = Maps::take(&mut ebpf, "c2p6", "p2c6")?;
        let counters = ebpf.take_map("counters").ok_or(XdpError::Map {
            map: "counters",
            why: "missing from the object".into(),
        })?;
        let counters = PerCpuArray::try_from(counters).map_err(map_err("counters"))?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| XdpError::Load(format!("cannot count CPUs: {e}")))?;
        Ok(Self {
            _ebpf: ebpf,
            v4,
            v6,
            counters,
            cpus,
            installed: std::collections::HashMap::new(),
            free_counters: (0..2 * MAX_ENTRIES).rev().collect(),
        })
    }

    /// Installs or refreshes `channel` until `expires`. A refresh keeps its counters; a
    /// channel rebound to another peer (RFC 8656 §12.2 forbids it within a binding's life,
    /// but after it expires the number may name a new peer) replaces the old peer's entry.
    pub fn install(&mut self, channel: &Channel, expires: Instant) -> Result<Installed, XdpError> {
        let keys = channel.keys().ok_or(XdpError::MixedFamilies)?;
        let binding = keys.binding();
        let at = monotonic_ns(expires);
        let ids = match self.installed.get(&binding) {
            Some((old, ids)) => {
                let ids = *ids;
                if *old != keys {
                    let old = *old;
                    self.remove_keys(&old);
                }
                ids
            }
            None => {
                if self.free_counters.len() < 2 {
                    return Err(XdpError::Full);
                }
                let ids = Installed {
                    to_peer: self.free_counters.pop().unwrap_or_default(),
                    to_client: self.free_counters.pop().unwrap_or_default(),
                };
                for id in [ids.to_peer, ids.to_client] {
                    self.reset_counter(id)?;
                }
                ids
            }
        };
        if let Err(e) = self.insert_keys(&keys, ids, at) {
            self.remove_keys(&keys);
            // Neither direction is in the kernel now: the entry is gone, counters and all.
            self.installed.remove(&binding);
            self.free_counters.extend([ids.to_peer, ids.to_client]);
            return Err(e);
        }
        self.installed.insert(binding, (keys, ids));
        Ok(ids)
    }

    fn insert_keys(&mut self, keys: &Keys, ids: Installed, at: u64) -> Result<(), XdpError> {
        match *keys {
            Keys::V4(ck, pk) => self.v4.insert(ck, pk, ids, at),
            Keys::V6(ck, pk) => self.v6.insert(ck, pk, ids, at),
        }
    }

    fn remove_keys(&mut self, keys: &Keys) {
        match keys {
            Keys::V4(ck, pk) => self.v4.remove(ck, pk),
            Keys::V6(ck, pk) => self.v6.remove(ck, pk),
        }
    }

    /// Removes `channel` from both directions. Returns what it forwarded in all
    /// (client → peer, peer → client), or `None` if it was not installed.
    pub fn remove(&mut self, channel: &Channel) -> Option<(Counter, Counter)> {
        let binding = channel.keys()?.binding();
        let (keys, ids) = self.installed.remove(&binding)?;
        self.remove_keys(&keys);
        let totals = (
            self.counters(ids.to_peer).unwrap_or_default(),
            self.counters(ids.to_client).unwrap_or_default(),
        );
        self.free_counters.extend([ids.to_peer, ids.to_client]);
        Some(totals)
    }

    /// What counter `id` has counted, over every CPU.
    pub fn counters(&self, id: u32) -> Result<Counter, XdpError> {
        let per_cpu = self.counters.get(&id, 0).map_err(map_err("counters"))?;
        Ok(per_cpu.iter().fold(Counter::default(), |a, c| Counter {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
        }))
    }

    /// Channels installed.
    pub fn len(&self) -> usize {
        self.installed.len()
    }

    /// Whether no channel is installed.
    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    /// Entries in the kernel's maps now, both families: (client → peer, peer → client). One
    /// system call per entry: for tests and diagnostics.
    pub fn map_entries(&self) -> (usize, usize) {
        let (a, b) = (self.v4.len(), self.v6.len());
        (a.0 + b.0, a.1 + b.1)
    }

    fn reset_counter(&mut self, id: u32) -> Result<(), XdpError> {
        let zeros = PerCpuValues::try_from(vec![Counter::default(); self.cpus]).map_err(|e| {
            XdpError::Map {
                map: "counters",
                why: e.to_string(),
            }
        })?;
        self.counters.set(id, zeros, 0).map_err(map_err("counters"))
    }
}

/// `at` on CLOCK_MONOTONIC in nanoseconds: the clock of `Instant` on Linux and of
/// `bpf_ktime_get_ns`.
fn monotonic_ns(at: Instant) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = Instant::now();
    let now_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    match at.checked_duration_since(now) {
        Some(ahead) => now_ns.saturating_add(ahead.as_nanos() as u64),
        None => now_ns.saturating_sub(now.duration_since(at).as_nanos() as u64),
    }
}
