//! MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) and MESSAGE-INTEGRITY-SHA256 (§14.6), computed
//! over the borrowed packet without copying it, and the long-term key derivation (§9.2.2).
//!
//! The HMAC covers the message up to the integrity attribute, with the header's length field
//! rewritten to end just after that attribute, so the four header bytes are hashed separately.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Which hash the long-term key is made with (PASSWORD-ALGORITHM, RFC 8489 §14.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// MD5, the RFC 5389 default and what every TURN client supports.
    Md5,
    /// SHA-256, selectable with PASSWORD-ALGORITHM (RFC 8489 §18.5.1).
    Sha256,
}

/// A long-term credential key: MD5 (16 bytes) or SHA-256 (32 bytes) of
/// `username ":" realm ":" password`.
#[derive(Clone, PartialEq, Eq)]
pub struct LongTermKey {
    bytes: [u8; 32],
    len: u8,
}

impl std::fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LongTermKey(..)")
    }
}

impl LongTermKey {
    /// Derives the key from `username`, `realm` and `password` with `algorithm`.
    pub fn derive(algorithm: KeyAlgorithm, username: &str, realm: &str, password: &str) -> Self {
        let parts = [
            username.as_bytes(),
            b":",
            realm.as_bytes(),
            b":",
            password.as_bytes(),
        ];
        let mut bytes = [0u8; 32];
        let len = match algorithm {
            KeyAlgorithm::Md5 => {
                let mut h = Md5::new();
                parts.iter().for_each(|p| h.update(p));
                bytes[..16].copy_from_slice(&h.finalize());
                16
            }
            KeyAlgorithm::Sha256 => {
                let mut h = Sha256::new();
                parts.iter().for_each(|p| h.update(p));
                bytes.copy_from_slice(&h.finalize());
                32
            }
        };
        Self { bytes, len }
    }

    /// A short-term key is the password itself (RFC 8489 §9.1.1); used by the RFC 5769 vectors.
    pub fn short_term(password: &str) -> Self {
        let p = password.as_bytes();
        let mut bytes = [0u8; 32];
        let len = p.len().min(32);
        bytes[..len].copy_from_slice(&p[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    /// The key's bytes: 16 for MD5, 32 for SHA-256 (or the short-term password's bytes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Which integrity attribute a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityKind {
    /// MESSAGE-INTEGRITY: HMAC-SHA1, 20 bytes.
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256: HMAC-SHA256, 32 bytes as written (16 to 32 accepted, §14.6).
    Sha256,
}

impl IntegrityKind {
    /// The attribute's type code: 0x0008 or 0x001C.
    pub fn attribute_type(self) -> u16 {
        match self {
            IntegrityKind::Sha1 => 0x0008,
            IntegrityKind::Sha256 => 0x001C,
        }
    }
}

/// Computes the HMAC for an integrity attribute that starts at `attr_offset` in `msg` and whose
/// value is `value_len` bytes long. Returns the full-length MAC (20 or 32 bytes).
pub fn compute(
    kind: IntegrityKind,
    key: &LongTermKey,
    msg: &[u8],
    attr_offset: usize,
    value_len: usize,
) -> [u8; 32] {
    let length = (attr_offset + 4 + value_len - 20) as u16;
    let mut header = [0u8; 4];
    header[..2].copy_from_slice(&msg[..2]);
    header[2..].copy_from_slice(&length.to_be_bytes());
    let mut out = [0u8; 32];
    match kind {
        IntegrityKind::Sha1 => {
            let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("any key length");
            mac.update(&header);
            mac.update(&msg[4..attr_offset]);
            out[..20].copy_from_slice(&mac.finalize().into_bytes());
        }
        IntegrityKind::Sha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
            mac.update(&header);
            mac.update(&msg[4..attr_offset]);
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
    }
    out
}

/// Checks an integrity attribute at `attr_offset` whose value is `value`. MESSAGE-INTEGRITY-SHA256
/// may be truncated to 16..=32 bytes in steps of 4 (RFC 8489 §14.6). Constant time.
pub fn verify(
    kind: IntegrityKind,
    key: &LongTermKey,
    msg: &[u8],
    attr_offset: usize,
    value: &[u8],
) -> bool {
    let ok_len = match kind {
        IntegrityKind::Sha1 => value.len() == 20,
        IntegrityKind::Sha256 => (16..=32).contains(&value.len()) && value.len().is_multiple_of(4),
    };
    if !ok_len || attr_offset + 4 + value.len() > msg.len() {
        return false;
    }
    let mac = compute(kind, key, msg, attr_offset, value.len());
    // constant-time comparison
    mac[..value.len()]
        .iter()
        .zip(value)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// FINGERPRINT value: CRC-32 of the message up to the attribute, XOR 0x5354554e (RFC 8489
/// §14.7). The length field is taken as already covering the FINGERPRINT attribute.
pub fn fingerprint(msg_before_attr: &[u8]) -> u32 {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    CRC.checksum(msg_before_attr) ^ 0x5354_554e
}
