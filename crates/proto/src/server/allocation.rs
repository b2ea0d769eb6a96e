//! One allocation's record (RFC 8656 §2.2: its 5-tuple, relayed addresses, lifetime,
//! permissions and channels, and what admission and metering add), the Allocate waiting for
//! its relay sockets, and what a channel event says about the allocation that owns it.

use super::*;

/// What is needed to answer an Allocate once its relay sockets are bound.
#[derive(Debug)]
pub(super) struct PendingAllocate {
    pub(super) reply: ReplyAuth,
    pub(super) lifetime: Duration,
    /// IPv6 was asked for in ADDITIONAL-ADDRESS-FAMILY but is unavailable (RFC 8656 §7.2).
    pub(super) v6_refused: bool,
    pub(super) tries: u8,
    /// RESERVATION-TOKEN for the port after this one (EVEN-PORT R=1).
    pub(super) token: Option<u64>,
}

#[derive(Debug)]
pub(super) struct Allocation {
    pub(super) generation: u32,
    pub(super) client: ClientAddr,
    pub(super) username: String,
    pub(super) quota_key: String,
    /// Transaction id of the Allocate that created it, to answer retransmissions (§7.2).
    pub(super) transaction: TransactionId,
    pub(super) port: u16,
    pub(super) v4: bool,
    pub(super) v6: bool,
    pub(super) expires: Instant,
    pub(super) pending: Option<PendingAllocate>,
    pub(super) permissions: Permissions,
    pub(super) channels: Channels,
    /// The deadline currently in the timer queue for this allocation.
    pub(super) scheduled: Option<Instant>,
    /// The mode it was admitted in (`None`: no admission, e.g. the static secret).
    pub(super) mode: Option<Mode>,
    /// Waiting for [`Server::handle_admission`].
    pub(super) admitting: bool,
    /// Set once admitted.
    pub(super) account: Option<u64>,
    /// Relayed bytes (both directions) since the last [`Server::drain_usage`].
    pub(super) bytes: u64,
}

/// The allocation side of [`Event::ChannelUsable`] and [`Event::ChannelEnded`].
#[derive(Debug, Clone, Copy)]
pub(super) struct ChannelOwner {
    pub(super) client: ClientAddr,
    pub(super) account: Option<u64>,
    pub(super) v4: Option<SocketAddr>,
    pub(super) v6: Option<SocketAddr>,
}

impl ChannelOwner {
    pub(super) fn relay(&self, peer: SocketAddr) -> Option<RelayAddr> {
        match peer {
            SocketAddr::V4(_) => self.v4,
            SocketAddr::V6(_) => self.v6,
        }
        .map(RelayAddr)
    }

    /// The binding as the channel events name it (none when the peer's family has no relayed
    /// address).
    fn bound(&self, b: &ChannelBinding) -> Option<BoundChannel> {
        Some(BoundChannel {
            client: self.client,
            relay: self.relay(b.peer)?,
            peer: PeerAddr(b.peer),
            number: b.number,
        })
    }

    /// The binding relays until `until`.
    pub(super) fn usable(&self, b: &ChannelBinding, until: Instant) -> Option<Event> {
        let channel = self.bound(b)?;
        Some(Event::ChannelUsable {
            channel,
            until,
            account: self.account,
        })
    }

    pub(super) fn ended(&self, b: &ChannelBinding) -> Option<Event> {
        let channel = self.bound(b)?;
        Some(Event::ChannelEnded {
            channel,
            account: self.account,
        })
    }
}

impl Allocation {
    pub(super) fn relay_addrs(
        &self,
        cfg: &ServerConfig,
    ) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let v4 = self
            .v4
            .then(|| {
                cfg.relay_ipv4
                    .map(|ip| SocketAddr::new(ip.into(), self.port))
            })
            .flatten();
        let v6 = self
            .v6
            .then(|| {
                cfg.relay_ipv6
                    .map(|ip| SocketAddr::new(ip.into(), self.port))
            })
            .flatten();
        (v4, v6)
    }

    /// What a channel event says about this allocation (its relayed addresses, client and
    /// account), copied out so events can be made while its tables are borrowed.
    pub(super) fn channel_owner(&self, cfg: &ServerConfig) -> ChannelOwner {
        let (v4, v6) = self.relay_addrs(cfg);
        ChannelOwner {
            client: self.client,
            account: self.account,
            v4,
            v6,
        }
    }

    pub(super) fn has_family(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        }
    }

    pub(super) fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.allows(ip, now)
    }
}

/// The relayed address of `alloc` in `peer`'s family, if it has one.
pub(super) fn relay_for(
    alloc: &Allocation,
    cfg: &ServerConfig,
    peer: SocketAddr,
) -> Option<RelayAddr> {
    let (v4, v6) = alloc.relay_addrs(cfg);
    match peer {
        SocketAddr::V4(_) => v4,
        SocketAddr::V6(_) => v6,
    }
    .map(RelayAddr)
}
