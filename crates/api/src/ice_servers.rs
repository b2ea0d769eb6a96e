//! `POST /v1/ice-servers`: a browser's `RTCConfiguration` for a mode and a region (the
//! control plane's `api/ice_servers.rs` serves it and documents the rules).

use serde::{Deserialize, Serialize};

use crate::Region;

/// The client-side connection mode, as the SDKs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "ModeSpelling", rename_all = "snake_case")]
pub enum ProxyMode {
    /// Direct first, a dynamic proxy over TLS 443 as the fallback (web `0`).
    Auto,
    /// Force UDP: only published relays, TURN over UDP (web `startProxyServer(3)`).
    Udp,
    /// Force TCP: only published relays, TURN over TLS (web `startProxyServer(5)`).
    Tcp,
}

/// What a request may say for a mode: a name or the web SDK's number.
#[derive(Deserialize)]
#[serde(untagged)]
enum ModeSpelling {
    Number(i64),
    Name(String),
    /// Anything else (null, a float, an object), refused with the same message.
    Other(serde::de::IgnoredAny),
}

impl TryFrom<ModeSpelling> for ProxyMode {
    type Error = String;

    fn try_from(m: ModeSpelling) -> Result<Self, String> {
        match m {
            ModeSpelling::Number(0) => Ok(ProxyMode::Auto),
            ModeSpelling::Number(3) => Ok(ProxyMode::Udp),
            ModeSpelling::Number(5) => Ok(ProxyMode::Tcp),
            ModeSpelling::Name(n) if n == "auto" => Ok(ProxyMode::Auto),
            ModeSpelling::Name(n) if n == "udp" => Ok(ProxyMode::Udp),
            ModeSpelling::Name(n) if n == "tcp" => Ok(ProxyMode::Tcp),
            _ => Err("must be \"auto\", \"udp\" or \"tcp\" (or 0, 3 or 5)".into()),
        }
    }
}

/// `POST /v1/ice-servers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IceServersRequest {
    /// `auto`, `udp` or `tcp`; `0`, `3` and `5` are accepted too.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "tcp"))]
    pub mode: ProxyMode,
    /// The region whose relays the credentials are for.
    pub region: Region,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceServer {
    /// TURN URIs of the region's relays for the requested mode (`turn:` and/or `turns:`).
    #[cfg_attr(
        feature = "openapi",
        schema(example = json!(["turns:203.0.113.10:443?transport=tcp"]))
    )]
    pub urls: Vec<String>,
    /// The token's TURN username (`<expiry>:<app>:<key>:<channel>:<uid>`).
    pub username: String,
    /// The token's TURN password.
    pub credential: String,
}

/// An `RTCConfiguration` a page passes to `new RTCPeerConnection(...)` as it is (the extra
/// members are ignored there).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IceServersResponse {
    /// The relays to use, with their credentials.
    pub ice_servers: Vec<IceServer>,
    /// `all` for Auto, `relay` for the Force modes.
    #[cfg_attr(feature = "openapi", schema(example = "relay"))]
    pub ice_transport_policy: String,
    /// The mode the answer was made for.
    pub mode: ProxyMode,
    /// The region the answer was made for.
    pub region: Region,
    /// When the credentials stop working (Unix seconds): the token's expiry.
    pub expires_at: u64,
}
