//! Placeholder until the seed-config bench lands (see below in this file's history).
fn main() {}
