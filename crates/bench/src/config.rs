//! What a run does: plain structs with documented defaults. Only the binary reads flags.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The smallest payload: the probe header every datagram carries (see [`crate::probe`]).
pub const MIN_SIZE: usize = crate::probe::HEADER_LEN;
/// The largest payload. ChannelData could carry 65,535 bytes, but the receive slots are sized
/// for this, and media never comes close.
pub const MAX_SIZE: usize = 8192;

/// How the generator reaches the TURN server (RFC 8656 §3.1): UDP, TCP, or TLS over TCP with
/// ALPN `stun.turn` (RFC 7443; any certificate is accepted). The relay-to-peer leg is UDP
/// whatever this is. The one transport type of the workspace.
pub use cloudproxy_proto::Transport;

/// Long-term credentials for the Allocate 401 dance.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// TURN REST credentials (coturn `--use-auth-secret`, its clients' `-W`): allocation `i`
    /// uses `username = "<now+24h>:<user>-<i>"`, `password = base64(HMAC-SHA1(secret,
    /// username))`. One id per allocation, so a per-user quota (cloudproxy's default is 32 per
    /// credential) does not cap the run.
    Rest {
        /// The shared secret the server is configured with.
        secret: String,
        /// The user-id part of each username; `-<i>` is appended per allocation.
        user: String,
    },
    /// One static username and password for every allocation.
    Static {
        /// The long-term credential's username.
        username: String,
        /// The long-term credential's password.
        password: String,
    },
    /// A cloudproxy app key: allocation `i` uses its own user token
    /// ([`cloudproxy_proto::token`]), channel `<channel>-<i>` and uid `i`, valid for 24 h. A
    /// relay governed by a control plane then admits, leases and meters every allocation as
    /// the app's, one user per channel.
    App {
        /// The app the tokens are minted for.
        app_id: String,
        /// Which of the app's signing keys `secret` is (the relay looks the key up by it).
        key_id: String,
        /// The app key's signing secret.
        secret: String,
        /// The channel name prefix; allocation `i` joins `<channel>-<i>`.
        channel: String,
    },
}

impl Credentials {
    /// The username and password of allocation `index` at `now_unix`.
    pub fn for_allocation(&self, index: u32, now_unix: u64) -> (String, String) {
        match self {
            Credentials::Rest { secret, user } => {
                let username = cloudproxy_proto::auth::rest_username(
                    now_unix + 86_400,
                    &format!("{user}-{index}"),
                );
                let password = cloudproxy_proto::auth::rest_password(secret.as_bytes(), &username);
                (username, password)
            }
            Credentials::Static { username, password } => (username.clone(), password.clone()),
            Credentials::App {
                app_id,
                key_id,
                secret,
                channel,
            } => cloudproxy_proto::token::Token::mint(
                app_id,
                key_id,
                secret.as_bytes(),
                &format!("{channel}-{index}"),
                index,
                now_unix + 86_400,
            )
            // Names are checked when the configuration is made (`Credentials::check`); an
            // empty credential would only be refused with a visible 401.
            .map_or_else(|_| Default::default(), |t| (t.username, t.password)),
        }
    }

    /// Whether every allocation's credential can be made (app ids, key ids and channel names
    /// have a limited alphabet and length).
    pub fn check(&self) -> Result<(), cloudproxy_proto::token::TokenError> {
        if let Credentials::App {
            app_id,
            key_id,
            secret,
            channel,
        } = self
        {
            cloudproxy_proto::token::Token::mint(
                app_id,
                key_id,
                secret.as_bytes(),
                &format!("{channel}-{}", u32::MAX),
                u32::MAX,
                0,
            )?;
        }
        Ok(())
    }
}

/// How fast each allocation sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// This many ChannelData packets per second per allocation, for [`Config::duration`].
    PerAllocation(f64),
    /// Search for the highest total rate whose loss stays under [`Search::max_loss`].
    Max,
}

/// Named payload-size and rate pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// 50 packets/s × 160 bytes: 20 ms frames of G.711 or Opus at 64 kbit/s.
    Audio,
    /// 90 packets/s × 1000 bytes: roughly 720 kbit/s of video.
    Video,
}

impl Preset {
    /// Packets per second per allocation and payload bytes.
    pub fn rate_and_size(self) -> (f64, usize) {
        match self {
            Preset::Audio => (50.0, 160),
            Preset::Video => (90.0, 1000),
        }
    }
}

/// The `--rate max` search: an exponential ramp, then bisection, over short steps.
#[derive(Debug, Clone)]
pub struct Search {
    /// Length of one step. Default 2 s.
    pub step: Duration,
    /// A step passes when its loss is below this fraction. Default 0.001 (0.1%).
    pub max_loss: f64,
    /// Total packets per second of the first step. Default 1,000 (at least 10 per allocation).
    pub start_pps: f64,
    /// Stop bisecting when the gap between the best passing and the lowest failing rate is
    /// below this fraction of the passing one. Default 0.05.
    pub precision: f64,
    /// At most this many steps. Default 30.
    pub max_steps: usize,
    /// Run a failed step again and count it failed only if it fails twice: one stall of
    /// another process on a shared machine must not end the search. Default true.
    pub confirm_failures: bool,
}

impl Default for Search {
    fn default() -> Self {
        Self {
            step: Duration::from_secs(2),
            max_loss: 0.001,
            start_pps: 1000.0,
            precision: 0.05,
            max_steps: 30,
            confirm_failures: true,
        }
    }
}

/// Allocation set-up: how many at once, how patiently, and whether the run stops there.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Allocations being set up at once. Default 64.
    pub concurrency: usize,
    /// How long one set-up request may go unanswered (UDP retransmits within it). Default 4 s.
    pub timeout: Duration,
    /// Only set up the allocations, hold them idle for [`Setup::hold`], and report the
    /// set-up rate. Default false.
    pub only: bool,
    /// How long a [`Setup::only`] run holds its allocations idle (refreshed) before
    /// releasing them, so the server's memory can be read meanwhile. Default 0.
    pub hold: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            concurrency: 64,
            timeout: Duration::from_secs(4),
            only: false,
            hold: Duration::ZERO,
        }
    }
}

/// The UDP echo peer every channel points at: started by the run, or already running
/// elsewhere.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Where the echo peer binds. Default: the loopback address of the server's family
    /// ([`Config::peer_ip`]).
    pub ip: Option<IpAddr>,
    /// The echo peer's port. Default 0: any free port.
    pub port: u16,
    /// An echo peer already running elsewhere (`cloudproxy bench-echo`, in another network
    /// namespace or on another host): every channel (or raw flow's forwarder) points at it and
    /// no peer is started here; [`crate::Report::peer_received`] is then 0. Default none.
    pub remote: Option<SocketAddr>,
    /// Echo peer threads (one `SO_REUSEPORT` socket each). Default 1.
    pub threads: usize,
}

impl Default for Peer {
    fn default() -> Self {
        Self {
            ip: None,
            port: 0,
            remote: None,
            threads: 1,
        }
    }
}

/// One run of the load generator.
#[derive(Debug, Clone)]
pub struct Config {
    /// The TURN server's listener.
    pub server: SocketAddr,
    /// Default UDP.
    pub transport: Transport,
    /// How each allocation authenticates its Allocate.
    pub credentials: Credentials,
    /// REALM to use if the server's 401 carries none (the 401's REALM always wins).
    pub realm: Option<String>,
    /// Number of allocations. Default 10.
    pub allocations: usize,
    /// Default 50 packets/s per allocation (the audio preset).
    pub rate: Rate,
    /// ChannelData payload bytes, [`MIN_SIZE`]..=[`MAX_SIZE`]. Default 160.
    pub size: usize,
    /// Sending time of a fixed-rate run. Default 10 s.
    pub duration: Duration,
    /// Join/leave churn of a fixed-rate run, in percent of the allocations per minute: that
    /// many are deleted and replaced by new ones while sending ([`crate::churn`]). Default 0.
    pub churn_percent_per_minute: f64,
    /// Sending/receiving threads; allocations are dealt to them round-robin. Default: one per
    /// core.
    pub threads: usize,
    /// How the allocations are set up.
    pub setup: Setup,
    /// The echo peer the channels point at.
    pub peer: Peer,
    /// No TURN: `server` is a plain UDP forwarder ([`crate::forward`]) that passes each
    /// client's datagrams to the echo peer (on [`Peer::port`]) and back unchanged.
    /// Every "allocation" is then one connected UDP socket, with no set-up and no refreshes;
    /// this measures the ceiling a relay built on the same system calls could reach.
    /// Default false.
    pub raw: bool,
    /// Requested send and receive buffer of every socket. Default 4 MiB (forced past
    /// `rmem_max` when the process may, as root may).
    pub socket_buffer: usize,
    /// The ramp and bisection of a [`Rate::Max`] run.
    pub search: Search,
}

impl Config {
    /// A configuration with the documented defaults.
    pub fn new(server: SocketAddr, credentials: Credentials) -> Self {
        Self {
            server,
            transport: Transport::Udp,
            credentials,
            realm: None,
            allocations: 10,
            rate: Rate::PerAllocation(50.0),
            size: 160,
            duration: Duration::from_secs(10),
            churn_percent_per_minute: 0.0,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            setup: Setup::default(),
            peer: Peer::default(),
            raw: false,
            socket_buffer: 4 << 20,
            search: Search::default(),
        }
    }

    /// Where the echo peer binds: [`Peer::ip`], or the loopback address of the server's family.
    pub fn peer_ip(&self) -> IpAddr {
        self.peer.ip.unwrap_or(match self.server {
            SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        })
    }
}
