//! Rust projections: see issue 2 item 4.
