//! The control plane's API test suite. Every test runs twice: on SQLite and on a real
//! PostgreSQL (see `common` for how the database is chosen and when PostgreSQL is skipped).

mod common;

mod allowlist;
mod apps;
mod auth;
mod console;
mod control;
mod edge_cidrs;
mod ice_servers;
mod metrics;
mod numbers;
mod relays;
mod requests;
