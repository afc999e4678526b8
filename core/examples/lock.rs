//! Takes a lock, does some work fenced by its token, releases it.
//!
//! ```text
//! distsync dev &                                  # a local cluster
//! DISTSYNC_ENDPOINTS=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 \
//! DISTSYNC_CA=.distsync-dev/tls/ca.pem cargo run -p distsync --example lock -- reports
//! ```

use std::time::Duration;

use distsync::{Client, ClientTls, LockError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("DISTSYNC_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:7101".into());
    let ca = std::env::var("DISTSYNC_CA").unwrap_or_else(|_| ".distsync-dev/tls/ca.pem".into());
    let name = std::env::args().nth(1).unwrap_or_else(|| "example".into());
    let client = Client::connect(endpoints.split(','), ClientTls::from_ca_file(ca)?).await?;

    match client.lock(&name).timeout(Duration::from_secs(5)).acquire().await {
        Ok(guard) => {
            println!("holding {name:?} with fencing token {}", guard.token());
            // Do the work, but stop as soon as the lock is lost.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => println!("work done"),
                () = guard.lost() => println!("lost the lock; stopping"),
            }
            guard.release().await?;
        }
        Err(LockError::Timeout { .. }) => println!("{name:?} is busy; try later"),
        Err(other) => return Err(other.into()),
    }
    client.close().await;
    Ok(())
}
