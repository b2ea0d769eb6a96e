//! A TURN client's usual moves against a relay under test: the workspace's test kit, kept under
//! these names for the tests that use them.

#[allow(unused_imports)] // each test binary uses a different subset
pub(crate) use cloudproxy_testkit::turn::{client_with_channel, echo, try_allocate, CHANNEL};
