//! The services some tests need: their URL from the environment, or a skip. Under
//! `CI=true` a missing service fails the test instead, so a green CI always means the
//! backend tests ran.

/// The URL in `var` (`REDIS_URL`, `DATABASE_URL`); `None` (the test skips) when it is
/// unset or empty outside CI. Panics under `CI=true`.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true but {var} is not set: the tests that need it cannot be skipped in CI"
            );
            eprintln!("{var} is not set: skipping a test that needs it");
            None
        }
    }
}

/// A key prefix no other test or run shares, under `area`.
pub fn unique_prefix(area: &str, test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("tenancy-test:{area}{test}:{nanos}")
}

/// Starts a `redis-server` of the test's own with `args` and waits until `port`
/// answers; `None` (the test skips) when there is no `redis-server` outside CI.
/// Panics under `CI=true`, or when the server does not come up within 10 s.
pub fn spawn_redis(args: &[&str], port: u16) -> Option<std::process::Child> {
    use std::{process::Stdio, time::Duration};
    let child = std::process::Command::new("redis-server")
        .args(args)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true but redis-server cannot start: {e}"
            );
            eprintln!("no redis-server ({e}): skipping a test that starts its own");
            return None;
        }
    };
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("redis-server did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child)
}

/// The node URLs of the Redis Cluster in `REDIS_CLUSTER_URLS`: comma-separated, as
/// `.ci/redis-cluster.sh start` prints them (`redis://127.0.0.1:7100,redis://127.0.0.1:7101,
/// redis://127.0.0.1:7102`). `None` (the test skips) when it is unset or empty outside
/// CI; panics under `CI=true`, as [`service_url`] does.
pub fn cluster_urls() -> Option<Vec<String>> {
    let urls = service_url("REDIS_CLUSTER_URLS")?;
    let list: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(
        !list.is_empty(),
        "REDIS_CLUSTER_URLS holds no URL: {urls:?}"
    );
    Some(list)
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM mod 16384, of the hash tag, the
/// part between the first `{` and the next `}`, when that is not empty), as
/// `CLUSTER KEYSLOT` gives it.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % CLUSTER_SLOTS
}

const CLUSTER_SLOTS: u16 = 16384;

/// The `cluster-node-timeout` of the nodes [`spawn_cluster`] starts: a master silent
/// this long is suspected, and then failed over if it has a replica.
pub const CLUSTER_NODE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);

/// A Redis Cluster of the test's own (see [`spawn_cluster`]): one child `redis-server`
/// per node, on loopback, its `nodes-PORT.conf` files in a temporary directory of its
/// own. Nodes are numbered from 0 in start order; which of them are masters is what
/// the cluster says ([`OwnCluster::master_for_key`], [`OwnCluster::replicas_of`]).
/// Dropping it kills every node and removes the directory.
#[derive(Debug)]
pub struct OwnCluster {
    dir: std::path::PathBuf,
    nodes: Vec<OwnNode>,
}

#[derive(Debug)]
struct OwnNode {
    port: u16,
    /// `None` once killed.
    child: Option<std::process::Child>,
    /// Stopped with `SIGSTOP`.
    frozen: bool,
}

/// Starts a Redis Cluster of `masters` masters (at least 3) with `replicas_per_master`
/// replicas each, on free loopback ports, and waits until every node sees it ok and
/// every replica is in sync with its master. `None` (the test skips) when there is no
/// `redis-server` or `redis-cli` outside CI; panics under `CI=true`, or when the
/// cluster is not ok within 30 s.
pub fn spawn_cluster(masters: usize, replicas_per_master: usize) -> Option<OwnCluster> {
    use std::{
        process::{Command, Stdio},
        sync::atomic::{AtomicUsize, Ordering},
        time::{Duration, Instant},
    };
    assert!(
        masters >= 3,
        "a Redis Cluster needs at least 3 masters, not {masters}"
    );
    for tool in ["redis-server", "redis-cli"] {
        let ran = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = ran {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true but {tool} cannot run: {e}"
            );
            eprintln!("no {tool} ({e}): skipping a test that starts its own Redis Cluster");
            return None;
        }
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tenancy-redis-cluster-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // From here on, a panic drops the cluster: its nodes are killed, its files removed.
    let mut cluster = OwnCluster {
        dir,
        nodes: Vec::new(),
    };
    let started = Instant::now();
    for _ in 0..masters * (1 + replicas_per_master) {
        // A port the kernel just gave out may be taken again before redis-server binds
        // it (or its bus port): a few tries, each on other ports.
        let mut tries = 0;
        let (port, child) = loop {
            let port = free_cluster_port();
            match cluster.start_node(port) {
                Ok(child) => break (port, child),
                Err(e) if tries < 4 => {
                    eprintln!("{e}; trying another port");
                    tries += 1;
                }
                Err(e) => panic!("{e}"),
            }
        };
        cluster.nodes.push(OwnNode {
            port,
            child: Some(child),
            frozen: false,
        });
    }
    let addrs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    let replicas = replicas_per_master.to_string();
    args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
    let created = redis_cli(&args, Duration::from_secs(60));
    match &created {
        Ok(out) if out.contains("[OK] All 16384 slots covered") => {}
        _ => panic!(
            "redis-cli --cluster create {} failed: {created:?}",
            addrs.join(" ")
        ),
    }
    cluster.wait_ok(Duration::from_secs(30));
    eprintln!(
        "Redis Cluster of {masters} masters, {replicas_per_master} replica(s) each, on ports {:?}: ok in {:?}",
        cluster.nodes.iter().map(|n| n.port).collect::<Vec<_>>(),
        started.elapsed()
    );
    Some(cluster)
}

/// A loopback port that is free now, below 55536 so that its cluster bus port (port +
/// 10000) exists, and with that bus port free too.
fn free_cluster_port() -> u16 {
    use std::net::TcpListener;
    // Held until a port fits, so that the kernel does not give the same one again.
    let mut rejected = Vec::new();
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port <= u16::MAX - 10000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
        rejected.push(listener);
        assert!(rejected.len() < 1000, "no free port with a free bus port");
    }
}

/// `redis-cli args…`: its stdout, or why it failed (it could not run, it exited
/// non-zero, or it took longer than `timeout` and was killed). An error reply is
/// stdout, `ERR …`, not a failure.
fn redis_cli(args: &[&str], timeout: std::time::Duration) -> Result<String, String> {
    use std::process::{Command, Stdio};
    let child = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("redis-cli cannot run: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
        Ok(Ok(out)) => Err(format!(
            "redis-cli {} exited with {}: {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Ok(Err(e)) => Err(format!("redis-cli {}: {e}", args.join(" "))),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            Err(format!(
                "redis-cli {} took longer than {timeout:?}",
                args.join(" ")
            ))
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    port: u16,
    myself: bool,
    master: bool,
    /// Flagged `fail` or `fail?`.
    failing: bool,
    /// The master's id, for a replica.
    master_id: Option<String>,
    slots: Vec<(u16, u16)>,
}

/// The nodes in a `CLUSTER NODES` reply, but for those still in handshake.
fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    let mut nodes = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        if flags.contains(&"handshake") {
            continue;
        }
        // ip:port@cport[,hostname]
        let addr = fields[1].split('@').next().unwrap_or_default();
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let slots = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|a| (a, a)),
            })
            .collect();
        nodes.push(NodeLine {
            id: fields[0].to_owned(),
            port,
            myself: flags.contains(&"myself"),
            master: flags.contains(&"master"),
            failing: flags.contains(&"fail") || flags.contains(&"fail?"),
            master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
            slots,
        });
    }
    nodes
}

impl OwnCluster {
    /// The number of nodes, whatever their state.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The port of node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Every node's URL, `redis://127.0.0.1:PORT`, in node order, whatever its state.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// `redis-cli -p PORT args…` against node `i` (`-c` first in `args` to follow
    /// redirections): its stdout, an error reply included (`MOVED …`, `CLUSTERDOWN …`).
    /// Panics when redis-cli fails or takes over 10 s (a frozen node does not answer).
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let port = self.nodes[i].port.to_string();
        let mut all = vec!["-p", &port];
        all.extend_from_slice(args);
        redis_cli(&all, std::time::Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("node {i}: {e}"))
    }

    /// The node that is the master serving `key`'s slot, as every running node sees it
    /// (waiting up to 5 s for them to agree). Call it when the cluster is settled
    /// ([`OwnCluster::wait_ok`]).
    pub fn master_for_key(&self, key: &str) -> usize {
        let slot = key_slot(key);
        let port = self.agreed(&format!("the master of slot {slot}"), |view| {
            view.iter()
                .find(|n| {
                    n.master && !n.failing && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
                })
                .map(|n| n.port)
        });
        let port = port.unwrap_or_else(|| panic!("no master serves slot {slot} ({key:?})"));
        self.index_of(port)
    }

    /// The nodes that are replicas of node `master`, as every running node sees it
    /// (waiting up to 5 s for them to agree), in node order.
    pub fn replicas_of(&self, master: usize) -> Vec<usize> {
        let port = self.nodes[master].port;
        let ports = self.agreed(&format!("the replicas of node {master}"), |view| {
            let Some(id) = view.iter().find(|n| n.port == port).map(|n| &n.id) else {
                return Vec::new();
            };
            let mut ports: Vec<u16> = view
                .iter()
                .filter(|n| n.master_id.as_ref() == Some(id))
                .map(|n| n.port)
                .collect();
            ports.sort_unstable();
            ports
        });
        let mut replicas: Vec<usize> = ports.into_iter().map(|p| self.index_of(p)).collect();
        replicas.sort_unstable();
        replicas
    }

    /// Kills node `i` (`SIGKILL`), as a crash would. Panics if it is not running.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {i} is not running"));
        child.kill().unwrap();
        child.wait().unwrap();
        node.frozen = false;
    }

    /// Freezes node `i` (`SIGSTOP`): its connections stay open, it answers nothing.
    pub fn stop(&mut self, i: usize) {
        self.signal(i, "-STOP");
        self.nodes[i].frozen = true;
    }

    /// Thaws node `i` (`SIGCONT`) after [`OwnCluster::stop`].
    pub fn cont(&mut self, i: usize) {
        self.signal(i, "-CONT");
        self.nodes[i].frozen = false;
    }

    /// Starts node `i` again (killing it first if it runs) on its port with its
    /// `nodes.conf`, so that it rejoins the cluster (a master failed over meanwhile
    /// comes back as a replica). Returns once it answers; [`OwnCluster::wait_ok`] waits
    /// for the cluster to take it in.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].child.is_some() {
            self.kill(i);
        }
        let child = self
            .start_node(self.nodes[i].port)
            .unwrap_or_else(|e| panic!("node {i} does not restart: {e}"));
        self.nodes[i].child = Some(child);
    }

    /// Waits until the cluster is ok again as its running nodes (not killed, not
    /// frozen) see it: each says `cluster_state:ok`, knows every other running node and
    /// flags none of them failing, sees every slot served by a running master, and, if
    /// a replica, has its link to its master up. Returns how long that took; panics,
    /// saying what is not ok, after `timeout`.
    pub fn wait_ok(&self, timeout: std::time::Duration) -> std::time::Duration {
        let start = std::time::Instant::now();
        loop {
            match self.check_ok() {
                Ok(()) => return start.elapsed(),
                Err(e) if start.elapsed() > timeout => {
                    panic!("the Redis Cluster is not ok after {timeout:?}: {e}")
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }

    fn check_ok(&self) -> Result<(), String> {
        let live = self.live();
        if live.is_empty() {
            return Err("no node is running".into());
        }
        let live_ports: Vec<u16> = live.iter().map(|&i| self.nodes[i].port).collect();
        for &i in &live {
            let info = self.try_cli(i, &["cluster", "info"])?;
            if !info.lines().any(|l| l.trim_end() == "cluster_state:ok") {
                let state = info.lines().next().unwrap_or_default().trim_end();
                return Err(format!("node {i} says {state:?}"));
            }
            let view = parse_cluster_nodes(&self.try_cli(i, &["cluster", "nodes"])?);
            for &port in &live_ports {
                match view.iter().find(|n| n.port == port) {
                    None => return Err(format!("node {i} does not know port {port}")),
                    Some(n) if n.failing => {
                        return Err(format!("node {i} flags port {port} failing"))
                    }
                    Some(_) => {}
                }
            }
            let mut served = vec![false; usize::from(CLUSTER_SLOTS)];
            for n in &view {
                if n.master && !n.failing && live_ports.contains(&n.port) {
                    for &(a, b) in &n.slots {
                        served[usize::from(a)..=usize::from(b)].fill(true);
                    }
                }
            }
            let unserved = served.iter().filter(|s| !**s).count();
            if unserved > 0 {
                return Err(format!(
                    "node {i} sees {unserved} slots with no running master"
                ));
            }
            if view.iter().any(|n| n.myself && !n.master) {
                let repl = self.try_cli(i, &["info", "replication"])?;
                if !repl
                    .lines()
                    .any(|l| l.trim_end() == "master_link_status:up")
                {
                    return Err(format!("replica {i}'s link to its master is not up"));
                }
            }
        }
        Ok(())
    }

    /// The nodes that run and are not frozen.
    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some() && !self.nodes[i].frozen)
            .collect()
    }

    fn try_cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let port = self.nodes[i].port.to_string();
        let mut all = vec!["-p", &port];
        all.extend_from_slice(args);
        redis_cli(&all, std::time::Duration::from_secs(2)).map_err(|e| format!("node {i}: {e}"))
    }

    /// `what`, read from each running node's `CLUSTER NODES` by `read`, once they all
    /// agree (within 5 s; panics otherwise).
    fn agreed<T: PartialEq + std::fmt::Debug>(
        &self,
        what: &str,
        read: impl Fn(&[NodeLine]) -> T,
    ) -> T {
        let start = std::time::Instant::now();
        loop {
            let mut seen: Vec<(usize, T)> = Vec::new();
            for i in self.live() {
                let view = parse_cluster_nodes(&self.cli(i, &["cluster", "nodes"]));
                seen.push((i, read(&view)));
            }
            if seen.windows(2).all(|w| w[0].1 == w[1].1) {
                let (_, value) = seen
                    .pop()
                    .unwrap_or_else(|| panic!("no running node to ask {what}"));
                return value;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "the nodes do not agree on {what}: {seen:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("port {port} is no node of this cluster"))
    }

    fn signal(&self, i: usize, sig: &str) {
        let child = self.nodes[i]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is not running"));
        let ok = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} node {i}");
    }

    /// Starts `redis-server` on `port` as a cluster node with its files in the
    /// cluster's directory, and waits (10 s at most) until the server answering on
    /// `port` is that process.
    fn start_node(&self, port: u16) -> Result<std::process::Child, String> {
        use std::process::{Command, Stdio};
        let log = self.dir.join(format!("redis-{port}.log"));
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .args([
                "--cluster-node-timeout",
                &CLUSTER_NODE_TIMEOUT.as_millis().to_string(),
            ])
            .args(["--save", "", "--appendonly", "no"])
            // A replica's first sync at once, not after the default 5 s wait for others.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server cannot start: {e}"))?;
        let pid_line = format!("process_id:{}", child.id());
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "redis-server on port {port} exited ({status}): {:?}",
                    tail.into_iter().rev().collect::<Vec<_>>()
                ));
            }
            let port_arg = port.to_string();
            let info = redis_cli(
                &["-p", &port_arg, "info", "server"],
                std::time::Duration::from_secs(2),
            );
            if info.is_ok_and(|info| info.lines().any(|l| l.trim_end() == pid_line)) {
                return Ok(child);
            }
            if start.elapsed() > std::time::Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-server on port {port} does not answer"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SIGKILL ends a frozen process too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
