//! `distsync certs …`: certificates for a cluster and its clients.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum CertsCommand {
    /// Create a CA, certificates for nodes 1..=N and the admin's client certificate in DIR.
    Init {
        /// Output directory; `DIR/ca.pem` is what clients trust.
        #[arg(long)]
        dir: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
    },
    /// Issue a client certificate for identity NAME from the CA in DIR: `DIR/NAME.pem` and
    /// `DIR/NAME-key.pem`. The identity can do nothing until granted (`distsync acl grant`).
    Client {
        /// The directory holding the CA (`ca.pem`, `ca-key.pem`).
        #[arg(long)]
        dir: PathBuf,
        /// The identity: 1–64 of a-z, 0-9, '.', '_', '-'.
        #[arg(long)]
        name: String,
        /// Days the certificate is valid (default: until 4096).
        #[arg(long)]
        days: Option<u32>,
    },
}

/// Runs a certs command.
pub(crate) fn run(command: CertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertsCommand::Init { dir, nodes } => {
            distsync_server::certs::init(&dir, nodes)?;
            println!(
                "certificates for {nodes} nodes and the admin client in {}; clients trust {}",
                dir.display(),
                dir.join("ca.pem").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Client { dir, name, days } => {
            let (cert, key) = distsync_server::certs::issue_client(&dir, &name, days)?;
            println!(
                "identity {name}: {} and {}; pass them with --cert and --key, and grant access with `distsync acl grant {name} …`",
                cert.display(),
                key.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
