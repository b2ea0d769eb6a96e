//! Building and sending responses (control path: a Vec per response is fine).

use super::*;

impl Server {
    pub(super) fn error_response(&self, reply: &ReplyAuth, code: u16, reason: &str) -> Vec<u8> {
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Error, reply.method),
            reply.transaction,
            MessageWriteVec::new(),
        );
        let _ = w.add_attribute(&error_code(code, reason));
        self.finish(w, reply)
    }

    pub(super) fn respond_error(
        &mut self,
        client: ClientAddr,
        reply: &ReplyAuth,
        code: u16,
        reason: &str,
    ) {
        let data = self.error_response(reply, code, reason);
        self.send_reply(client, reply, data, Some(code));
    }

    /// Queues an answer; one to a request that did not authenticate goes only if it is within
    /// [`REFLECTION_FACTOR`] times the request (else it is dropped and counted).
    pub(super) fn send_reply(
        &mut self,
        client: ClientAddr,
        reply: &ReplyAuth,
        data: Vec<u8>,
        code: Option<u16>,
    ) {
        if reply.key.is_none() && data.len() > REFLECTION_FACTOR * reply.request_len {
            self.events.push_back(Event::ReflectionSuppressed);
            return;
        }
        if let Some(code) = code {
            self.events.push_back(Event::ErrorSent { code });
        }
        self.transmits.push_back(Transmit { to: client, data });
    }

    pub(super) fn finish_and_send(
        &mut self,
        w: MessageWriteVec,
        client: ClientAddr,
        reply: &ReplyAuth,
        code: Option<u16>,
    ) {
        let data = self.finish(w, reply);
        self.send_reply(client, reply, data, code);
    }

    /// Adds SOFTWARE (to authenticated answers only: an unauthenticated one stays small and
    /// tells a scanner nothing), the integrity attribute of the request's kind, and
    /// FINGERPRINT if the request had one.
    pub(super) fn finish(&self, mut w: MessageWriteVec, reply: &ReplyAuth) -> Vec<u8> {
        if let Some(sw) = self
            .config
            .software
            .as_deref()
            .filter(|_| reply.key.is_some())
            .and_then(|s| Software::new(s).ok())
        {
            let _ = w.add_attribute(&sw);
        }
        if let Some((key, kind)) = &reply.key {
            let len = match kind {
                IntegrityKind::Sha1 => 20,
                IntegrityKind::Sha256 => 32,
            };
            let zeros = [0u8; 32];
            let offset = w.len();
            w.push_attribute_unchecked(&RawAttribute::new(
                AttributeType::new(kind.attribute_type()),
                &zeros[..len],
            ));
            let mac = integrity::compute(*kind, key, w.data(), offset, len);
            w.mut_data()[offset + 4..offset + 4 + len].copy_from_slice(&mac[..len]);
        }
        if reply.fingerprint {
            let _ = w.add_fingerprint();
        }
        w.finish()
    }
}

/// The reason phrase of a 401 for a refused credential. It names the app whose key was tried
/// (from the username the client sent), so an app developer sees which app and why; it reveals
/// nothing about the secret.
pub(super) fn refusal(app: Option<&str>, why: &str) -> String {
    let mut r = match app {
        Some(app) => format!("Unauthorized: app '{app}': {why}"),
        None => format!("Unauthorized: {why}"),
    };
    // STUN reason phrases are at most 128 characters (RFC 8489 §14.8).
    r.truncate(r.char_indices().nth(127).map_or(r.len(), |(i, _)| i));
    r
}

pub(super) fn error_code(code: u16, reason: &str) -> ErrorCode {
    ErrorCode::new(code, reason)
        .unwrap_or_else(|_| ErrorCode::new(500, "Server Error").expect("valid"))
}

pub(super) fn password_algorithms() -> PasswordAlgorithms {
    PasswordAlgorithms::new(&[PasswordAlgorithmValue::MD5, PasswordAlgorithmValue::SHA256])
}
