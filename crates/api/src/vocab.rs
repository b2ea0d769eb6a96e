//! The closed vocabulary: regions, SDKs, modes, quality tiers, lifecycle states, pools,
//! transports and roles. Each is an enum with one wire spelling (snake_case), used in JSON,
//! in URLs, on the command line and in the control plane's database (a `TEXT` column holding
//! [`Wire::as_str`]).

use serde::{Deserialize, Serialize};

/// Closed enums stored as text: one spelling on the wire, in URLs and in the database.
pub trait Wire: Sized + Copy + 'static {
    /// Every value, in display order.
    const ALL: &'static [Self];
    /// The one spelling of this value.
    fn as_str(self) -> &'static str;
    /// The value spelled `s`, if any.
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// `wire_enum! { Enum { Variant = "spelling", ... } }` defines the enum and its [`Wire`] spelling.
/// With `Variant = "spelling" => value` and a closing `fn name -> Type;`, each variant's value
/// stands beside it in the one table, and `name(self)` returns it.
macro_rules! wire_enum {
    (
        $(#[$m:meta])* $name:ident {
            $($(#[$vm:meta])* $variant:ident = $s:literal => $value:expr),+ $(,)?
        }
        $(#[$fm:meta])* fn $f:ident -> $t:ty;
    ) => {
        wire_enum! { $(#[$m])* $name { $($(#[$vm])* $variant = $s),+ } }
        impl $name {
            $(#[$fm])*
            pub fn $f(self) -> $t {
                match self { $(Self::$variant => $value),+ }
            }
        }
    };
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $variant),+
        }
        impl $name {
            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
        }
        impl Wire for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// A service region. Force-mode clients reach only their region's published relays.
    Region {
        /// Mainland China.
        MainlandChina = "mainland_china" => "Mainland China",
        /// Europe.
        Europe = "europe" => "Europe",
        /// India.
        India = "india" => "India",
        /// Japan.
        Japan = "japan" => "Japan",
        /// North America.
        NorthAmerica = "north_america" => "North America",
        /// Southeast Asia.
        SoutheastAsia = "southeast_asia" => "Southeast Asia",
    }
    /// The name people read (HTML page, exports).
    fn display_name -> &'static str;
}

wire_enum! {
    /// The client SDK an enablement request is for.
    Sdk {
        /// The native SDK (desktop and mobile apps).
        Native = "native",
        /// The web SDK, running in a browser's WebRTC stack.
        Web = "web",
    }
}

wire_enum! {
    /// The Force mode an enablement request asks for (native `UDP_PROXY`/`TCP_PROXY`, web
    /// `startProxyServer(3)`/`startProxyServer(5)`).
    Mode {
        /// All media through a static relay over UDP (`UDP_PROXY`, `startProxyServer(3)`).
        ForceUdp = "force_udp",
        /// All media through a static relay over TURN/TLS on TCP 443 (`TCP_PROXY`,
        /// `startProxyServer(5)`).
        ForceTcp = "force_tcp",
    }
}

wire_enum! {
    /// The mode an allocation was used in, as usage is metered: Auto (a dynamic-pool relay) or
    /// one of the Force modes (a static-pool relay, UDP or TCP/TLS).
    UsageMode {
        /// Auto: a dynamic-pool relay, used only when direct paths fail; takes no lease.
        Auto = "auto",
        /// Force UDP on a static-pool relay.
        ForceUdp = "force_udp",
        /// Force TCP (TURN/TLS) on a static-pool relay.
        ForceTcp = "force_tcp",
    }
}

impl UsageMode {
    /// The Force mode, if this is one (Auto is not: it takes no lease).
    pub fn force(self) -> Option<Mode> {
        match self {
            UsageMode::Auto => None,
            UsageMode::ForceUdp => Some(Mode::ForceUdp),
            UsageMode::ForceTcp => Some(Mode::ForceTcp),
        }
    }
}

impl From<Mode> for UsageMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::ForceUdp => UsageMode::ForceUdp,
            Mode::ForceTcp => UsageMode::ForceTcp,
        }
    }
}

wire_enum! {
    /// Video quality tier. Each has a documented bitrate budget per proxy user
    /// ([`QualityTier::kbps_per_proxy_user`]) that drives the bandwidth estimate.
    QualityTier {
        /// Audio only: 100 kbit/s per proxy user.
        AudioOnly = "audio_only" => 100,
        /// 360p video: 1 000 kbit/s per proxy user.
        P360 = "360p" => 1_000,
        /// 480p video: 1 500 kbit/s per proxy user.
        P480 = "480p" => 1_500,
        /// 720p video: 3 000 kbit/s per proxy user.
        P720 = "720p" => 3_000,
        /// 1080p video: 5 000 kbit/s per proxy user.
        P1080 = "1080p" => 5_000,
        /// 2K and above: 10 000 kbit/s per proxy user.
        K2Plus = "2k_plus" => 10_000,
    }
    /// Relayed bandwidth budgeted per proxy user, in kbit/s, both directions together: the
    /// user's own stream up plus what it receives, with headroom for TURN/TLS overhead and
    /// retransmissions.
    ///
    /// | tier | kbit/s |
    /// |---|---|
    /// | audio_only | 100 |
    /// | 360p | 1 000 |
    /// | 480p | 1 500 |
    /// | 720p | 3 000 |
    /// | 1080p | 5 000 |
    /// | 2k_plus | 10 000 |
    fn kbps_per_proxy_user -> u64;
}

wire_enum! {
    /// Where an enablement request is in its lifecycle:
    /// submitted → approved | rejected(reason) → active → suspended | revoked.
    /// Approved, active and suspended requests hold their bandwidth reservation.
    RequestState {
        /// Filed by the owner, waiting for an operator's decision.
        Submitted = "submitted",
        /// Accepted by an operator; its bandwidth is reserved, not yet in service.
        Approved = "approved",
        /// Refused by an operator (the reason is kept on the request); reserves nothing.
        Rejected = "rejected",
        /// In service.
        Active = "active",
        /// Paused; keeps its bandwidth reservation.
        Suspended = "suspended",
        /// Ended for good; the reservation is released.
        Revoked = "revoked",
    }
}

impl RequestState {
    /// Whether a request in this state holds a capacity reservation in its region.
    pub fn reserves(self) -> bool {
        matches!(
            self,
            RequestState::Approved | RequestState::Active | RequestState::Suspended
        )
    }
}

wire_enum! {
    /// Whether an application's credentials are accepted.
    AppStatus {
        /// The application's credentials are accepted.
        Active = "active",
        /// The application's credentials are refused until an operator reactivates it.
        Suspended = "suspended",
    }
}

wire_enum! {
    /// Relay pool. Static relays are published in the allow-list table and serve the Force
    /// modes; dynamic relays serve Auto and are never published.
    Pool {
        /// Published relays with fixed addresses, serving the Force modes.
        Static = "static",
        /// Unpublished relays serving Auto; their addresses may change.
        Dynamic = "dynamic",
    }
}

wire_enum! {
    /// A relay listener's transport. `tls` is TURN over TLS on TCP (443 for Force TCP).
    Transport {
        /// TURN over UDP.
        Udp = "udp",
        /// TURN over plain TCP.
        Tcp = "tcp",
        /// TURN over TLS on TCP.
        Tls = "tls",
    }
}

impl Transport {
    /// Stream transports frame ChannelData with padding to 4 bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

wire_enum! {
    /// The role of an API key.
    Role {
        /// Runs the service: approves requests, manages relays and every application.
        Operator = "operator",
        /// Owns applications: files enablement requests and reads its own usage.
        Owner = "owner",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings_round_trip() {
        for r in Region::ALL {
            assert_eq!(Region::parse(r.as_str()), Some(*r));
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        assert_eq!(QualityTier::parse("2k_plus"), Some(QualityTier::K2Plus));
        assert_eq!(Mode::parse("force_udp"), Some(Mode::ForceUdp));
        assert_eq!(Region::parse("mars"), None);
    }

    #[test]
    fn tiers_grow() {
        let rates: Vec<u64> = QualityTier::ALL
            .iter()
            .map(|t| t.kbps_per_proxy_user())
            .collect();
        assert!(rates.windows(2).all(|w| w[0] < w[1]), "{rates:?}");
    }
}
