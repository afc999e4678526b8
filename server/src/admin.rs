//! The admin HTTP port: `GET /metrics` (Prometheus text format) and `GET /status` (JSON).
//!
//! A deliberately small HTTP/1.1 responder: one request per connection, no keep-alive, bounded
//! request size. Enough for Prometheus scrapes and curl, without an HTTP framework.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::node::Node;

/// Largest request head read; scrapes send a few hundred bytes.
const REQUEST_BYTES_MAX: usize = 8 * 1024;

/// Serves admin HTTP on `listener` until `stopped` flips.
pub async fn serve(node: Arc<Node>, listener: tokio::net::TcpListener, mut stopped: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(error) = tokio::time::timeout(Duration::from_secs(5), respond(node, stream)).await {
                tracing::debug!(%error, "admin request timed out");
            }
        });
    }
}

async fn respond(node: Arc<Node>, mut stream: tokio::net::TcpStream) {
    let mut request = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < REQUEST_BYTES_MAX {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics(&node)),
        "/status" => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(&node.status()).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
        ),
        _ => ("404 Not Found", "text/plain", "try /metrics or /status\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Prometheus text exposition of the node's status.
pub fn metrics(node: &Node) -> String {
    let status = node.status();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{node=\"{}\"}} {value}", status.id);
    };
    gauge("distsync_raft_term", "Current Raft term.", status.term);
    gauge("distsync_raft_is_leader", "1 if this node is the leader.", u64::from(status.leader == Some(status.id)));
    gauge("distsync_raft_last_log_index", "Index of the last log entry.", status.last_log_index);
    gauge("distsync_raft_committed_index", "Highest committed index known.", status.committed);
    gauge("distsync_raft_applied_index", "Highest applied index.", status.applied);
    gauge("distsync_raft_snapshot_index", "Index covered by the latest snapshot.", status.snapshot);
    gauge("distsync_sessions", "Open client sessions.", status.sessions);
    gauge("distsync_kv_keys", "Keys in the replicated register.", status.keys);
    gauge("distsync_locks", "Locks held or awaited.", status.locks);
    gauge("distsync_queues", "Queues, dead-letter queues included.", status.queues);
    gauge(
        "distsync_inflight_request_bytes",
        "Bytes of client requests being read and handled (bounded by --inflight-request-bytes).",
        node.admission().request_bytes_in_use(),
    );
    let cache = node.cache_stats();
    gauge(
        "distsync_cache_pending_write_backs",
        "Cache writes waiting for write-back to Redis.",
        cache.pending_write_backs,
    );
    gauge("distsync_cache_bytes", "Bytes held by this node's cache copies.", cache.bytes);
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{}\"}} {value}", status.id);
    };
    counter("distsync_cache_hits_total", "Cache reads served from this node's copy.", cache.hits);
    counter("distsync_cache_misses_total", "Cache reads that fetched the value from Redis.", cache.misses);
    counter("distsync_cache_pending_reads_total", "Cache reads of values pending write-back.", cache.pending_reads);
    counter(
        "distsync_cache_invalidations_total",
        "Copies invalidated by writes, deletions and expiries.",
        cache.invalidations,
    );
    counter("distsync_cache_evictions_total", "Copies evicted to make room.", cache.evictions);
    counter("distsync_cache_write_backs_total", "Writes this node wrote back to Redis as leader.", cache.write_backs);
    counter(
        "distsync_cache_write_back_failures_total",
        "Failed write-back attempts (retried).",
        cache.write_back_failures,
    );
    counter(
        "distsync_cache_write_back_skipped_total",
        "Write-backs Redis skipped: it held that version or a newer one.",
        cache.write_back_skipped,
    );
    counter(
        "distsync_busy_answers_total",
        "Client requests answered Busy (a budget was full).",
        node.admission().busy_answers(),
    );
    counter("distsync_cache_lost_total", "Values Redis no longer held when read.", cache.lost);
    let _ = writeln!(
        out,
        "# HELP distsync_cache_copies This node's cache copies by MESI state.\n# TYPE distsync_cache_copies gauge"
    );
    for (state, value) in [("M", cache.modified), ("E", cache.exclusive), ("S", cache.shared), ("I", cache.invalid)] {
        let _ = writeln!(out, "distsync_cache_copies{{node=\"{}\",state=\"{state}\"}} {value}", status.id);
    }
    let _ = writeln!(
        out,
        "# HELP distsync_peer_last_heard_seconds Seconds since this node last heard from a peer.\n\
         # TYPE distsync_peer_last_heard_seconds gauge"
    );
    for peer in &status.peers {
        if let Some(ms) = peer.last_heard_ms {
            let _ = writeln!(
                out,
                "distsync_peer_last_heard_seconds{{node=\"{}\",peer=\"{}\"}} {:.3}",
                status.id,
                peer.id,
                ms as f64 / 1000.0
            );
        }
    }
    out
}
