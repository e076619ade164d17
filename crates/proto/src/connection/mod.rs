//! The connection state machine. Being written.
