//! Every cluster test, in one test binary (one link instead of one per file, and libtest keeps
//! two tests in flight across all of them instead of per file). Each module is one behaviour,
//! in `tests/tests/NAME.rs`; run one with `cargo test -p distsync-cluster-tests --test cluster NAME::`.

mod access_control;
mod bad_input;
mod ca_rotation;
mod cache_coherence;
mod cache_durability;
mod cache_mesi;
mod cache_shared_redis;
mod cli;
mod client_certificates;
mod clock_jump;
mod corrupt_files;
mod dead_endpoint;
mod follower_catchup;
mod full_disk;
mod leader_failover;
mod limits_flags;
mod linearizable_kv;
mod lock_cli;
mod lock_deadlock;
mod lock_fairness;
mod lock_holder_crash;
mod lock_mutual_exclusion;
mod lock_release_unanswered;
mod lock_timeouts;
mod log_memory;
mod network_faults;
mod overload;
mod partition;
mod queue_cli;
mod queue_durability;
mod queue_no_loss;
mod queue_redelivery;
mod restart;
mod restart_reset;
mod session_hijack;
mod sessions;
mod write_limits;
