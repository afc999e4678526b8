//! No code. Depending on this crate gives a package built alone (the Python and Node bindings)
//! the same features of shared dependencies as the whole workspace has, so that its build reuses
//! the workspace's compiled crates; see Cargo.toml.
