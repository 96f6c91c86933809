//! The Redis Cluster the tests run against, checked without the library: the one CI
//! starts (`.ci/redis-cluster.sh`, its node URLs in `REDIS_CLUSTER_URLS`; skipped when
//! that is unset outside CI) answers as a cluster of three masters that covers every
//! slot, and a cluster of a test's own (`common::services::spawn_cluster`) fails a
//! killed master over to its replica, freezes and thaws, and takes a restarted node
//! back. The times to start and to fail over are printed (`--nocapture`).

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
}

use common::services::{cluster_urls, key_slot, spawn_cluster};

/// A RESP reply.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

/// A connection to one node, RESP by hand.
struct Conn {
    addr: String,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Self {
        let stream =
            TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            addr: addr.to_owned(),
            reader: BufReader::new(stream),
        }
    }

    fn cmd(&mut self, args: &[&str]) -> Reply {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.reader.get_mut().write_all(out.as_bytes()).unwrap();
        self.read()
    }

    fn read(&mut self) -> Reply {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{}: no reply: {e}", self.addr));
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1.min(line.len()));
        match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let Ok(len) = usize::try_from(rest.parse::<i64>().unwrap()) else {
                    return Reply::Bulk(None);
                };
                let mut buf = vec![0; len + 2];
                self.reader.read_exact(&mut buf).unwrap();
                buf.truncate(len);
                Reply::Bulk(Some(String::from_utf8(buf).unwrap()))
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                Reply::Array((0..n).map(|_| self.read()).collect())
            }
            _ => panic!("{}: not a RESP reply: {line:?}", self.addr),
        }
    }

    fn text(&mut self, args: &[&str]) -> String {
        match self.cmd(args) {
            Reply::Bulk(Some(s)) | Reply::Simple(s) => s,
            other => panic!("{}: {args:?} answered {other:?}", self.addr),
        }
    }
}

/// `host:port` from `redis://host:port`.
fn addr_of(url: &str) -> String {
    let addr = url
        .strip_prefix("redis://")
        .unwrap_or_else(|| panic!("REDIS_CLUSTER_URLS: {url:?} is not redis://HOST:PORT"));
    let addr = addr.trim_end_matches('/');
    assert!(
        addr.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
        "REDIS_CLUSTER_URLS: {url:?} is not redis://HOST:PORT"
    );
    addr.to_owned()
}

/// The `host:port` of the masters serving slots, from a `CLUSTER NODES` reply.
fn masters_with_slots(nodes: &str) -> BTreeSet<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags: Vec<&str> = f.get(2)?.split(',').collect();
            let serving = flags.contains(&"master")
                && !flags.contains(&"fail")
                && !flags.contains(&"fail?")
                && f.len() > 8;
            serving.then(|| f[1].split('@').next().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn key_slot_matches_known_slots() {
    // The CRC16/XMODEM check value (0x31C3, below 16384), and hash tags (an empty `{}`
    // is no tag).
    assert_eq!(key_slot("123456789"), 0x31C3);
    assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
    assert_ne!(key_slot("foo{}{bar}"), key_slot("bar"));
    assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
    assert_eq!(key_slot("{t}x"), key_slot("t"));
}

/// The cluster in `REDIS_CLUSTER_URLS`: every node says it is ok, with three masters
/// covering the 16384 slots, all of them among the URLs; a key written through the
/// first URL goes to the master its slot says (the redirection followed by hand), and
/// keys reach all three masters.
#[test]
fn ci_cluster_is_ok_with_three_masters() {
    let Some(urls) = cluster_urls() else {
        return;
    };
    let addrs: Vec<String> = urls.iter().map(|u| addr_of(u)).collect();
    let given: BTreeSet<String> = addrs.iter().cloned().collect();
    for addr in &addrs {
        let mut conn = Conn::open(addr);
        let info = conn.text(&["CLUSTER", "INFO"]);
        for want in [
            "cluster_state:ok",
            "cluster_slots_assigned:16384",
            "cluster_slots_ok:16384",
            "cluster_size:3",
        ] {
            assert!(
                info.lines().any(|l| l == want),
                "{addr}: CLUSTER INFO has no {want}:\n{info}"
            );
        }
        let masters = masters_with_slots(&conn.text(&["CLUSTER", "NODES"]));
        assert_eq!(masters.len(), 3, "{addr} sees masters {masters:?}");
        assert!(
            masters.is_subset(&given),
            "{addr} sees masters {masters:?}, not all in REDIS_CLUSTER_URLS {given:?}"
        );
    }

    let prefix = common::services::unique_prefix("cluster-infra:", "moved");
    let mut first = Conn::open(&addrs[0]);
    let mut reached = BTreeSet::new();
    let mut moved = 0;
    for n in 0..1000 {
        if reached.len() == 3 {
            break;
        }
        let key = format!("{prefix}:{n}");
        let value = format!("v{n}");
        let mut owner = match first.cmd(&["SET", &key, &value, "EX", "60"]) {
            Reply::Simple(ok) if ok == "OK" => Conn::open(&addrs[0]),
            Reply::Error(e) if e.starts_with("MOVED ") => {
                moved += 1;
                let parts: Vec<&str> = e.split(' ').collect();
                assert_eq!(parts.len(), 3, "{e}");
                assert_eq!(parts[1], key_slot(&key).to_string(), "{key}: {e}");
                assert!(
                    given.contains(parts[2]),
                    "{e}: not a node in REDIS_CLUSTER_URLS"
                );
                let mut owner = Conn::open(parts[2]);
                assert_eq!(
                    owner.cmd(&["SET", &key, &value, "EX", "60"]),
                    Reply::Simple("OK".into())
                );
                owner
            }
            other => panic!("SET {key}: {other:?}"),
        };
        assert_eq!(owner.cmd(&["GET", &key]), Reply::Bulk(Some(value)));
        assert_eq!(owner.cmd(&["DEL", &key]), Reply::Int(1));
        reached.insert(owner.addr.clone());
    }
    assert_eq!(reached.len(), 3, "keys reached only {reached:?}");
    assert!(moved > 0, "no key was redirected");
}

/// A cluster of the test's own, 3 masters with a replica each: the master serving
/// `{t}x` killed, its replica takes over with the value it had (the replica had
/// acknowledged it), the key is written and read again through another node, and the
/// killed master, restarted, comes back as the new master's replica.
#[test]
fn own_cluster_fails_a_killed_master_over_to_its_replica() {
    let started = Instant::now();
    let Some(mut cluster) = spawn_cluster(3, 1) else {
        return;
    };
    eprintln!("3 masters + 3 replicas started in {:?}", started.elapsed());
    assert_eq!(cluster.len(), 6);
    assert_eq!(cluster.urls().len(), 6);
    for k in [
        "{t}x",
        "123456789",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "{user1000}.following",
    ] {
        assert_eq!(
            cluster.cli(0, &["cluster", "keyslot", k]).trim(),
            key_slot(k).to_string(),
            "the slot of {k:?}"
        );
    }
    let key = "{t}x";

    let master = cluster.master_for_key(key);
    let replicas = cluster.replicas_of(master);
    assert_eq!(replicas.len(), 1, "node {master}'s replicas: {replicas:?}");
    let mut conn = Conn::open(&format!("127.0.0.1:{}", cluster.port(master)));
    assert_eq!(
        conn.cmd(&["SET", key, "before"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        conn.cmd(&["WAIT", "1", "5000"]),
        Reply::Int(1),
        "the replica acknowledges"
    );
    drop(conn);

    cluster.kill(master);
    let failover = cluster.wait_ok(Duration::from_secs(15));
    eprintln!("master (node {master}) killed: failed over in {failover:?}");
    let promoted = cluster.master_for_key(key);
    assert_eq!(
        promoted, replicas[0],
        "the killed master's replica serves {key}"
    );
    let via = (0..cluster.len())
        .find(|&i| i != master && i != promoted)
        .unwrap();
    assert_eq!(cluster.cli(via, &["-c", "GET", key]).trim(), "before");
    assert_eq!(cluster.cli(via, &["-c", "SET", key, "after"]).trim(), "OK");
    assert_eq!(cluster.cli(via, &["-c", "GET", key]).trim(), "after");
    // Without -c, a node that does not serve the key redirects to the one that does.
    assert_eq!(
        cluster.cli(via, &["GET", key]).trim(),
        format!(
            "MOVED {} 127.0.0.1:{}",
            key_slot(key),
            cluster.port(promoted)
        )
    );

    cluster.restart(master);
    let rejoined = cluster.wait_ok(Duration::from_secs(15));
    eprintln!("node {master} restarted: back as a replica in {rejoined:?}");
    assert_eq!(cluster.replicas_of(promoted), vec![master]);
    assert_eq!(cluster.master_for_key(key), promoted);
    assert_eq!(cluster.cli(master, &["-c", "GET", key]).trim(), "after");
}

/// A cluster of the test's own without replicas: a master frozen (`SIGSTOP`) past the
/// node timeout is failed by the others, and with no replica to take over the cluster
/// is down; thawed, the cluster is ok again with the same master, and serves the key.
#[test]
fn own_cluster_without_replicas_is_down_while_a_master_is_frozen() {
    let Some(mut cluster) = spawn_cluster(3, 0) else {
        return;
    };
    let key = "{t}x";
    let frozen = cluster.master_for_key(key);
    let other = (frozen + 1) % 3;
    assert_eq!(cluster.replicas_of(frozen), Vec::<usize>::new());
    assert_eq!(cluster.cli(other, &["-c", "SET", key, "1"]).trim(), "OK");

    cluster.stop(frozen);
    let t = Instant::now();
    while !cluster
        .cli(other, &["cluster", "info"])
        .lines()
        .any(|l| l.trim_end() == "cluster_state:fail")
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "node {other} still sees the cluster ok with node {frozen} frozen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "master (node {frozen}) frozen: cluster down after {:?}",
        t.elapsed()
    );
    let refused = cluster.cli(other, &["SET", "elsewhere", "1"]);
    assert!(refused.starts_with("CLUSTERDOWN"), "{refused}");

    cluster.cont(frozen);
    let back = cluster.wait_ok(Duration::from_secs(15));
    eprintln!("node {frozen} thawed: cluster ok in {back:?}");
    assert_eq!(cluster.master_for_key(key), frozen);
    assert_eq!(cluster.cli(other, &["-c", "GET", key]).trim(), "1");
}
