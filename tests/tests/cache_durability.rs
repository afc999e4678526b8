//! Nothing acknowledged is lost: writes made while Redis is down are served from the directory
//! and written back when Redis returns; a restarted node drops its copies and still reads the
//! right values; TTL expiry happens at one log position on every node; a value Redis lost reads
//! as absent instead of failing forever; bad input gets typed errors.

use std::time::{Duration, Instant};

use distsync::wire::{CacheReport, Request};
use distsync::{Client, ClientError, ServerError};
use distsync_cluster_tests::{Cluster, ClusterOptions, Redis};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
const KEYS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_redis_outages_and_node_restarts() -> anyhow::Result<()> {
    let redis = Redis::start().await?;
    let cluster = Cluster::start(3, ClusterOptions { redis: Some(redis.url()), ..ClusterOptions::default() }).await?;
    let outcome = outages(&cluster, &redis).await;
    cluster.finish(outcome)
}

fn client_homed(cluster: &Cluster, home: u64) -> anyhow::Result<Client> {
    Ok(Client::new_unconnected(cluster.options_for(&cluster.ids()).home(cluster.endpoint(home)))?)
}

async fn pending_write_backs(cluster: &Cluster, id: u64) -> anyhow::Result<u64> {
    let client = Client::new_unconnected(cluster.options_for(&[id]))?;
    Ok(client.cache_stats_on(&cluster.endpoint(id)).await?.pending_write_backs)
}

async fn outages(cluster: &Cluster, redis: &Redis) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let cluster_id = cluster.cluster_id(leader, ELECTION_TIMEOUT).await?;
    let writer = client_homed(cluster, 1)?;
    for key in 0..KEYS / 2 {
        writer.cache().set(format!("k{key}"), format!("before-{key}")).await?;
    }
    // Redis dies; writes keep committing, half of them overwriting written-back values.
    redis.kill()?;
    let mut expected: Vec<String> = (0..KEYS / 2).map(|key| format!("before-{key}")).collect();
    for key in 0..KEYS {
        let value = format!("during-{key}");
        writer.cache().set(format!("k{key}"), &value).await?;
        if key < expected.len() {
            expected[key] = value;
        } else {
            expected.push(value);
        }
    }
    assert!(pending_write_backs(cluster, 2).await? > 0, "writes wait for Redis");
    // Reads on every node, while Redis is down, see the pending values.
    for home in cluster.ids() {
        let reader = client_homed(cluster, home)?;
        let keys: Vec<String> = (0..KEYS).map(|key| format!("k{key}")).collect();
        let values = reader.cache().get_many(&keys).await?;
        for (key, value) in values.iter().enumerate() {
            assert_eq!(value.as_deref(), Some(expected[key].as_bytes()), "k{key} on node {home} with Redis down");
        }
    }
    // A node restarts while Redis is still down: it drops its copies and reads from the log.
    cluster.kill(2)?;
    cluster.restart(2).await?;
    let reader = client_homed(cluster, 2)?;
    assert_eq!(reader.cache().get("k3").await?.as_deref(), Some(expected[3].as_bytes()));

    // Redis returns: everything pending is written back, with the committed values.
    redis.restart().await?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while pending_write_backs(cluster, 1).await? > 0 {
        anyhow::ensure!(Instant::now() < deadline, "write-backs did not drain after Redis returned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (key, value) in expected.iter().enumerate() {
        let stored = redis.cache_entry(&cluster_id, &format!("k{key}")).await?;
        assert_eq!(stored.map(|(_, v)| v), Some(value.clone()), "k{key} in Redis");
    }
    // Redis is SIGKILLed again and restarts from its append-only file: nothing it acknowledged
    // is lost, and every node reads every value (node 3's cache is cold: all from Redis).
    redis.kill()?;
    redis.restart().await?;
    for home in cluster.ids() {
        let reader = client_homed(cluster, home)?;
        for (key, value) in expected.iter().enumerate() {
            assert_eq!(reader.cache().get(format!("k{key}")).await?.as_deref(), Some(value.as_bytes()));
        }
    }
    let restarted = Client::new_unconnected(cluster.options_for(&[2]))?;
    let view = restarted.cache_show_on(&cluster.endpoint(2), "k5").await?;
    assert!(view.copy.is_some(), "node 2 loaded k5 again after its restart");
    let stats = restarted.cache_stats_on(&cluster.endpoint(2)).await?;
    assert!(stats.misses > 0, "node 2's cache started empty: {stats:?}");

    // Redis loses a value (FLUSHALL, as a Redis evicting under memory pressure might): a node
    // without a copy finds it missing, records the loss in the log, and the key reads as absent
    // on every node, instead of failing every read.
    writer.cache().set("fragile", "v").await?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while pending_write_backs(cluster, 1).await? > 0 {
        anyhow::ensure!(Instant::now() < deadline, "fragile was not written back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.cli(&["FLUSHALL"]).await?;
    let never_cached = client_homed(cluster, 2)?;
    assert!(never_cached.cache_show_on(&cluster.endpoint(2), "fragile").await?.copy.is_none());
    assert_eq!(never_cached.cache().get("fragile").await?, None, "a lost value reads as absent");
    assert!(never_cached.cache_stats_on(&cluster.endpoint(2)).await?.lost >= 1);
    assert_eq!(writer.cache().get("fragile").await?, None, "the writer's copy is not served either");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_and_bad_input() -> anyhow::Result<()> {
    let redis = Redis::start().await?;
    let cluster = Cluster::start(3, ClusterOptions { redis: Some(redis.url()), ..ClusterOptions::default() }).await?;
    let outcome = ttl_and_input(&cluster).await;
    cluster.finish(outcome)
}

async fn ttl_and_input(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = client_homed(cluster, 1)?;
    let cache = client.cache();
    cache.set_with_ttl("session:1", "alive", Duration::from_millis(1500)).await?;
    cache.set("forever", "x").await?;
    for home in cluster.ids() {
        let reader = client_homed(cluster, home)?;
        assert_eq!(reader.cache().get("session:1").await?.as_deref(), Some(&b"alive"[..]), "node {home}");
    }
    // After the TTL the key is absent on every node, and every node's directory agrees.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while cache.get("session:1").await?.is_some() {
        anyhow::ensure!(Instant::now() < deadline, "session:1 never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for home in cluster.ids() {
        let reader = client_homed(cluster, home)?;
        assert_eq!(reader.cache().get("session:1").await?, None, "expired on node {home}");
        assert_eq!(reader.cache().get("forever").await?.as_deref(), Some(&b"x"[..]), "no TTL, no expiry");
    }
    let statuses = cluster.wait_applied_equal(&cluster.ids(), SETTLE_TIMEOUT).await?;
    assert!(
        statuses.windows(2).all(|pair| pair[0].state_digest.is_some() && pair[0].state_digest == pair[1].state_digest),
        "replicas agree"
    );

    // Bad input: typed errors, nothing changed.
    fn invalid<T>(result: Result<T, ClientError>) -> bool {
        matches!(result, Err(ClientError::InvalidArgument { .. }))
    }
    assert!(invalid(cache.get(vec![b'k'; distsync::wire::KEY_BYTES_MAX + 1]).await), "oversized key");
    assert!(invalid(cache.get("").await), "empty key");
    assert!(invalid(cache.set("big", vec![0u8; distsync::wire::VALUE_BYTES_MAX + 1]).await), "oversized value");
    assert!(invalid(cache.set_with_ttl("t", "v", Duration::ZERO).await), "zero TTL");
    assert!(invalid(cache.set_with_ttl("t", "v", Duration::from_secs(400 * 86_400)).await), "TTL over a year");
    let too_many: Vec<String> = (0..=distsync::wire::CACHE_GET_KEYS_MAX).map(|k| format!("k{k}")).collect();
    assert_eq!(cache.get_many(&too_many).await?.len(), too_many.len(), "the client splits large batches");
    // A client cannot forge the nodes' internal reports.
    let raw = cluster.raw_connection(1).await?;
    let reply = raw.request(&Request::CacheReport(CacheReport::default()), Duration::from_secs(5)).await?;
    assert!(matches!(reply.body, Err(ServerError::InvalidArgument { .. })), "{:?}", reply.body);
    let reply = raw
        .request(&Request::CacheGet { keys: vec![], consistency: Default::default() }, Duration::from_secs(5))
        .await?;
    assert!(matches!(reply.body, Err(ServerError::InvalidArgument { .. })), "no keys: {:?}", reply.body);
    Ok(())
}
