//! `distsync debug …`: test-only fault injection.

use std::process::ExitCode;

use clap::Subcommand;

use crate::connect::Target;

#[derive(Subcommand)]
pub(crate) enum DebugCommand {
    /// Make NODE silently drop Raft traffic with the given peers (empty list heals).
    DropPeers {
        /// The node's endpoint.
        #[arg(long)]
        node: String,
        /// Peer ids, comma separated; empty to heal.
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        peers: Vec<u64>,
    },
}

/// Runs one debug command.
pub(crate) async fn run(target: &Target, command: DebugCommand) -> anyhow::Result<ExitCode> {
    match command {
        DebugCommand::DropPeers { node, peers } => {
            let client = target.unconnected_to(std::slice::from_ref(&node))?;
            client.set_dropped_peers(&node, &peers).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
