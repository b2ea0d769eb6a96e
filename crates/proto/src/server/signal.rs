//! CLOUDPROXY-SIGNAL: a Force-UDP client's in-band, read-only request to the control plane
//! through the relay, answered by the driver.

use super::*;

/// CLOUDPROXY-SIGNAL (a vendor method, not IANA-registered): a Force-UDP client's in-band
/// request to the control plane through the relay's UDP port. The request carries
/// [`ATTR_SIGNAL_PATH`] (a read-only API path, e.g. `/v1/allowlist/japan?format=csv`) and the
/// client's long-term credential (the 401/nonce exchange first, so a spoofed source gets
/// nothing); the success response carries the body in DATA, an error response the HTTP status
/// as ERROR-CODE.
pub const SIGNAL: Method = Method::new(0xFC1);
/// SIGNAL-PATH: comprehension-optional, UTF-8, at most [`MAX_SIGNAL_PATH`] bytes.
pub const ATTR_SIGNAL_PATH: u16 = 0xC0F1;
/// Longest SIGNAL-PATH accepted.
pub const MAX_SIGNAL_PATH: usize = 256;
/// Largest body answered over UDP: a response stays under a 1280-byte IPv6 minimum MTU.
pub const MAX_SIGNAL_BODY: usize = 1100;
/// Signaling requests waiting for the driver at once; more get 508.
pub(super) const MAX_PENDING_SIGNALS: usize = 256;
/// A signaling request the driver did not answer in this time is forgotten.
pub(super) const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Identifies a signaling request across the driver's round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalHandle(pub(super) u64);

#[derive(Debug)]
pub(super) struct PendingSignal {
    pub(super) id: u64,
    pub(super) client: ClientAddr,
    pub(super) reply: ReplyAuth,
    pub(super) at: Instant,
}

impl Server {
    /// An authenticated CLOUDPROXY-SIGNAL request: hand its path to the driver.
    pub(super) fn signal(
        &mut self,
        msg: &Message<'_>,
        client: ClientAddr,
        reply: ReplyAuth,
        now: Instant,
    ) {
        let path = msg
            .raw_attribute(AttributeType::new(ATTR_SIGNAL_PATH))
            .and_then(|a| std::str::from_utf8(&a.value).ok().map(str::to_owned));
        let Some(path) = path.filter(|p| p.starts_with('/') && p.len() <= MAX_SIGNAL_PATH) else {
            self.respond_error(
                client,
                &reply,
                400,
                "Bad Request: SIGNAL-PATH missing or invalid",
            );
            return;
        };
        self.signals
            .retain(|s| now.saturating_duration_since(s.at) < SIGNAL_TIMEOUT);
        if self.signals.len() >= MAX_PENDING_SIGNALS {
            self.respond_error(client, &reply, 508, "Insufficient Capacity: signaling busy");
            return;
        }
        let id = self.next_signal;
        self.next_signal += 1;
        self.signals.push(PendingSignal {
            id,
            client,
            reply,
            at: now,
        });
        self.commands.push_back(Command::Signal {
            request: SignalHandle(id),
            path,
        });
    }

    /// The outcome of a [`Command::Signal`]: an HTTP status and body. 2xx answers with the
    /// body in DATA (413 when it exceeds [`MAX_SIGNAL_BODY`] on UDP); any other status is the
    /// ERROR-CODE, with `body` as the reason phrase. Unknown or expired handles are ignored.
    pub fn handle_signal_response(&mut self, request: SignalHandle, status: u16, body: &[u8]) {
        let Some(i) = self.signals.iter().position(|s| s.id == request.0) else {
            return;
        };
        let p = self.signals.swap_remove(i);
        if !(200..300).contains(&status) {
            let code = if (300..700).contains(&status) {
                status
            } else {
                500
            };
            let reason = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            self.respond_error(p.client, &p.reply, code, &reason);
            return;
        }
        if body.len() > MAX_SIGNAL_BODY && !p.client.transport.is_stream() {
            self.respond_error(
                p.client,
                &p.reply,
                413,
                "Payload Too Large: fetch it over the TLS listener",
            );
            return;
        }
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Success, SIGNAL),
            p.reply.transaction,
            MessageWriteVec::new(),
        );
        let _ = w.add_attribute(&RawAttribute::new(AttributeType::new(0x0013), body));
        let data = self.finish(w, &p.reply);
        self.transmits.push_back(Transmit { to: p.client, data });
    }
}
