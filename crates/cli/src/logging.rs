//! Logging setup: tracing-subscriber with an `EnvFilter`, text or JSON lines on stderr
//! (stdout carries the command's own output).

use std::io::IsTerminal as _;

use anyhow::{anyhow, Context as _};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// stun-types and turn-types log a warning for every malformed packet; at that level anyone
/// could flood our logs by sending garbage. These come first, so a filter that names those
/// targets itself (e.g. `RUST_LOG=stun_types=debug` while debugging) still wins.
const QUIET_CODEC_CRATES: &str = "stun_types=error,turn_types=error";

/// The filter: `RUST_LOG` if set and non-empty, else `level`, after [`QUIET_CODEC_CRATES`].
///
/// Unlike plain `EnvFilter` syntax, a directive without `=` must be a level: `EnvFilter` would
/// take a typo such as `inof` as a target name and silently log nothing else.
pub(crate) fn filter(level: &str, rust_log: Option<&str>) -> anyhow::Result<EnvFilter> {
    let (spec, source) = match rust_log.filter(|s| !s.trim().is_empty()) {
        Some(s) => (s, "RUST_LOG"),
        None => (level, "--log-level"),
    };
    let hint = || {
        format!(
            "{source} {spec:?}: not a log filter (e.g. info, debug, cloudproxy_relay=debug,warn)"
        )
    };
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && directive.parse::<LevelFilter>().is_err() {
            return Err(anyhow!("{}: {directive:?} is not a level", hint()));
        }
    }
    EnvFilter::builder()
        .with_default_directive(LevelFilter::ERROR.into())
        .parse(format!("{QUIET_CODEC_CRATES},{spec}"))
        .with_context(hint)
}

/// Installs the global subscriber. Call once, before anything logs.
pub(crate) fn init(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(level, rust_log.as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_crates_are_quiet_by_default() {
        let f = filter("debug", None).unwrap().to_string();
        assert!(f.contains("stun_types=error"), "{f}");
        assert!(f.contains("turn_types=error"), "{f}");
        assert!(f.contains("debug"), "{f}");
    }

    #[test]
    fn rust_log_overrides_the_level_and_can_name_codec_crates() {
        let f = filter("info", Some("warn,stun_types=debug"))
            .unwrap()
            .to_string();
        assert!(f.contains("stun_types=debug"), "{f}");
        assert!(!f.contains("stun_types=error"), "{f}");
        assert!(f.contains("turn_types=error"), "{f}");
        assert!(!f.contains("info"), "{f}");
        // Empty RUST_LOG is ignored.
        let f = filter("info", Some(" ")).unwrap().to_string();
        assert!(f.contains("info"), "{f}");
    }

    #[test]
    fn bad_level_is_an_error_naming_its_source() {
        let e = filter("loud", None).unwrap_err();
        assert!(format!("{e:#}").contains("--log-level \"loud\""), "{e:#}");
        let e = filter("info", Some("x=loud")).unwrap_err();
        assert!(format!("{e:#}").contains("RUST_LOG"), "{e:#}");
        let e = filter("info", Some("inof")).unwrap_err();
        assert!(
            format!("{e:#}").contains("\"inof\" is not a level"),
            "{e:#}"
        );
        assert!(filter("info", Some("cloudproxy_relay=debug,WARN")).is_ok());
    }
}
