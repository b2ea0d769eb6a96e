//! The reference media service — TODO(issue 3): being written this session.
