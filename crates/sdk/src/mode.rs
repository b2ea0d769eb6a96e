//! The cloud-proxy modes, with the vendor API's codes.

use std::fmt;

/// How the client reaches the media network (vendor API `setCloudProxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudProxyType {
    /// Auto (native `NONE_PROXY` = 0): direct UDP, falling back on its own to the proxy over
    /// TLS on TCP 443, raced Happy-Eyeballs style.
    #[default]
    None = 0,
    /// Force UDP (native `UDP_PROXY` = 1, web `startProxyServer(3)`): always through the
    /// published proxies, over UDP.
    UdpProxy = 1,
    /// Force TCP (native `TCP_PROXY` = 2, web `startProxyServer(5)`): always through the
    /// published proxies, over TLS on TCP 443.
    TcpProxy = 2,
}

/// A code that is not one of the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown cloud proxy code {0} (native: 0, 1, 2; web: 3, 5)")]
pub struct UnknownProxyCode(pub i32);

impl CloudProxyType {
    /// From the native API's value: 0, 1 or 2.
    pub fn from_native(code: i32) -> Result<Self, UnknownProxyCode> {
        match code {
            0 => Ok(Self::None),
            1 => Ok(Self::UdpProxy),
            2 => Ok(Self::TcpProxy),
            other => Err(UnknownProxyCode(other)),
        }
    }

    /// From the web API's `startProxyServer` value: 3 (Force UDP) or 5 (Force TCP).
    pub fn from_web(code: i32) -> Result<Self, UnknownProxyCode> {
        match code {
            3 => Ok(Self::UdpProxy),
            5 => Ok(Self::TcpProxy),
            other => Err(UnknownProxyCode(other)),
        }
    }

    /// Whether this is a Force mode (UDP or TCP), which sends nothing to any address but
    /// the published proxies.
    pub fn is_forced(self) -> bool {
        self != Self::None
    }

    /// The mode's name on the command line and in JSON: `auto`, `udp` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "auto",
            Self::UdpProxy => "udp",
            Self::TcpProxy => "tcp",
        }
    }
}

impl fmt::Display for CloudProxyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CloudProxyType {
    type Err = String;

    /// `auto`/`none`/`0`, `udp`/`1`/`3`, `tcp`/`2`/`5`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "none" | "0" => Ok(Self::None),
            "udp" | "1" | "3" => Ok(Self::UdpProxy),
            "tcp" | "2" | "5" => Ok(Self::TcpProxy),
            _ => Err(format!(
                "unknown mode {s:?}: expected auto, udp or tcp (or the codes 0, 1, 2, 3, 5)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_and_web_codes() {
        assert_eq!(CloudProxyType::from_native(0), Ok(CloudProxyType::None));
        assert_eq!(CloudProxyType::from_native(2), Ok(CloudProxyType::TcpProxy));
        assert_eq!(CloudProxyType::from_web(3), Ok(CloudProxyType::UdpProxy));
        assert_eq!(CloudProxyType::from_web(5), Ok(CloudProxyType::TcpProxy));
        assert_eq!(CloudProxyType::from_web(4), Err(UnknownProxyCode(4)));
        assert_eq!(CloudProxyType::from_native(3), Err(UnknownProxyCode(3)));
        assert_eq!("udp".parse(), Ok(CloudProxyType::UdpProxy));
        assert_eq!("5".parse(), Ok(CloudProxyType::TcpProxy));
        assert!("tls".parse::<CloudProxyType>().is_err());
    }
}
