//! A producer and a worker sharing a queue: puts a few jobs (once each, thanks to dedup ids), then
//! processes them, acking each one, until the queue stays empty for a second.
//!
//! ```text
//! distsync dev &                                  # a local cluster
//! DISTSYNC_ENDPOINTS=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 \
//! DISTSYNC_CA=.distsync-dev/tls/ca.pem cargo run -p distsync --example queue -- jobs
//! ```

use std::time::Duration;

use distsync::{Client, ClientTls, QueueError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("DISTSYNC_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:7101".into());
    let ca = std::env::var("DISTSYNC_CA").unwrap_or_else(|_| ".distsync-dev/tls/ca.pem".into());
    let name = std::env::args().nth(1).unwrap_or_else(|| "example-jobs".into());
    let client = Client::connect(endpoints.split(','), ClientTls::from_ca_file(ca)?).await?;
    let jobs = client.queue(&name);

    // The dedup id makes a retried put (after an `Unavailable`) enqueue the job once.
    for number in 1..=3 {
        let id = jobs.put_with_dedup(format!("job {number}"), format!("example-job-{number}")).await?;
        println!("enqueued job {number} as message {id}");
    }

    // Work until the queue stays empty for a second.
    while let Some(delivery) = jobs.get(Duration::from_secs(1)).await? {
        let body = String::from_utf8_lossy(&delivery.body).into_owned();
        println!("message {} attempt {}: {body}", delivery.id, delivery.attempt);
        match delivery.ack().await {
            Ok(()) => {}
            // The delivery lapsed and went to someone else: this work does not count.
            Err(QueueError::StaleTag { .. }) => println!("message {} was redelivered meanwhile", delivery.id),
            Err(other) => return Err(other.into()),
        }
    }
    let stats = jobs.stats().await?;
    println!("{} ready, {} in flight, {} acked in all", stats.depth, stats.in_flight, stats.acked_total);
    client.close().await;
    Ok(())
}
