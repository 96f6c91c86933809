//! Decisions remembered per worker, for evaluators that promise they may be
//! ([`PolicyEvaluator::memo_epoch`](super::PolicyEvaluator::memo_epoch)).
//!
//! A decision is kept under the tenant's record, the method and the routed path, and
//! only for the epoch the evaluator gave and the route table it was made against: a
//! new epoch (a policy loaded, rolled back or promoted) or another table starts the
//! memo over. A hit costs one keyed hash and a comparison, and skips the route
//! pattern lookup, the question and the evaluation. The record is named by address,
//! so each entry holds it alive: the address cannot be reused for another record
//! while an entry names it.
//! A request that asks for a capability, a path longer than the route cache keeps,
//! or an extension method is never remembered. The memo is bounded: full, it starts
//! over. Its hasher is seeded per memo and keyed for untrusted input (paths are the
//! client's).

use std::{
    cell::RefCell,
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, Hash, Hasher},
    sync::Arc,
};

use actix_web::{dev::ResourceMap, http::Method};

use super::Decision;
use crate::{core::TenantRecord, pipeline::MAX_PATH_LEN};

/// Decisions remembered at most, per worker.
pub(crate) const MAX_DECISIONS: usize = 4096;

/// What a request is looked up by: its tenant record's address, its method and its
/// routed path.
#[derive(Clone, Copy)]
pub(crate) struct Probe<'a> {
    record: usize,
    method: u8,
    path: &'a str,
}

impl<'a> Probe<'a> {
    /// The probe of a request, when it may be remembered (a path no longer than the
    /// route cache keeps, a standard method).
    #[inline]
    pub(crate) fn of(record: &Arc<TenantRecord>, method: &Method, path: &'a str) -> Option<Self> {
        if path.len() > MAX_PATH_LEN {
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
        })
    }
}

impl Probe<'_> {
    /// Whether `entry` was remembered for this probe.
    #[inline]
    fn names(&self, entry: &Entry) -> bool {
        Arc::as_ptr(&entry.record) as usize == self.record
            && entry.method == self.method
            && *entry.path == *self.path
    }
}

/// A remembered decision, with the probe it answers (compared in full on every hit:
/// entries are found by the probe's 64-bit hash, and two probes with one hash only
/// displace each other).
struct Entry {
    /// Held, so that its address, which probes name, stays this record's.
    record: Arc<TenantRecord>,
    method: u8,
    /// The path, shared with the route cache.
    path: Arc<str>,
    decision: Decision,
}

/// The probes' hashes are already mixed (keyed, per memo): the map uses them as they
/// are.
#[derive(Default)]
struct Mixed(u64);

impl Hasher for Mixed {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed here; anything else still spreads.
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
struct Inner {
    epoch: u64,
    /// The route table the decisions were made against (compared, never
    /// dereferenced).
    table: usize,
    /// Keyed for untrusted input (paths are the client's), seeded per memo.
    seed: foldhash::quality::RandomState,
    entries: HashMap<u64, Entry, BuildHasherDefault<Mixed>>,
}

impl Inner {
    fn hash(&self, probe: &Probe<'_>) -> u64 {
        let mut h = self.seed.build_hasher();
        probe.record.hash(&mut h);
        probe.method.hash(&mut h);
        probe.path.hash(&mut h);
        h.finish()
    }

    /// Starts over for another epoch or route table.
    #[inline]
    fn at(&mut self, epoch: u64, table: usize) {
        if self.epoch != epoch || self.table != table {
            self.entries.clear();
            (self.epoch, self.table) = (epoch, table);
        }
    }
}

/// One worker's remembered decisions.
#[derive(Default)]
pub(crate) struct Memo {
    inner: RefCell<Inner>,
}

impl Memo {
    /// Applies `f` to the decision remembered for `probe` in `epoch` and `table`, if
    /// there is one.
    #[inline]
    pub(crate) fn with<R>(
        &self,
        epoch: u64,
        table: &ResourceMap,
        probe: Probe<'_>,
        f: impl FnOnce(&Decision) -> R,
    ) -> Option<R> {
        let mut inner = self.inner.borrow_mut();
        inner.at(epoch, std::ptr::from_ref(table) as usize);
        let hash = inner.hash(&probe);
        inner
            .entries
            .get(&hash)
            .filter(|e| probe.names(e))
            .map(|e| f(&e.decision))
    }

    /// Remembers `decision` for `probe` in `epoch` and `table`; `path` is the probe's
    /// path as the route cache shares it, and `record` the record it names.
    pub(crate) fn remember(
        &self,
        epoch: u64,
        table: &ResourceMap,
        probe: Probe<'_>,
        record: &Arc<TenantRecord>,
        path: &Arc<str>,
        decision: &Decision,
    ) {
        debug_assert_eq!(probe.path, &**path);
        debug_assert_eq!(probe.record, Arc::as_ptr(record) as usize);
        let mut inner = self.inner.borrow_mut();
        inner.at(epoch, std::ptr::from_ref(table) as usize);
        if inner.entries.len() >= MAX_DECISIONS {
            inner.entries.clear();
        }
        let hash = inner.hash(&probe);
        let entry = Entry {
            record: Arc::clone(record),
            method: probe.method,
            path: Arc::clone(path),
            decision: decision.clone(),
        };
        inner.entries.insert(hash, entry);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.borrow().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::dev::ResourceDef;

    use super::*;
    use crate::core::TenantId;

    fn record(id: &str) -> Arc<TenantRecord> {
        Arc::new(TenantRecord::new(TenantId::parse(id).unwrap(), "pro"))
    }

    fn table() -> ResourceMap {
        ResourceMap::new(ResourceDef::prefix(""))
    }

    #[test]
    fn remembers_per_record_path_method_epoch_and_table() {
        let memo = Memo::default();
        let (t, other_table) = (table(), table());
        let (a, b) = (record("a"), record("b"));
        let hello: Arc<str> = "/hello".into();
        let allow = Decision::allow("ok");
        let probe = Probe::of(&a, &Method::GET, "/hello").unwrap();
        assert_eq!(memo.with(1, &t, probe, |d| d.allowed), None);
        memo.remember(1, &t, probe, &a, &hello, &allow);
        assert_eq!(memo.with(1, &t, probe, |d| d.allowed), Some(true));
        // The same path from another string is the same entry.
        let again = String::from("/hello");
        let same = Probe::of(&a, &Method::GET, &again).unwrap();
        assert_eq!(memo.with(1, &t, same, |d| d.allowed), Some(true));
        // Another record, method or path is another entry.
        for p in [
            Probe::of(&b, &Method::GET, "/hello").unwrap(),
            Probe::of(&a, &Method::POST, "/hello").unwrap(),
            Probe::of(&a, &Method::GET, "/hello/").unwrap(),
        ] {
            assert_eq!(memo.with(1, &t, p, |d| d.allowed), None);
        }
        // Another route table, or a new epoch, forgets.
        assert_eq!(memo.with(1, &other_table, probe, |d| d.allowed), None);
        assert_eq!(memo.len(), 0);
        memo.remember(1, &t, probe, &a, &hello, &allow);
        assert_eq!(memo.with(2, &t, probe, |d| d.allowed), None);
        assert_eq!(memo.len(), 0);
    }

    #[test]
    fn an_entry_found_by_hash_answers_only_its_own_probe() {
        let (memo, t) = (Memo::default(), table());
        let (a, b) = (record("a"), record("b"));
        let path: Arc<str> = "/hello".into();
        let pa = Probe::of(&a, &Method::GET, "/hello").unwrap();
        let pb = Probe::of(&b, &Method::GET, "/hello").unwrap();
        assert_eq!(memo.with(1, &t, pb, |d| d.allowed), None);
        // As if a's probe collided with b's: a's entry sits where b's hash leads.
        {
            let mut inner = memo.inner.borrow_mut();
            let hash = inner.hash(&pb);
            let entry = Entry {
                record: Arc::clone(&a),
                method: pa.method,
                path: Arc::clone(&path),
                decision: Decision::allow("a's"),
            };
            inner.entries.insert(hash, entry);
        }
        assert_eq!(
            memo.with(1, &t, pb, |d| d.allowed),
            None,
            "never a's answer for b"
        );
    }

    #[test]
    fn never_remembers_what_it_cannot_name_and_stays_bounded() {
        let a = record("a");
        let ext = Method::from_bytes(b"PURGE").unwrap();
        assert!(Probe::of(&a, &ext, "/hello").is_none());
        let long = format!("/{}", "x".repeat(MAX_PATH_LEN));
        assert!(Probe::of(&a, &Method::GET, &long).is_none());

        let (memo, t) = (Memo::default(), table());
        let allow = Decision::allow("ok");
        for i in 0..=MAX_DECISIONS {
            let path: Arc<str> = format!("/p{i}").into();
            let probe = Probe::of(&a, &Method::GET, &path).unwrap();
            memo.remember(1, &t, probe, &a, &path, &allow);
            assert!(memo.len() <= MAX_DECISIONS);
        }
        assert_eq!(memo.len(), 1, "full, it started over");
    }
}
