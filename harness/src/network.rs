//! [`Network`]: a network of hosts for a cluster, one Linux network namespace per node, each
//! joined by a veth pair to a bridge in the harness's own namespace, and packet filters
//! (iptables) inside each node's namespace: cut links in one or both directions and random
//! packet loss, as a real network fails, below the transport (needs root, `ip` and
//! `iptables-restore`).
//!
//! Addresses are private to the machine: the bridge is `10.X.Y.1/24` and node N is
//! `10.X.Y.(10+N)`, where `X.Y` (and the names' tag) is picked at random per network among
//! those not in use, so that networks of runs side by side differ. The harness (clients, Redis)
//! sits on the bridge address, so client traffic reaches every node whatever the filters
//! between nodes say: filters name peers' addresses only.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use distsync_harness::{Cluster, ClusterOptions, Filter, Network};
//! use std::sync::Arc;
//!
//! let network = Arc::new(Network::create(&[1, 2, 3])?);
//! let options = ClusterOptions { network: Some(Arc::clone(&network)), ..ClusterOptions::default() };
//! let cluster = Cluster::start(3, options).await?;
//! // Node 1 hears nobody; the others still hear it.
//! network.apply(&[(1, vec![Filter::from(2), Filter::from(3)])]).await?;
//! network.heal().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use distsync::NodeId;

use crate::process::describe_output;

/// The port every node listens on inside its own namespace.
pub const NODE_PORT: u16 = 7000;

/// Which packets a node's filter drops, by the peer at the other end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Filter {
    /// The peer whose packets are dropped.
    pub peer: NodeId,
    /// Drop packets coming from the peer (else: going to it).
    pub inbound: bool,
    /// The share of those packets dropped, in (0, 1]; 1 drops them all.
    pub probability: f64,
}

impl Filter {
    /// Drops every packet from `peer`.
    pub fn from(peer: NodeId) -> Filter {
        Filter { peer, inbound: true, probability: 1.0 }
    }

    /// Drops every packet to `peer`.
    pub fn to(peer: NodeId) -> Filter {
        Filter { peer, inbound: false, probability: 1.0 }
    }

    /// The same filter, dropping only a share of the packets.
    pub fn with_probability(self, probability: f64) -> Filter {
        debug_assert!(probability > 0.0 && probability <= 1.0, "a probability in (0, 1]: {probability}");
        Filter { probability, ..self }
    }
}

/// One namespace per node, a bridge between them, and the filters in each namespace. Dropping
/// it removes the namespaces and the bridge (stop the nodes first: [`crate::Cluster`] holds its
/// network and drops it after its nodes).
#[derive(Debug)]
pub struct Network {
    /// Distinguishes this network's names from those of runs side by side.
    tag: String,
    /// The second and third octets of `10.X.Y.0/24`.
    subnet: [u8; 2],
    ids: Vec<NodeId>,
    /// What this network made, and removes when dropped: its namespaces, and whether the bridge.
    made: Vec<String>,
    made_bridge: bool,
}

impl Network {
    /// Why a network cannot be made here, if it cannot: not root, or `ip` or `iptables-restore`
    /// missing.
    pub fn unavailable() -> Option<String> {
        if !crate::is_root() {
            return Some("network namespaces need root".to_string());
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        ["ip", "iptables-restore"].into_iter().find_map(|tool| {
            let found = std::env::split_paths(&path).any(|dir| dir.join(tool).is_file());
            (!found).then(|| format!("{tool} is not installed (apt-get install iproute2 iptables)"))
        })
    }

    /// Makes the bridge, a namespace per node with its veth pair, address and route, and empty
    /// filters.
    ///
    /// # Errors
    ///
    /// When [`Network::unavailable`] says why, or an `ip` command fails (everything made so far
    /// is removed again).
    pub fn create(ids: &[NodeId]) -> anyhow::Result<Network> {
        if let Some(reason) = Network::unavailable() {
            anyhow::bail!("cannot make a network of namespaces: {reason}");
        }
        let used = run("ip", &["-o", "-4", "addr"])?;
        let namespaces = run("ip", &["netns", "list"])?;
        let links = run("ip", &["-o", "link"])?;
        // A random tag and subnet, checked against what exists: runs side by side never meet.
        let mut random = std::fs::File::open("/dev/urandom").context("cannot read /dev/urandom")?;
        let (tag, subnet) = (0..64)
            .find_map(|_| {
                let mut bytes = [0u8; 5];
                random.read_exact(&mut bytes).ok()?;
                let tag = format!("{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2]);
                // 10.64.0.0 to 10.127.255.0: far from the usual 10.0.x.x of real networks.
                let subnet = [64 + bytes[3] % 64, bytes[4]];
                let free = !used.contains(&format!("10.{}.{}.", subnet[0], subnet[1]))
                    && !namespaces.contains(&format!("dsn{tag}"))
                    && !links.contains(&format!("dsb{tag}"));
                free.then_some((tag, subnet))
            })
            .context("no free network name and 10.x.y.0/24 subnet")?;
        let mut network = Network { tag, subnet, ids: ids.to_vec(), made: Vec::new(), made_bridge: false };
        let built = network.build();
        built.with_context(|| format!("cannot build network {}", network.tag))?;
        Ok(network)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let bridge = self.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        self.made_bridge = true;
        run("ip", &["addr", "add", &format!("{}/24", self.host_ip()), "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for &id in &self.ids {
            let (namespace, veth) = (self.namespace(id), format!("dsv{}n{id}", self.tag));
            run("ip", &["netns", "add", &namespace])?;
            self.made.push(namespace.clone());
            run("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace])?;
            run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            let address = format!("{}/24", self.node_ip(id));
            run("ip", &["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
            run("ip", &["-n", &namespace, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The harness's address on the bridge: where clients connect from and Redis listens.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], 1)
    }

    /// Node `id`'s address.
    pub fn node_ip(&self, id: NodeId) -> Ipv4Addr {
        let last = u8::try_from(10 + id).expect("node ids of a network are below 246");
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], last)
    }

    /// The name of node `id`'s namespace.
    pub fn namespace(&self, id: NodeId) -> String {
        format!("dsn{}n{id}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("dsb{}", self.tag)
    }

    /// A command that runs `program` inside node `id`'s namespace. `ip netns exec` execs the
    /// program in its own process, so the child's pid is the program's (signals reach it).
    pub fn command(&self, id: NodeId, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace(id)]).arg(program);
        command
    }

    /// Replaces every listed node's filters with the given ones (a node not listed keeps its
    /// own); an empty list clears a node's. Each node's filters change at once
    /// (`iptables-restore`).
    ///
    /// # Errors
    ///
    /// When `iptables-restore` fails in a namespace.
    pub async fn apply(&self, filters: &[(NodeId, Vec<Filter>)]) -> anyhow::Result<()> {
        let rules: BTreeMap<NodeId, String> = filters.iter().map(|(id, list)| (*id, self.ruleset(list))).collect();
        let namespaces: Vec<(String, String)> =
            rules.into_iter().map(|(id, rules)| (self.namespace(id), rules)).collect();
        tokio::task::spawn_blocking(move || {
            namespaces.iter().try_for_each(|(namespace, rules)| {
                restore(namespace, rules).with_context(|| format!("cannot set the filters of {namespace}"))
            })
        })
        .await
        .context("the thread setting filters panicked")?
    }

    /// Makes every node lose `share` (in (0, 1]) of the packets from each of its peers: random
    /// loss on every link, both ways.
    ///
    /// # Errors
    ///
    /// As [`Network::apply`].
    pub async fn lose_everywhere(&self, share: f64) -> anyhow::Result<()> {
        let filters: Vec<(NodeId, Vec<Filter>)> = self
            .ids
            .iter()
            .map(|&id| {
                let peers = self.ids.iter().filter(|&&peer| peer != id);
                (id, peers.map(|&peer| Filter::from(peer).with_probability(share)).collect())
            })
            .collect();
        self.apply(&filters).await
    }

    /// Clears every node's filters.
    ///
    /// # Errors
    ///
    /// As [`Network::apply`].
    pub async fn heal(&self) -> anyhow::Result<()> {
        let all: Vec<(NodeId, Vec<Filter>)> = self.ids.iter().map(|&id| (id, Vec::new())).collect();
        self.apply(&all).await
    }

    /// How many packets node `id`'s filters have dropped since they were last set: proof that a
    /// fault really cut something.
    ///
    /// # Errors
    ///
    /// When `iptables-save` fails in the namespace.
    pub async fn dropped_packets(&self, id: NodeId) -> anyhow::Result<u64> {
        let namespace = self.namespace(id);
        let saved =
            tokio::task::spawn_blocking(move || run("ip", &["netns", "exec", &namespace, "iptables-save", "-c"]))
                .await
                .context("the thread reading filters panicked")??;
        Ok(dropped_in(&saved))
    }

    /// The `iptables-restore` input for one node's filters.
    fn ruleset(&self, filters: &[Filter]) -> String {
        let mut rules = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
        for filter in filters {
            let (chain, direction) = if filter.inbound { ("INPUT", "-s") } else { ("OUTPUT", "-d") };
            let share = if filter.probability < 1.0 {
                format!(" -m statistic --mode random --probability {:.4}", filter.probability)
            } else {
                String::new()
            };
            rules.push_str(&format!("-A {chain} {direction} {}/32{share} -j DROP\n", self.node_ip(filter.peer)));
        }
        rules.push_str("COMMIT\n");
        rules
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for namespace in &self.made {
            let _ = run("ip", &["netns", "del", namespace]);
        }
        if self.made_bridge {
            let _ = run("ip", &["link", "del", &self.bridge()]);
        }
    }
}

/// Runs a short command to completion; returns its stdout.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    anyhow::ensure!(output.status.success(), "{program} {} failed: {}", args.join(" "), describe_output(&output));
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The packets counted by the DROP rules of `iptables-save -c` output (`[packets:bytes] -A …`).
fn dropped_in(saved: &str) -> u64 {
    saved
        .lines()
        .filter(|line| line.ends_with("-j DROP"))
        .filter_map(|line| line.strip_prefix('[')?.split(':').next()?.parse::<u64>().ok())
        .sum()
}

/// Loads `rules` into `namespace`'s filter table, replacing what was there.
fn restore(namespace: &str, rules: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace, "iptables-restore"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run iptables-restore")?;
    child.stdin.take().context("stdin was piped")?.write_all(rules.as_bytes())?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(output.status.success(), "iptables-restore failed: {}\n{rules}", describe_output(&output));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_iptables_rules_naming_peers() {
        let network =
            Network { tag: "test".into(), subnet: [70, 1], ids: Vec::new(), made: Vec::new(), made_bridge: false };
        let rules = network.ruleset(&[Filter::from(2), Filter::to(3).with_probability(0.25)]);
        assert!(rules.starts_with("*filter\n"), "{rules}");
        assert!(rules.contains("-A INPUT -s 10.70.1.12/32 -j DROP\n"), "{rules}");
        assert!(rules.contains("-A OUTPUT -d 10.70.1.13/32 -m statistic --mode random --probability 0.2500 -j DROP\n"));
        assert!(rules.ends_with("COMMIT\n"));
        assert!(!network.ruleset(&[]).contains("-A "), "no filters, no rules");
    }

    #[test]
    fn dropped_packets_are_counted_from_drop_rules_only() {
        let saved = "*filter\n:INPUT ACCEPT [10:800]\n[7:420] -A INPUT -s 10.70.1.12/32 -j DROP\n\
                     [5:300] -A OUTPUT -d 10.70.1.13/32 -m statistic --mode random --probability 0.2500 -j DROP\n\
                     [9:900] -A OUTPUT -d 10.70.1.14/32 -j ACCEPT\nCOMMIT\n";
        assert_eq!(dropped_in(saved), 12);
        assert_eq!(dropped_in("*filter\nCOMMIT\n"), 0);
    }
}
