//! Firewall lab — TODO(issue 3): being written this session.
