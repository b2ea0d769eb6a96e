//! Test support for the workspace's tests, in one place instead of a copy per test file:
//!
//! - [`apps`]: an app key, the configuration admitting it and the user tokens it signs;
//! - [`alloc`]: the counting global allocator behind the "no allocation per packet" tests,
//!   counting on the calling thread or on threads of a given name;
//! - [`turn`]: a blocking TURN client over UDP, TCP or TLS that answers challenges itself,
//!   and the usual moves (allocate, bind a channel, echo, delete);
//! - [`echo`]: a UDP echo peer that allocates nothing per packet;
//! - [`process`]: child processes with captured output, killed on drop or run within a
//!   deadline, or waited on until a condition holds; signals, scratch directories and the CI
//!   switch ([`process::in_ci`]).
//!
//! Dev-only (`publish = false`): nothing here ships in a binary.

pub mod alloc;
pub mod apps;
pub mod echo;
pub mod process;
pub mod turn;
