//! The control plane's vocabulary: regions, SDKs, modes, quality tiers, lifecycle states,
//! pools and transports, defined once in the wire vocabulary ([`cloudproxy_api`]) that the
//! relay, the SDK and `cloudproxy admin` share.

pub use cloudproxy_api::limits::{forbidden_char, forbidden_message};
pub use cloudproxy_api::vocab::*;
