//! The cloudproxy control plane's wire vocabulary: every request and response body of its
//! HTTP API, the closed enums they are spelled with (regions, SDKs, modes, quality tiers,
//! pools, transports, lifecycle states, roles), and the field limits a body is validated
//! against.
//!
//! One definition serves every side of the wire:
//!
//! - the control plane (`cloudproxy-control`) serves these types and derives its OpenAPI
//!   document from them (feature `openapi`), and reads a few straight from database rows
//!   (feature `sqlx`);
//! - the relay's control-plane link sends leases, usage reports and heartbeats and reads the
//!   sync;
//! - the SDK reads the allow-list and the Auto-mode proxy list;
//! - `cloudproxy admin` renders every answer.
//!
//! Enums serialize as their one snake_case spelling ([`Wire::as_str`]); bodies a client sends
//! reject unknown fields, answers a client reads ignore them (so additive API changes do not
//! break older clients).

pub mod allowlist;
pub mod apps;
pub mod calendar;
pub mod cidr;
pub mod edges;
pub mod error;
pub mod ice_servers;
pub mod limits;
pub mod relay;
pub mod requests;
pub mod vocab;

pub use allowlist::{AllowList, Change, ChangeKind, Protocol, Row, Service};
pub use apps::{
    App, AppInput, AppKeyInfo, CreatedApp, CreatedOwner, NewSecret, Owner, OwnerInput, OwnerKey,
    RetiringKey, RotateInput, Rotated, SyncApp, SyncKey, SyncResponse,
};
pub use cidr::{Cidr, CidrError};
pub use edges::{
    Edge, EdgeCidrs, EdgeCidrsInput, EdgeInput, EdgeUpdate, Heartbeat, Listener, Published,
    RegionSummary,
};
pub use error::{ErrorBody, ErrorDetail, FieldError};
pub use ice_servers::{IceServer, IceServersRequest, IceServersResponse, ProxyMode};
pub use limits::MAX_EDGE_CIDRS;
pub use relay::{
    Changed, Lease, LeaseInput, Proxy, ProxyList, Release, Renewal, Usage, UsageAck, UsageDay,
    UsageRecord, UsageReport,
};
pub use requests::{ApproveInput, EnablementInput, EnablementRequest, RejectInput, SyncEnablement};
pub use vocab::{
    AppStatus, Mode, Pool, QualityTier, Region, RequestState, Role, Sdk, Transport, UsageMode, Wire,
};
