//! Client SDK — TODO(issue 3): being written this session.
