//! `distsync serve`: one node, until Ctrl-C or SIGTERM stops it cleanly.

use std::process::ExitCode;

use distsync_server::ServerConfig;

use crate::signals::shutdown_signal;

/// Runs one node.
pub(crate) async fn run(config: ServerConfig) -> anyhow::Result<ExitCode> {
    distsync_server::run(config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
