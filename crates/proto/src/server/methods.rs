//! The TURN methods: Allocate, Refresh, CreatePermission, ChannelBind (RFC 8656 §7–§12), and
//! the Send indication.

use super::*;

impl Server {
    /// RFC 8656 §7.2: Allocate.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn allocate(
        &mut self,
        msg: &Message<'_>,
        client: ClientAddr,
        now: Instant,
        reply: &ReplyAuth,
        existing: Option<usize>,
        username: &str,
        quota_key: &str,
    ) -> Result<Option<Vec<u8>>, Reject> {
        if let Some(slot) = existing {
            let alloc = self.slots[slot].as_ref().expect("indexed");
            // A retransmission of the Allocate that created it gets the success again.
            if alloc.transaction == msg.transaction_id() {
                return Ok(match alloc.pending {
                    Some(_) => None,
                    None => {
                        let remaining = alloc.expires.saturating_duration_since(now);
                        let pending = PendingAllocate {
                            reply: reply.clone(),
                            lifetime: remaining,
                            v6_refused: false,
                            tries: 0,
                            token: None,
                        };
                        Some(self.allocate_success(slot, &pending))
                    }
                });
            }
            return Err(reject(
                437,
                "Allocation Mismatch: 5-tuple already has an allocation",
            ));
        }
        if self.draining {
            return Err(reject(508, "Insufficient Capacity: server is draining"));
        }
        let admit = self.admission_for(username, client)?;
        let transport = msg
            .attribute::<RequestedTransport>()
            .map_err(|_| reject(400, "Bad Request: REQUESTED-TRANSPORT missing"))?;
        if transport.protocol() != RequestedTransport::UDP {
            return Err(reject(442, "Unsupported Transport Protocol"));
        }
        let has_token = msg.has_attribute(AttributeType::new(ATTR_RESERVATION_TOKEN));
        let even = msg.attribute::<EvenPort>().ok();
        let malformed = |t: u16| msg.has_attribute(AttributeType::new(t));
        if (even.is_none() && malformed(0x0018))
            || (msg.attribute::<RequestedAddressFamily>().is_err() && malformed(0x0017))
        {
            return Err(reject(
                400,
                "Bad Request: malformed EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
            ));
        }
        let requested = msg.attribute::<RequestedAddressFamily>().ok();
        let additional = msg.attribute::<AdditionalAddressFamily>().ok();
        if has_token && (even.is_some() || requested.is_some()) {
            return Err(reject(
                400,
                "Bad Request: RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
            ));
        }
        if requested.is_some() && additional.is_some() {
            return Err(reject(
                400,
                "Bad Request: REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together",
            ));
        }
        // §7.2 step 7: a RESERVATION-TOKEN names a port held by an earlier EVEN-PORT R=1.
        let reserved = match msg.attribute::<ReservationToken>() {
            Ok(t) => match self.ports.claim(t.token(), now) {
                Ok(port) => Some(port),
                Err(ClaimError::Expired) => {
                    return Err(reject(508, "Insufficient Capacity: reservation expired"))
                }
                Err(ClaimError::Unknown) => {
                    return Err(reject(
                        508,
                        "Insufficient Capacity: unknown reservation token",
                    ))
                }
            },
            Err(_) if has_token => {
                return Err(reject(400, "Bad Request: malformed RESERVATION-TOKEN"))
            }
            Err(_) => None,
        };
        let reserve_next = even.as_ref().is_some_and(|e| e.requested());
        let has_v4 = self.config.relay_ipv4.is_some();
        let has_v6 = self.config.relay_ipv6.is_some();
        let (v4, v6, v6_refused) = match (requested.map(|r| r.family()), additional) {
            (Some(AddressFamily::IPV6), _) if !has_v6 => {
                return Err(reject(440, "Address Family not Supported"))
            }
            (Some(AddressFamily::IPV6), _) => (false, true, false),
            (_, Some(a)) if a.family() != AddressFamily::IPV6 => {
                return Err(reject(
                    400,
                    "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be IPv6",
                ))
            }
            _ if !has_v4 => return Err(reject(440, "Address Family not Supported")),
            (_, Some(_)) => (true, has_v6, !has_v6),
            _ => (true, false, false),
        };
        let lifetime = self.desired_lifetime(msg.attribute::<Lifetime>().ok());
        if let Err(q) = self.ledger.try_acquire(quota_key) {
            if let Some(port) = reserved {
                self.ports.give(port);
            }
            return Err(match q {
                QuotaExceeded::User => reject(486, "Allocation Quota Reached"),
                QuotaExceeded::Total => reject(486, "Allocation Quota Reached: server is full"),
            });
        }
        let token = reserve_next.then(|| {
            let t = self.next_tid();
            u64::from_be_bytes(t[..8].try_into().expect("8 bytes"))
        });
        let until = now + RESERVATION_LIFETIME;
        let port = match (reserved, token) {
            (Some(port), _) => Some(port),
            (None, Some(token)) => self.ports.take_pair(token, until),
            (None, None) => self.take_port(even.is_some()),
        };
        let Some(port) = port else {
            self.ledger.release(quota_key);
            return Err(reject(508, "Insufficient Capacity: no relay port free"));
        };
        if token.is_some() {
            self.timers.push(until, RESERVATIONS, 0);
        }
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let alloc = Allocation {
            generation,
            client,
            username: username.to_owned(),
            quota_key: quota_key.to_owned(),
            transaction: msg.transaction_id(),
            port,
            v4,
            v6,
            expires: now + lifetime,
            pending: Some(PendingAllocate {
                reply: reply.clone(),
                lifetime,
                v6_refused,
                tries: 0,
                token,
            }),
            permissions: Permissions::default(),
            channels: Channels::default(),
            scheduled: None,
            mode: admit.as_ref().map(|a| a.mode),
            admitting: admit.is_some(),
            account: None,
            bytes: 0,
        };
        let (a4, a6) = alloc.relay_addrs(&self.config);
        self.slots[slot] = Some(alloc);
        self.by_client.insert(client, slot);
        self.by_port[(port - self.port_base) as usize] = Some(slot);
        let allocation = AllocationHandle { slot, generation };
        // Admission first (the relay socket is bound once admitted), else bind at once.
        self.commands.push_back(match admit {
            Some(request) => Command::Admit {
                allocation,
                request,
            },
            None => Command::BindRelay {
                allocation,
                v4: a4,
                v6: a6,
            },
        });
        // Expire the allocation even if the driver never reports the bind.
        self.schedule(slot);
        Ok(None)
    }

    /// The central check an Allocate with `username` from `client` needs, or a 403 when its
    /// app may not allocate here (see [`crate::admission`]).
    pub(super) fn admission_for(
        &self,
        username: &str,
        client: ClientAddr,
    ) -> Result<Option<AdmitRequest>, Reject> {
        let Some(pool) = self.config.admission else {
            return Ok(None);
        };
        let Some(app) = self.auth.app_of(username) else {
            return Ok(None); // the operator's static secret
        };
        let mode = admission::mode_of(pool, client.transport);
        admission::allows(self.access.get(app), mode).map_err(|why| reject(403, why))?;
        let (channel, user) = admission::channel_and_user(username);
        Ok(Some(AdmitRequest {
            app_id: app.to_owned(),
            mode,
            channel: channel.to_owned(),
            user: user.to_owned(),
        }))
    }

    /// RFC 8656 §7.2 step 8 / §7.3: the client's LIFETIME, at least the default, at most the max.
    pub(super) fn desired_lifetime(&self, requested: Option<Lifetime>) -> Duration {
        let l = self.config.lifetimes;
        match requested {
            Some(r) => Duration::from_secs(r.seconds() as u64)
                .clamp(l.allocation_default, l.allocation_max),
            None => l.allocation_default,
        }
    }

    pub(super) fn allocate_success(&self, slot: usize, pending: &PendingAllocate) -> Vec<u8> {
        let alloc = self.slots[slot].as_ref().expect("present");
        let tid = pending.reply.transaction;
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Success, ALLOCATE),
            tid,
            MessageWriteVec::new(),
        );
        let (v4, v6) = alloc.relay_addrs(&self.config);
        for a in [v4, v6].into_iter().flatten() {
            let _ = w.add_attribute(&XorRelayedAddress::new(a, tid));
        }
        if pending.v6_refused {
            if let Ok(e) = ErrorCode::new(440, "Address Family not Supported") {
                let _ = w.add_attribute(&AddressErrorCode::new(AddressFamily::IPV6, e));
            }
        }
        if let Some(token) = pending.token {
            let _ = w.add_attribute(&ReservationToken::new(token));
        }
        let _ = w.add_attribute(&Lifetime::new(pending.lifetime.as_secs() as u32));
        let _ = w.add_attribute(&XorMappedAddress::new(alloc.client.remote, tid));
        self.finish(w, &pending.reply)
    }

    /// RFC 8656 §7.3: Refresh; lifetime 0 deletes.
    pub(super) fn refresh(
        &mut self,
        msg: &Message<'_>,
        slot: usize,
        now: Instant,
        reply: &ReplyAuth,
    ) -> Result<Option<Vec<u8>>, Reject> {
        let alloc = self.slots[slot].as_mut().expect("indexed");
        if let Ok(r) = msg.attribute::<RequestedAddressFamily>() {
            let matches = match r.family() {
                AddressFamily::IPV4 => alloc.v4,
                AddressFamily::IPV6 => alloc.v6,
            };
            if !matches {
                return Err(reject(443, "Peer Address Family Mismatch"));
            }
        }
        let requested = msg.attribute::<Lifetime>().ok();
        let lifetime = if requested.as_ref().is_some_and(|l| l.seconds() == 0) {
            Duration::ZERO
        } else {
            self.desired_lifetime(requested)
        };
        let mut w = Message::builder_success(msg, MessageWriteVec::new());
        let _ = w.add_attribute(&Lifetime::new(lifetime.as_secs() as u32));
        let data = self.finish(w, reply);
        if lifetime.is_zero() {
            self.delete(slot, DeleteReason::Refreshed0);
        } else {
            let alloc = self.slots[slot].as_mut().expect("indexed");
            alloc.expires = now + lifetime;
            self.schedule(slot);
        }
        Ok(Some(data))
    }

    /// Reads every XOR-PEER-ADDRESS and checks family and policy (RFC 8656 §9.1, §10.2).
    pub(super) fn checked_peer(
        &self,
        alloc: &Allocation,
        peer: SocketAddr,
        need_port: bool,
    ) -> Result<(), Reject> {
        if !alloc.has_family(peer.ip()) {
            return Err(reject(443, "Peer Address Family Mismatch"));
        }
        let policy = &self.config.peer_policy;
        let ok = if need_port {
            policy.permits(peer.ip(), peer.port())
        } else {
            policy.permits_ip(peer.ip())
        };
        if !ok {
            return Err(reject(403, "Forbidden: peer address not allowed"));
        }
        Ok(())
    }

    /// RFC 8656 §9.2: the peers a CreatePermission lists, at least one.
    pub(super) fn permission_peers(msg: &Message<'_>) -> Result<Vec<IpAddr>, Reject> {
        let tid = msg.transaction_id();
        let mut peers: Vec<IpAddr> = Vec::new();
        let mut n = 0;
        while let Ok(p) = msg.nth_attribute::<XorPeerAddress>(n) {
            peers.push(p.addr(tid).ip());
            n += 1;
        }
        if peers.is_empty() {
            return Err(reject(400, "Bad Request: XOR-PEER-ADDRESS missing"));
        }
        Ok(peers)
    }

    /// RFC 8656 §9.2: CreatePermission on allocation `slot` — all of `peers` or none. The
    /// success carries no attribute (the caller answers).
    pub(super) fn create_permission(
        &mut self,
        slot: usize,
        peers: Vec<IpAddr>,
        now: Instant,
    ) -> Result<(), Reject> {
        let alloc = self.slots[slot].as_ref().expect("indexed");
        for ip in &peers {
            self.checked_peer(alloc, SocketAddr::new(*ip, 0), false)?;
        }
        if !alloc.permissions.fits(&peers) {
            return Err(reject(508, "Insufficient Capacity: too many permissions"));
        }
        let until = now + self.config.lifetimes.permission;
        let alloc = self.slots[slot].as_mut().expect("indexed");
        for &ip in &peers {
            alloc.permissions.install(ip, until);
        }
        self.schedule(slot);
        for ip in peers {
            self.channels_usable(slot, ip, now);
        }
        Ok(())
    }

    /// RFC 8656 §11.2: the channel number (in range) and peer a ChannelBind names.
    pub(super) fn channel_to_bind(msg: &Message<'_>) -> Result<(u16, SocketAddr), Reject> {
        let number = msg
            .attribute::<ChannelNumber>()
            .map_err(|_| reject(400, "Bad Request: CHANNEL-NUMBER missing"))?
            .channel();
        let peer = msg
            .attribute::<XorPeerAddress>()
            .map_err(|_| reject(400, "Bad Request: XOR-PEER-ADDRESS missing"))?
            .addr(msg.transaction_id());
        if !(channel::MIN_CHANNEL..=channel::MAX_CHANNEL).contains(&number) {
            return Err(reject(400, "Bad Request: channel number out of range"));
        }
        Ok((number, peer))
    }

    /// RFC 8656 §11.2: ChannelBind of `number` to `peer` on allocation `slot`; also installs
    /// or refreshes the peer's permission. The success carries no attribute (the caller
    /// answers).
    pub(super) fn channel_bind(
        &mut self,
        slot: usize,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), Reject> {
        let alloc = self.slots[slot].as_ref().expect("indexed");
        // §11.2: a number stays with its peer, and a peer with its number, while bound and for
        // the 5 minutes after expiry.
        if alloc
            .channels
            .by_number(number)
            .is_some_and(|c| c.peer != peer)
        {
            return Err(reject(400, "Bad Request: channel bound to another peer"));
        }
        if alloc
            .channels
            .by_peer(peer)
            .is_some_and(|c| c.number != number)
        {
            return Err(reject(400, "Bad Request: peer bound to another channel"));
        }
        if !alloc.permissions.fits(&[peer.ip()]) {
            return Err(reject(508, "Insufficient Capacity: too many permissions"));
        }
        self.checked_peer(alloc, peer, true)?;
        let l = self.config.lifetimes;
        let alloc = self.slots[slot].as_mut().expect("indexed");
        let expires = now + l.channel;
        let bound = alloc.channels.bind(ChannelBinding {
            number,
            peer,
            expires,
            reserved_until: expires + l.channel_cooldown,
        });
        if !bound {
            return Err(reject(508, "Insufficient Capacity: too many channels"));
        }
        alloc.permissions.install(peer.ip(), now + l.permission);
        self.schedule(slot);
        self.channels_usable(slot, peer.ip(), now);
        Ok(())
    }

    /// RFC 8656 §11.4: a Send indication is relayed if a permission exists; otherwise dropped.
    pub(super) fn send_indication(
        &mut self,
        msg: &Message<'_>,
        client: ClientAddr,
        now: Instant,
    ) -> Option<Forward> {
        let unknown = msg.iter_attributes().any(|(_, a)| {
            let t = a.get_type();
            t.comprehension_required() && !KNOWN_REQUIRED.contains(&t.value())
        });
        if unknown {
            return None;
        }
        let slot = *self.by_client.get(&client)?;
        let alloc = self.slots[slot].as_ref()?;
        if alloc.pending.is_some() {
            return None;
        }
        let peer = msg
            .attribute::<XorPeerAddress>()
            .ok()?
            .addr(msg.transaction_id());
        let (offset, raw) = msg.raw_attribute_and_offset(AttributeType::new(0x0013))?;
        if !alloc.permitted(peer.ip(), now)
            || !self.config.peer_policy.permits(peer.ip(), peer.port())
        {
            return None;
        }
        let relay = relay_for(alloc, &self.config, peer)?;
        let start = offset + 4;
        if let Some(a) = self.slots[slot].as_mut() {
            a.bytes += raw.value.len() as u64;
        }
        Some(Forward {
            relay,
            peer: PeerAddr(peer),
            range: start..start + raw.value.len(),
        })
    }
}
