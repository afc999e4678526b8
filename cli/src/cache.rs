//! `distsync cache …`: read, write and inspect the coherent cache from the shell.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use distsync::wire::{CacheKeyView, CacheNodeStats};
use distsync::{Client, Consistency};

use crate::connect::Target;
use crate::flags::seconds;
use crate::status::ask_all;

#[derive(Subcommand)]
pub(crate) enum CacheCommand {
    /// Print KEY's value alone on stdout; exit status 1 when absent.
    Get {
        /// The key.
        key: String,
        /// Answer from the node's own state without confirming with the leader (may be stale).
        #[arg(long)]
        local: bool,
        /// The node to read through (one of --endpoints); default: one at random.
        #[arg(long)]
        node: Option<String>,
    },
    /// Set KEY to VALUE (or, without VALUE, all of stdin); prints the write's version.
    Set {
        /// The key.
        key: String,
        /// The value; read from stdin when absent.
        value: Option<String>,
        /// Seconds until the key reads as absent (fractions allowed); default: never.
        #[arg(long)]
        ttl: Option<f64>,
        /// The node to write through, which keeps a copy (one of --endpoints); default: one at
        /// random.
        #[arg(long)]
        node: Option<String>,
    },
    /// Remove KEY (exit status 0 whether or not it existed; a note on stderr if it did not).
    Delete {
        /// The key.
        key: String,
        /// The node to write through; default: one at random.
        #[arg(long)]
        node: Option<String>,
    },
    /// Each node's view of KEY: its MESI state and version, and the directory entry.
    Show {
        /// The key.
        key: String,
        /// One JSON array, one object per node.
        #[arg(long)]
        json: bool,
    },
    /// Each node's hits, misses, hit rate, invalidations, write-backs and copies per state.
    Stats {
        /// One JSON array, one object per node.
        #[arg(long)]
        json: bool,
    },
}

impl CacheCommand {
    /// The node the command goes through, if it names one.
    fn node(&self) -> Option<&str> {
        match self {
            Self::Get { node, .. } | Self::Set { node, .. } | Self::Delete { node, .. } => node.as_deref(),
            Self::Show { .. } | Self::Stats { .. } => None,
        }
    }
}

/// Runs one cache command: inspection asks every node on its own, reads and writes go through
/// the node the command names (or the one the key's hash picks).
pub(crate) async fn run(target: &Target, command: CacheCommand) -> anyhow::Result<ExitCode> {
    let client = match (&command, command.node()) {
        (CacheCommand::Show { .. } | CacheCommand::Stats { .. }, _) => target.unconnected()?,
        (_, home) => target.connect_via(home).await?,
    };
    let code = run_command(&client, &target.endpoints, command).await;
    client.close().await;
    code
}

/// Runs one cache command against `client`; `endpoints` are every node to inspect.
async fn run_command(client: &Client, endpoints: &[String], command: CacheCommand) -> anyhow::Result<ExitCode> {
    match command {
        CacheCommand::Get { key, local, .. } => {
            let consistency = if local { Consistency::Local } else { Consistency::Linearizable };
            match client.cache().consistency(consistency).get(&key).await? {
                Some(value) => {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&value)?;
                    stdout.write_all(b"\n")?;
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("cache key {key:?} not found");
                    Ok(ExitCode::from(1))
                }
            }
        }
        CacheCommand::Set { key, value, ttl, .. } => {
            let value = match value {
                Some(value) => value.into_bytes(),
                None => {
                    let mut bytes = Vec::new();
                    std::io::stdin().read_to_end(&mut bytes).context("cannot read the value from stdin")?;
                    bytes
                }
            };
            let cache = client.cache();
            let version = match ttl {
                Some(ttl) => cache.set_with_ttl(&key, value, seconds(ttl, "--ttl")?).await?,
                None => cache.set(&key, value).await?,
            };
            println!("{version}");
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Delete { key, .. } => {
            if !client.cache().delete(&key).await? {
                eprintln!("cache key {key:?} did not exist");
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Show { key, json } => {
            let answers = per_node(
                endpoints,
                |client, endpoint| {
                    let key = key.clone();
                    async move { client.cache_show_on(&endpoint, key).await }
                },
                client,
            )
            .await;
            if json {
                let nodes: Vec<serde_json::Value> = answers
                    .iter()
                    .map(|(endpoint, answer)| match answer {
                        Ok(view) => show_json(view),
                        Err(error) => serde_json::json!({ "address": endpoint, "error": error.to_string() }),
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                println!(
                    "{:<4} {:<22} {:<5} {:>10} {:>10}  directory",
                    "NODE", "ADDRESS", "STATE", "VERSION", "APPLIED"
                );
                for (endpoint, answer) in &answers {
                    match answer {
                        Ok(view) => {
                            let (state, version) = match &view.copy {
                                Some(copy) => (copy.state.letter().to_string(), copy.version.to_string()),
                                None => ("-".to_string(), "-".to_string()),
                            };
                            let directory = match &view.directory {
                                Some(entry) => format!(
                                    "version {}{}, holders {:?}{}",
                                    entry.version,
                                    if entry.pending { ", write-back pending" } else { ", in Redis" },
                                    entry.holders,
                                    entry.expires_at_ms.map(|at| format!(", expires at {at} ms")).unwrap_or_default()
                                ),
                                None => "absent".to_string(),
                            };
                            println!(
                                "{:<4} {:<22} {:<5} {:>10} {:>10}  {directory}",
                                view.node, endpoint, state, version, view.applied
                            );
                        }
                        Err(error) => println!("{:<4} {:<22} unreachable: {error}", "?", endpoint),
                    }
                }
            }
            Ok(if answers.iter().any(|(_, a)| a.is_ok()) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        CacheCommand::Stats { json } => {
            let answers =
                per_node(endpoints, |client, endpoint| async move { client.cache_stats_on(&endpoint).await }, client)
                    .await;
            if json {
                let nodes: Vec<serde_json::Value> = answers
                    .iter()
                    .map(|(endpoint, answer)| match answer {
                        Ok(stats) => stats_json(stats),
                        Err(error) => serde_json::json!({ "address": endpoint, "error": error.to_string() }),
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                println!(
                    "{:<4} {:>9} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7}  backing",
                    "NODE", "HITS", "MISSES", "PENDING", "RATE", "INVALID", "EVICTED", "WRBACK", "M", "E", "S", "I"
                );
                for (endpoint, answer) in &answers {
                    match answer {
                        Ok(s) => println!(
                            "{:<4} {:>9} {:>9} {:>9} {:>6.1}% {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7}  {}",
                            s.node,
                            s.hits,
                            s.misses,
                            s.pending_reads,
                            s.hit_rate() * 100.0,
                            s.invalidations,
                            s.evictions,
                            s.write_backs,
                            s.modified,
                            s.exclusive,
                            s.shared,
                            s.invalid,
                            s.backing
                        ),
                        Err(error) => println!("{:<4} {endpoint} unreachable: {error}", "?"),
                    }
                }
            }
            Ok(if answers.iter().any(|(_, a)| a.is_ok()) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// Asks every endpoint concurrently.
async fn per_node<T, F, Fut>(
    endpoints: &[String],
    ask: F,
    client: &Client,
) -> Vec<(String, Result<T, distsync::ClientError>)>
where
    T: Send + 'static,
    F: Fn(Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, distsync::ClientError>> + Send + 'static,
{
    let answers = ask_all(endpoints.iter().cloned().map(|endpoint| {
        let answer = ask(client.clone(), endpoint.clone());
        async move { (endpoint, answer.await) }
    }))
    .await;
    answers
}

fn show_json(view: &CacheKeyView) -> serde_json::Value {
    serde_json::json!({
        "node": view.node,
        "applied": view.applied,
        "state": view.copy.as_ref().map(|c| c.state.letter().to_string()),
        "version": view.copy.as_ref().map(|c| c.version),
        "bytes": view.copy.as_ref().map(|c| c.bytes),
        "directory": view.directory.as_ref().map(|d| serde_json::json!({
            "version": d.version,
            "pending": d.pending,
            "expires_at_ms": d.expires_at_ms,
            "holders": d.holders,
        })),
    })
}

fn stats_json(stats: &CacheNodeStats) -> serde_json::Value {
    let mut value = serde_json::to_value(stats).expect("stats serialize");
    value["hit_rate"] = serde_json::json!(stats.hit_rate());
    value
}
