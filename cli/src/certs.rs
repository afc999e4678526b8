//! `distsync certs …`: certificates for a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum CertsCommand {
    /// Create a CA, certificates for nodes 1..=N and a client certificate in DIR.
    Init {
        /// Output directory; `DIR/ca.pem` is what clients trust.
        #[arg(long)]
        dir: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
    },
}

/// Runs a certs command.
pub(crate) fn run(command: CertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertsCommand::Init { dir, nodes } => {
            distsync_server::certs::init(&dir, nodes)?;
            println!(
                "certificates for {nodes} nodes and one client in {}; clients trust {}",
                dir.display(),
                dir.join("ca.pem").display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
