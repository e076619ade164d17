//! `cargo xtask`: project tasks. Being written.

fn main() {}
