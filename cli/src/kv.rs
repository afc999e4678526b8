//! `distsync kv …`: the replicated key-value register from the shell.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Subcommand;

use crate::connect::Target;

#[derive(Subcommand)]
pub(crate) enum KvCommand {
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Print KEY's value alone on stdout; exit status 1 if absent.
    Get { key: String },
    /// Remove KEY.
    Delete { key: String },
}

/// Runs one kv command.
pub(crate) async fn run(target: &Target, command: KvCommand) -> anyhow::Result<ExitCode> {
    let client = target.connect().await?;
    let kv = client.kv();
    let code = match command {
        KvCommand::Put { key, value } => {
            kv.put(key, value).await?;
            ExitCode::SUCCESS
        }
        KvCommand::Get { key } => match kv.get(&key).await? {
            Some(value) => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&value)?;
                stdout.write_all(b"\n")?;
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("key {key:?} not found");
                ExitCode::from(1)
            }
        },
        KvCommand::Delete { key } => {
            if !kv.delete(&key).await? {
                eprintln!("key {key:?} did not exist");
            }
            ExitCode::SUCCESS
        }
    };
    client.close().await;
    Ok(code)
}
