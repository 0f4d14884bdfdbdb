//! Placeholder until the criterion bench lands (see STYLE.md §3.11).

fn main() {}
