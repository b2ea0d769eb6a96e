//! Flag values: control-plane enums by their wire spellings, listeners, days.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::net::SocketAddr;

use clap::builder::{PossibleValue, TypedValueParser};
use cloudproxy_api::{Transport, Wire};

/// `udp:203.0.113.10:3478`, `tls:[2001:db8::1]:443`
pub(super) fn parse_listener(s: &str) -> Result<(Transport, SocketAddr), String> {
    let (transport, addr) = s
        .split_once(':')
        .ok_or("expected TRANSPORT:IP:PORT, e.g. udp:203.0.113.10:3478")?;
    let transport = Transport::parse(transport).ok_or_else(|| {
        format!(
            "unknown transport '{transport}'; use {}",
            spellings::<Transport>()
        )
    })?;
    let addr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not IP:PORT (IPv6 as [ADDR]:PORT)"))?;
    Ok((transport, addr))
}

/// `--effective-at`: `YYYY-MM-DD` (00:00 UTC that day) or Unix seconds.
pub(super) fn parse_when(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<i64>() {
        return Ok(t);
    }
    cloudproxy_control::time::day_start(s)
        .ok_or_else(|| "expected YYYY-MM-DD (UTC) or Unix seconds".into())
}

pub(super) fn parse_day(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let ok = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if ok {
        Ok(s.to_owned())
    } else {
        Err("expected YYYY-MM-DD".into())
    }
}

fn spellings<T: Wire>() -> String {
    T::ALL
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a control-plane enum by its wire spelling, or the same with hyphens
/// (`force-tcp`), and lists the spellings in `--help`.
#[derive(Clone)]
pub(crate) struct WireParser<T>(PhantomData<T>);

impl<T> WireParser<T> {
    pub(crate) fn new() -> Self {
        WireParser(PhantomData)
    }
}

impl<T: Wire + Send + Sync> TypedValueParser for WireParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let s = value.to_string_lossy();
        T::parse(&s.replace('-', "_")).ok_or_else(|| {
            let arg = arg.map_or_else(|| "value".to_owned(), |a| a.to_string());
            cmd.clone().error(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "invalid value '{s}' for '{arg}': use one of {}",
                    spellings::<T>()
                ),
            )
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            T::ALL.iter().map(|v| PossibleValue::new(v.as_str())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse() {
        assert_eq!(
            parse_listener("udp:203.0.113.10:3478").unwrap(),
            (Transport::Udp, "203.0.113.10:3478".parse().unwrap())
        );
        assert_eq!(
            parse_listener("tls:[2001:db8::1]:443").unwrap(),
            (Transport::Tls, "[2001:db8::1]:443".parse().unwrap())
        );
        assert!(parse_listener("quic:1.2.3.4:1")
            .unwrap_err()
            .contains("udp, tcp, tls"));
        assert!(parse_listener("udp:1.2.3.4").is_err());
        assert!(parse_listener("1.2.3.4:5").is_err());
    }

    #[test]
    fn days() {
        assert!(parse_day("2026-11-29").is_ok());
        assert!(parse_day("2026-1-29").is_err());
        assert!(parse_day("29/11/2026").is_err());
    }
}
