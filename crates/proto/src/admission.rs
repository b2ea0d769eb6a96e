//! Admission by a control plane: which apps may allocate on this relay, in which mode, and
//! the asynchronous central check (leases) a Force-mode allocation waits for.
//!
//! A relay governed by a control plane serves one pool of one region
//! ([`crate::ServerConfig::admission`]). Its driver keeps the [`Access`] table current from
//! the control plane's sync ([`crate::Server::set_access`]). For every Allocate made with an
//! app's credential the server then decides, synchronously:
//!
//! - the app is absent from the table (deleted, suspended, unknown): 403;
//! - a static-pool relay (Force modes): the mode is the client's transport — UDP is Force
//!   UDP, TCP and TLS are Force TCP — and the app must be enabled for it here, else 403;
//! - a dynamic-pool relay (Auto): any app in the table.
//!
//! and then asks the driver ([`crate::Command::Admit`]) for the central check — the channel's
//! proxy users and the app's concurrent channels are counted across every relay — and answers
//! the Allocate when the driver reports the [`Verdict`] ([`crate::Server::handle_admission`]).
//! Credentials without an app (the operator's static secret) skip admission.

use std::collections::HashMap;

/// The pool a relay serves (the API's [`cloudproxy_api::Pool`]): static relays are
/// published and serve the Force modes, dynamic ones never are and serve Auto.
pub use cloudproxy_api::Pool;

/// The mode an allocation is used in, from the relay's pool and the client's transport: the
/// API's [`cloudproxy_api::UsageMode`] (Auto, Force UDP, Force TCP), which usage is metered in.
pub use cloudproxy_api::UsageMode as Mode;

/// What an active app may do on this relay (its region).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppAccess {
    /// Whether Force UDP allocations (UDP on a static relay) are admitted.
    pub force_udp: bool,
    /// Whether Force TCP allocations (TURN/TLS on a static relay) are admitted.
    pub force_tcp: bool,
}

/// Active apps by App ID. An app that is not here is refused.
pub type Access = HashMap<String, AppAccess>;

/// The central check a Force-mode (or metered Auto) allocation waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitRequest {
    /// The application whose token asks.
    pub app_id: String,
    /// The mode the allocation would be used in.
    pub mode: Mode,
    /// The channel and user from the credential (`expiry:app:key:channel:user`); empty when
    /// the credential does not name them.
    pub channel: String,
    /// The user id from the credential; empty when it names none.
    pub user: String,
}

/// The driver's answer to a [`crate::Command::Admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead; `account` identifies the allocation in usage reports and in
    /// [`crate::Event::AccountClosed`].
    Granted {
        /// The driver's id for the allocation's lease and usage account.
        account: u64,
    },
    /// Answer the Allocate with this error (403, 486, …).
    Refused {
        /// The STUN error code to answer with.
        code: u16,
        /// The reason phrase sent with it, e.g. "Force UDP not enabled for this app".
        reason: String,
    },
}

/// The channel and user named by a credential `expiry:app:key[:channel[:user]]`.
pub fn channel_and_user(username: &str) -> (&str, &str) {
    let mut parts = username.splitn(5, ':').skip(3);
    let channel = parts.next().unwrap_or_default();
    let user = parts.next().unwrap_or_default();
    (channel, user)
}

/// The mode of a client on a relay of `pool`.
pub fn mode_of(pool: Pool, transport: crate::Transport) -> Mode {
    match (pool, transport) {
        (Pool::Dynamic, _) => Mode::Auto,
        (Pool::Static, crate::Transport::Udp) => Mode::ForceUdp,
        (Pool::Static, _) => Mode::ForceTcp,
    }
}

/// The 403 reason for a Force UDP allocation of an app without an active enablement for it.
pub const NOT_ENABLED_UDP: &str = "Forbidden: app is not enabled for Force UDP in this region; \
    an operator must approve an enablement request";
/// The same for Force TCP.
pub const NOT_ENABLED_TCP: &str = "Forbidden: app is not enabled for Force TCP in this region; \
    an operator must approve an enablement request";

/// Whether `access` lets an allocation in `mode` stay or start.
pub fn allows(access: Option<&AppAccess>, mode: Mode) -> Result<(), &'static str> {
    let Some(a) = access else {
        return Err("Forbidden: app is not active on this relay");
    };
    match mode {
        Mode::Auto => Ok(()),
        Mode::ForceUdp if a.force_udp => Ok(()),
        Mode::ForceTcp if a.force_tcp => Ok(()),
        // The hint names the admin step that fixes it (an approved request is active).
        Mode::ForceUdp => Err(NOT_ENABLED_UDP),
        Mode::ForceTcp => Err(NOT_ENABLED_TCP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_parts() {
        assert_eq!(
            channel_and_user("1:app:k1:room-7:alice"),
            ("room-7", "alice")
        );
        assert_eq!(channel_and_user("1:app:k1:room:a:b"), ("room", "a:b"));
        assert_eq!(channel_and_user("1:app:k1"), ("", ""));
        assert_eq!(channel_and_user("1:app"), ("", ""));
    }

    #[test]
    fn modes_and_access() {
        use crate::Transport::*;
        assert_eq!(mode_of(Pool::Static, Udp), Mode::ForceUdp);
        assert_eq!(mode_of(Pool::Static, Tls), Mode::ForceTcp);
        assert_eq!(mode_of(Pool::Static, Tcp), Mode::ForceTcp);
        assert_eq!(mode_of(Pool::Dynamic, Udp), Mode::Auto);
        let tcp_only = AppAccess {
            force_udp: false,
            force_tcp: true,
        };
        assert!(allows(Some(&tcp_only), Mode::ForceTcp).is_ok());
        assert!(allows(Some(&tcp_only), Mode::Auto).is_ok());
        assert!(allows(Some(&tcp_only), Mode::ForceUdp)
            .unwrap_err()
            .contains("Force UDP"));
        assert!(allows(None, Mode::Auto).is_err());
    }
}
