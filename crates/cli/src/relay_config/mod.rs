//! `cloudproxy relay` configuration: an optional TOML file, then flags on top, mapped to the
//! library's plain [`RelayConfig`].
//!
//! Every key is optional; a missing key keeps the default of [`RelayConfig::default`] /
//! [`cloudproxy_proto::ServerConfig::default`]. Unknown keys are errors (a typo must not
//! silently fall back to a default). Errors name the file and the key, e.g.
//! `config file relay.toml: peers.allow[1]: "10.0.0.0/33": not a CIDR network ...`.
//! List-valued flags (`--udp`, `--allow-peer`, ...) replace the file's list when given.
//! `relay.example.toml` next to this crate's manifest documents every key.
//!
//! Here: reading the file and the flags in order. `flags` holds the command line,
//! `file` the TOML sections, `control` the control-plane link (one struct for its flags and its
//! `[control]` section), `values` the parsers every source shares, `checks` what must hold of
//! the result.

mod checks;
mod control;
mod file;
mod flags;
mod values;

use std::path::Path;

use anyhow::{anyhow, Context as _};
use cloudproxy_relay::RelayConfig;

use self::checks::validate;
pub(crate) use self::checks::warnings;
use self::file::{apply_file, FileConfig};
use self::flags::apply_flags;
pub(crate) use self::flags::RelayArgs;
pub(crate) use self::values::{relay_ip_from_listeners, set_relay_ips};

/// Reads the config file (if any), applies the flags on top and checks the result.
pub(crate) fn relay_config(file: Option<&Path>, flags: &RelayArgs) -> anyhow::Result<RelayConfig> {
    let mut config = RelayConfig::default();
    let mut relay_ip_given = !flags.relay_ip.is_empty();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config file {}: cannot read", path.display()))?;
        let parsed: FileConfig = toml::from_str(&text)
            .map_err(|e| anyhow!("config file {}: {}", path.display(), e.to_string().trim()))?;
        relay_ip_given |= parsed.names_relay_ip();
        apply_file(&mut config, parsed, path)
            .map_err(|e| anyhow!("config file {}: {e:#}", path.display()))?;
    }
    apply_flags(&mut config, flags)?;
    if !relay_ip_given {
        relay_ip_from_listeners(&mut config);
    }
    validate(&config)?;
    Ok(config)
}

#[cfg(test)]
mod tests;
