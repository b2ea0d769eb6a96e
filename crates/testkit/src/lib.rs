//! Test support for the workspace's tests, in one place instead of a copy per test file:
//!
//! - [`alloc`]: the counting global allocator behind the "no allocation per packet" tests,
//!   counting on the calling thread or on threads of a given name.
//!
//! Dev-only (`publish = false`): nothing here ships in a binary.

pub mod alloc;
