//! The `duplex` command. Being written.

fn main() {}
