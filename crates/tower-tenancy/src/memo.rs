//! Decisions remembered per policy stage, for evaluators that promise they may be
//! ([`PolicyEvaluator::memo_epoch`](tenancy_core::policy::PolicyEvaluator::memo_epoch)):
//! the Tower side of actix-tenancy's per-worker memo.
//!
//! A decision is kept under the tenant's record, the method, the routing path and the
//! route template axum matched (if any), and only for the epoch the evaluator gave: a
//! new epoch (a policy loaded, rolled back or promoted) starts the memo over. The
//! record is named by address, and each entry holds it alive, so the address cannot
//! name another record while an entry does. A request that asks for a capability, a
//! path longer than [`MAX_PATH_LEN`], or an extension method is never remembered.
//!
//! The stage serves every thread of the runtime: the memo is [`SHARDS`] maps, each
//! behind its own lock, held only to look up or insert (never while the application's
//! code runs). It is bounded: a full shard starts over. Its hasher is seeded per memo
//! and keyed for untrusted input (paths are the client's).

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, Hash, Hasher},
    sync::{Arc, Mutex, PoisonError},
};

use http::Method;
use tenancy_core::{policy::Decision, TenantRecord};

/// Decisions remembered at most, per stage.
pub(crate) const MAX_DECISIONS: usize = 4096;
/// The longest path remembered, in bytes.
pub(crate) const MAX_PATH_LEN: usize = 256;
/// Maps, each behind its own lock.
const SHARDS: usize = 8;

/// What a request is looked up by.
#[derive(Clone, Copy)]
pub(crate) struct Probe<'a> {
    record: usize,
    method: u8,
    path: &'a str,
    route: Option<&'a str>,
}

impl<'a> Probe<'a> {
    /// The probe of a request, when it may be remembered (a path no longer than
    /// [`MAX_PATH_LEN`], a standard method).
    #[inline]
    pub(crate) fn of(
        record: &Arc<TenantRecord>,
        method: &Method,
        path: &'a str,
        route: Option<&'a str>,
    ) -> Option<Self> {
        if path.len() > MAX_PATH_LEN || route.is_some_and(|r| r.len() > MAX_PATH_LEN) {
            return None;
        }
        let method = match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            Method::PUT => 3,
            Method::DELETE => 4,
            Method::PATCH => 5,
            Method::OPTIONS => 6,
            Method::CONNECT => 7,
            Method::TRACE => 8,
            _ => return None,
        };
        Some(Self {
            record: Arc::as_ptr(record) as usize,
            method,
            path,
            route,
        })
    }

    /// Whether `entry` was remembered for this probe.
    #[inline]
    fn names(&self, entry: &Entry) -> bool {
        Arc::as_ptr(&entry.record) as usize == self.record
            && entry.method == self.method
            && *entry.path == *self.path
            && entry.route.as_deref() == self.route
    }
}

/// A remembered decision, with the probe it answers (compared in full on every hit:
/// entries are found by the probe's 64-bit hash, and two probes with one hash only
/// displace each other).
struct Entry {
    /// Held, so that its address, which probes name, stays this record's.
    record: Arc<TenantRecord>,
    method: u8,
    path: Box<str>,
    route: Option<Box<str>>,
    decision: Decision,
}

/// The probes' hashes are already mixed (keyed, per memo): the maps use them as they
/// are.
#[derive(Default)]
struct Mixed(u64);

impl Hasher for Mixed {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct Shard {
    epoch: u64,
    entries: HashMap<u64, Entry, BuildHasherDefault<Mixed>>,
}

impl Shard {
    /// Starts over for another epoch.
    #[inline]
    fn at(&mut self, epoch: u64) {
        if self.epoch != epoch {
            self.entries.clear();
            self.epoch = epoch;
        }
    }
}

/// One policy stage's remembered decisions.
#[derive(Default)]
pub(crate) struct Memo {
    /// Keyed for untrusted input (paths are the client's), seeded per memo.
    seed: foldhash::quality::RandomState,
    shards: [Mutex<Shard>; SHARDS],
}

impl Memo {
    fn hash(&self, probe: &Probe<'_>) -> u64 {
        let mut h = self.seed.build_hasher();
        probe.record.hash(&mut h);
        probe.method.hash(&mut h);
        probe.path.hash(&mut h);
        probe.route.hash(&mut h);
        h.finish()
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // The top bits pick the shard; the map uses the whole hash. No code that can
        // panic runs under the lock, but a poisoned one is still usable.
        let i = (hash >> 61) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The decision remembered for `probe` in `epoch`, if there is one.
    #[inline]
    pub(crate) fn get(&self, epoch: u64, probe: Probe<'_>) -> Option<Decision> {
        let hash = self.hash(&probe);
        let mut shard = self.shard(hash);
        shard.at(epoch);
        shard
            .entries
            .get(&hash)
            .filter(|e| probe.names(e))
            .map(|e| e.decision.clone())
    }

    /// Remembers `decision` for `probe` (whose record is `record`) in `epoch`.
    pub(crate) fn remember(
        &self,
        epoch: u64,
        probe: Probe<'_>,
        record: &Arc<TenantRecord>,
        decision: &Decision,
    ) {
        debug_assert_eq!(probe.record, Arc::as_ptr(record) as usize);
        let hash = self.hash(&probe);
        let entry = Entry {
            record: Arc::clone(record),
            method: probe.method,
            path: probe.path.into(),
            route: probe.route.map(Box::from),
            decision: decision.clone(),
        };
        let mut shard = self.shard(hash);
        shard.at(epoch);
        if shard.entries.len() >= MAX_DECISIONS / SHARDS {
            shard.entries.clear();
        }
        shard.entries.insert(hash, entry);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().entries.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use tenancy_core::TenantId;

    use super::*;

    fn record(id: &str) -> Arc<TenantRecord> {
        Arc::new(TenantRecord::new(TenantId::parse(id).unwrap(), "pro"))
    }

    #[test]
    fn remembers_per_record_method_path_route_and_epoch() {
        let memo = Memo::default();
        let (a, b) = (record("a"), record("b"));
        let allow = Decision::allow("ok");
        let probe = Probe::of(&a, &Method::GET, "/items/7", Some("/items/{id}")).unwrap();
        assert!(memo.get(1, probe).is_none());
        memo.remember(1, probe, &a, &allow);
        assert!(memo.get(1, probe).unwrap().allowed);
        let again = String::from("/items/7");
        let same = Probe::of(&a, &Method::GET, &again, Some("/items/{id}")).unwrap();
        assert!(
            memo.get(1, same).is_some(),
            "the same probe from another string"
        );
        for other in [
            Probe::of(&b, &Method::GET, "/items/7", Some("/items/{id}")).unwrap(),
            Probe::of(&a, &Method::POST, "/items/7", Some("/items/{id}")).unwrap(),
            Probe::of(&a, &Method::GET, "/items/8", Some("/items/{id}")).unwrap(),
            Probe::of(&a, &Method::GET, "/items/7", None).unwrap(),
            Probe::of(&a, &Method::GET, "/items/7", Some("/items/{*rest}")).unwrap(),
        ] {
            assert!(memo.get(1, other).is_none());
        }
        // A new epoch forgets.
        assert!(memo.get(2, probe).is_none());
        assert!(memo.get(1, probe).is_none(), "and the old one is gone");
    }

    #[test]
    fn an_entry_found_by_hash_answers_only_its_own_probe() {
        let memo = Memo::default();
        let (a, b) = (record("a"), record("b"));
        let pa = Probe::of(&a, &Method::GET, "/x", None).unwrap();
        let pb = Probe::of(&b, &Method::GET, "/x", None).unwrap();
        // As if a's probe collided with b's: a's entry sits where b's hash leads.
        let hash = memo.hash(&pb);
        memo.shard(hash).entries.insert(
            hash,
            Entry {
                record: Arc::clone(&a),
                method: pa.method,
                path: "/x".into(),
                route: None,
                decision: Decision::allow("a's"),
            },
        );
        assert!(memo.get(0, pb).is_none(), "never a's answer for b");
    }

    #[test]
    fn never_remembers_what_it_cannot_name_and_stays_bounded() {
        let a = record("a");
        let ext = Method::from_bytes(b"PURGE").unwrap();
        assert!(Probe::of(&a, &ext, "/x", None).is_none());
        let long = format!("/{}", "x".repeat(MAX_PATH_LEN));
        assert!(Probe::of(&a, &Method::GET, &long, None).is_none());
        let memo = Memo::default();
        let allow = Decision::allow("ok");
        for i in 0..4 * MAX_DECISIONS {
            let path = format!("/p{i}");
            let probe = Probe::of(&a, &Method::GET, &path, None).unwrap();
            memo.remember(1, probe, &a, &allow);
            assert!(memo.len() <= MAX_DECISIONS);
        }
    }
}
