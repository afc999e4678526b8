//! `distsync queue …`: put, get, ack, consume and inspect durable queues from the shell.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use distsync::wire::QueueStats;
use distsync::{Client, Delivery, QueueOptions};

use crate::connect::Target;
use crate::flags::seconds;

#[derive(Subcommand)]
pub(crate) enum QueueCommand {
    /// Enqueue DATA (or, without DATA, all of stdin) into NAME; prints the message id.
    Put {
        /// The queue (created with default options on first use).
        name: String,
        /// The message; read from stdin when absent.
        data: Option<String>,
        /// A dedup id: a put repeating it within the queue's dedup window enqueues nothing and
        /// prints the first message's id.
        #[arg(long)]
        dedup_id: Option<String>,
    },
    /// Take the oldest message of NAME and print its body alone on stdout; exit status 1 when
    /// nothing arrived. Without --ack the delivery stays in flight (detached from this process)
    /// until `queue ack`, `queue nack` or its visibility timeout.
    Get {
        /// The queue.
        name: String,
        /// Seconds to wait for a message (fractions allowed); default: answer at once.
        #[arg(long, default_value_t = 0.0)]
        wait: f64,
        /// Ack the message right after printing it.
        #[arg(long)]
        ack: bool,
        /// Print one JSON object with queue, id, tag, attempt, enqueued_ms, visible_at_ms, history
        /// and the body (`body` when UTF-8, else `body_hex`).
        #[arg(long)]
        json: bool,
        /// Seconds the message stays invisible to other consumers; default: the queue's.
        #[arg(long)]
        visibility: Option<f64>,
    },
    /// Delete the delivered message with delivery TAG for good.
    Ack {
        /// The queue.
        name: String,
        /// The delivery tag from `queue get --json`.
        tag: u64,
    },
    /// Make the delivered message with delivery TAG deliverable again at once.
    Nack {
        /// The queue.
        name: String,
        /// The delivery tag.
        tag: u64,
    },
    /// Keep the delivered message with delivery TAG invisible for SECONDS from now.
    Extend {
        /// The queue.
        name: String,
        /// The delivery tag.
        tag: u64,
        /// Seconds from now.
        #[arg(long)]
        visibility: f64,
    },
    /// Print messages of NAME as they arrive, acking each after it is printed, until Ctrl-C (or
    /// --count messages). With a COMMAND after `--`, run it for each message with the body on
    /// stdin (and DISTSYNC_MESSAGE_ID, DISTSYNC_DELIVERY_TAG, DISTSYNC_ATTEMPT set): exit status
    /// 0 acks the message, any other nacks it.
    Consume {
        /// The queue.
        name: String,
        /// One JSON object per message (as `queue get --json`), then `{"acked": TAG, "id": ID}`
        /// once its ack succeeded.
        #[arg(long)]
        json: bool,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Messages fetched per get.
        #[arg(long, default_value_t = 1)]
        prefetch: usize,
        /// The command processing each message, after `--`.
        #[arg(last = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Depth, in flight, dead-lettered, oldest age and the options of NAME.
    Stats {
        /// The queue.
        name: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every queue with its counters.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create NAME with options, or change the options of the existing queue.
    Create {
        /// The queue.
        name: String,
        /// Deliveries before a message moves to NAME.dlq; 0 for never.
        #[arg(long, default_value_t = QueueOptions::default().max_attempts)]
        max_attempts: u32,
        /// Default visibility timeout in seconds.
        #[arg(long, default_value_t = QueueOptions::default().visibility_ms as f64 / 1000.0)]
        visibility: f64,
        /// Largest message, in bytes (at most 1 MiB).
        #[arg(long, default_value_t = QueueOptions::default().max_message_bytes)]
        max_message_bytes: u32,
        /// Seconds a dedup id is remembered.
        #[arg(long, default_value_t = QueueOptions::default().dedup_window_ms as f64 / 1000.0)]
        dedup_window: f64,
    },
    /// Delete NAME and every message in it; prints how many it held.
    Delete {
        /// The queue.
        name: String,
    },
}

fn millis(value: f64, flag: &str) -> anyhow::Result<u64> {
    Ok(seconds(value, flag)?.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// Runs one queue command under a session of its own.
pub(crate) async fn run(target: &Target, command: QueueCommand) -> anyhow::Result<ExitCode> {
    let client = target.connect().await?;
    let code = run_command(&client, command).await;
    client.close().await;
    code
}

/// Runs one queue command against `client`.
async fn run_command(client: &Client, command: QueueCommand) -> anyhow::Result<ExitCode> {
    match command {
        QueueCommand::Put { name, data, dedup_id } => {
            let body = match data {
                Some(data) => data.into_bytes(),
                None => {
                    let mut body = Vec::new();
                    std::io::stdin().read_to_end(&mut body).context("cannot read the message from stdin")?;
                    body
                }
            };
            let queue = client.queue(name);
            let id = match dedup_id {
                Some(dedup_id) => queue.put_with_dedup(body, dedup_id).await?,
                None => queue.put(body).await?,
            };
            println!("{id}");
        }
        QueueCommand::Get { name, wait, ack, json, visibility } => {
            let mut queue = client.queue(&name);
            if !ack {
                // The delivery must outlive this process so that `queue ack` can settle it.
                queue = queue.detached();
            }
            if let Some(visibility) = visibility {
                queue = queue.visibility(seconds(visibility, "--visibility")?);
            }
            let Some(delivery) = queue.get(seconds(wait, "--wait")?).await? else {
                eprintln!("no message arrived in queue {name:?}");
                return Ok(ExitCode::from(1));
            };
            print_delivery(&delivery, json)?;
            if ack {
                delivery.ack().await?;
            }
        }
        QueueCommand::Ack { name, tag } => client.queue(name).ack_tag(tag).await?,
        QueueCommand::Nack { name, tag } => client.queue(name).nack_tag(tag).await?,
        QueueCommand::Extend { name, tag, visibility } => {
            client.queue(name).extend_tag(tag, seconds(visibility, "--visibility")?).await?;
        }
        QueueCommand::Consume { name, json, count, prefetch, command } => {
            let mut consumer = client.queue(&name).consume().prefetch(prefetch);
            let mut consumed = 0u64;
            while count.is_none_or(|count| consumed < count) {
                let delivery = tokio::select! {
                    delivery = consumer.next() => delivery,
                    _ = tokio::signal::ctrl_c() => break,
                };
                let delivery = match delivery {
                    Ok(delivery) => delivery,
                    Err(error @ distsync::QueueError::Unavailable { .. }) => {
                        eprintln!("warning: {error}; still waiting");
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                print_delivery(&delivery, json)?;
                if !command.is_empty() && !process(&delivery, &command).await? {
                    if let Err(error) = delivery.nack().await {
                        eprintln!("warning: message {} not nacked: {error}", delivery.id);
                    }
                    continue;
                }
                match delivery.ack().await {
                    Ok(()) => {
                        consumed += 1;
                        if json {
                            println!("{}", serde_json::json!({ "acked": delivery.tag, "id": delivery.id }));
                            std::io::stdout().flush()?;
                        }
                    }
                    Err(error) => eprintln!("warning: message {} not acked: {error}", delivery.id),
                }
            }
        }
        QueueCommand::Stats { name, json } => {
            let stats = client.queue(name).stats().await?;
            if json {
                println!("{}", serde_json::to_string(&stats)?);
            } else {
                print_stats(&stats);
            }
        }
        QueueCommand::List { json } => {
            let queues = client.queue_list().await?;
            if json {
                println!("{}", serde_json::to_string(&queues)?);
            } else {
                println!(
                    "{:<32} {:>9} {:>9} {:>9} {:>13} {:>10}",
                    "NAME", "DEPTH", "IN FLIGHT", "WAITING", "DEAD-LETTERED", "OLDEST"
                );
                for stats in &queues {
                    println!(
                        "{:<32} {:>9} {:>9} {:>9} {:>13} {:>10}",
                        stats.name,
                        stats.depth,
                        stats.in_flight,
                        stats.waiting_consumers,
                        stats.dead_lettered,
                        age(stats.oldest_age_ms)
                    );
                }
            }
        }
        QueueCommand::Create { name, max_attempts, visibility, max_message_bytes, dedup_window } => {
            let options = QueueOptions {
                max_attempts,
                visibility_ms: millis(visibility, "--visibility")?,
                max_message_bytes,
                dedup_window_ms: millis(dedup_window, "--dedup-window")?,
            };
            let created = client.queue(&name).create(options).await?;
            println!("queue {name:?} {}", if created { "created" } else { "updated" });
        }
        QueueCommand::Delete { name } => {
            let messages = client.queue(&name).delete().await?;
            println!("{messages}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `command` with the delivery's body on stdin; whether it exited with status 0.
async fn process(delivery: &Delivery, command: &[String]) -> anyhow::Result<bool> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("DISTSYNC_MESSAGE_ID", delivery.id.to_string())
        .env("DISTSYNC_DELIVERY_TAG", delivery.tag.to_string())
        .env("DISTSYNC_ATTEMPT", delivery.attempt.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {:?}", command[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = stdin.write_all(&delivery.body).await;
    }
    let status = child.wait().await?;
    if !status.success() {
        eprintln!("message {} not processed: {:?} exited with {status}; nacked", delivery.id, command[0]);
    }
    Ok(status.success())
}

fn age(age_ms: Option<u64>) -> String {
    age_ms.map(|ms| format!("{:.1}s", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into())
}

fn print_stats(stats: &QueueStats) {
    let options = &stats.options;
    println!("queue {:?}", stats.name);
    println!("  depth (ready)      {}", stats.depth);
    println!("  in flight          {}", stats.in_flight);
    println!("  waiting consumers  {}", stats.waiting_consumers);
    println!("  dead-lettered      {}", stats.dead_lettered);
    println!("  oldest message     {}", age(stats.oldest_age_ms));
    println!("  bytes held         {}", stats.bytes);
    println!("  put / acked total  {} / {}", stats.put_total, stats.acked_total);
    let attempts = if options.max_attempts == 0 { "unlimited".to_string() } else { options.max_attempts.to_string() };
    println!(
        "  options            max attempts {attempts}, visibility {:.1}s, max message {} bytes, dedup window {:.1}s",
        options.visibility_ms as f64 / 1000.0,
        options.max_message_bytes,
        options.dedup_window_ms as f64 / 1000.0
    );
}

fn print_delivery(delivery: &Delivery, json: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        let mut object = serde_json::json!({
            "queue": delivery.queue(),
            "id": delivery.id,
            "tag": delivery.tag,
            "attempt": delivery.attempt,
            "enqueued_ms": delivery.enqueued_ms,
            "visible_at_ms": delivery.visible_at_ms,
            "history": delivery.history,
        });
        match std::str::from_utf8(&delivery.body) {
            Ok(text) => object["body"] = text.into(),
            Err(_) => {
                object["body_hex"] = delivery.body.iter().map(|b| format!("{b:02x}")).collect::<String>().into();
            }
        }
        writeln!(stdout, "{object}")?;
    } else {
        stdout.write_all(&delivery.body)?;
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}
