//! TURN load generator — TODO(issue 5): being written this session.
