//! `distsync status`: each node's own view, asked of each node alone.

use std::process::ExitCode;

use crate::connect::Target;

/// Prints every node's status, with its state digest when `digest`.
pub(crate) async fn run(target: &Target, json: bool, digest: bool) -> anyhow::Result<ExitCode> {
    let client = target.unconnected()?;
    let endpoints = target.endpoints()?;
    let answers = ask_all(endpoints.iter().cloned().map(|endpoint| {
        let client = client.clone();
        async move {
            let answer = if digest {
                client.node_status_with_digest(&endpoint).await
            } else {
                client.node_status(&endpoint).await
            };
            (endpoint, answer)
        }
    }))
    .await;
    let reachable = answers.iter().filter(|(_, answer)| answer.is_ok()).count();
    if json {
        let nodes: Vec<serde_json::Value> = answers
            .iter()
            .map(|(endpoint, answer)| match answer {
                Ok(status) => serde_json::to_value(status).expect("serializable"),
                Err(error) => {
                    serde_json::json!({ "address": endpoint, "role": "unreachable", "error": error.to_string() })
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&nodes)?);
    } else {
        println!(
            "{:<4} {:<22} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10}  {}peers (last heard)",
            "ID",
            "ADDRESS",
            "ROLE",
            "TERM",
            "LEADER",
            "LAST LOG",
            "COMMITTED",
            "APPLIED",
            if digest { format!("{:<28} ", "DIGEST (AT APPLIED)") } else { String::new() }
        );
        for (endpoint, answer) in &answers {
            match answer {
                Ok(s) => {
                    let peers: Vec<String> = s
                        .peers
                        .iter()
                        .map(|p| match p.last_heard_ms {
                            Some(ms) => format!("{}:{}ms", p.id, ms),
                            None => format!("{}:never", p.id),
                        })
                        .collect();
                    let leader = s.leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
                    let state_digest = match s.state_digest {
                        Some(d) if digest => format!("{:<28} ", format!("{:#018x} ({})", d.digest, d.applied)),
                        _ => String::new(),
                    };
                    println!(
                        "{:<4} {:<22} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10}  {}{}",
                        s.id,
                        s.address,
                        s.role.as_str(),
                        s.term,
                        leader,
                        s.last_log_index,
                        s.committed,
                        s.applied,
                        state_digest,
                        peers.join(" ")
                    );
                }
                Err(error) => println!("{:<4} {:<22} {:<10} {error}", "?", endpoint, "unreachable"),
            }
        }
    }
    if reachable == 0 {
        eprintln!("error: no node answered at {}; is the cluster running and is --ca its CA?", endpoints.join(","));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs futures concurrently and collects their outputs in order.
pub(crate) async fn ask_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("status task panicked"));
    }
    outputs
}
