//! Empty: it exists so that the `[build-dependencies]` (which align the proc-macros' `syn`)
//! take part in feature resolution.

fn main() {}
