// The FFI of distsync_bindings is in include/DistsyncFFI.h; the library links at build time.
