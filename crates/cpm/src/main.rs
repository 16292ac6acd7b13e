//! `cpm`: the CPM node, client and tools.
fn main() {}
