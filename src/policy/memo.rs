//! Decisions remembered per worker, for evaluators that promise they may be
//! ([`PolicyEvaluator::memo_epoch`](super::PolicyEvaluator::memo_epoch)).
//!
//! A decision is kept under the tenant's record, the method and the routed path, and
//! only for the epoch the evaluator gave: a new epoch (a policy loaded, rolled back or
//! promoted) starts the memo over. The record and the path are named by address, so
//! each entry holds both alive: an address cannot be reused for another record or path
//! while an entry names it. A request that asks for a capability, a path the route
//! cache does not remember, or an extension method is never remembered. The memo is
//! bounded: full, it starts over.

use std::{cell::RefCell, collections::HashMap, sync::Arc};

use actix_web::http::Method;

use super::Decision;
use crate::{core::TenantRecord, pipeline::RoutedPath};

/// Decisions remembered at most, per worker.
pub(crate) const MAX_DECISIONS: usize = 4096;

/// What a decision is remembered under: the record's and the interned path's
/// addresses, and the method.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    record: usize,
    path: usize,
    method: u8,
}

impl Key {
    /// The key of a request, when it may be remembered.
    #[inline]
    pub(crate) fn of(
        record: &Arc<TenantRecord>,
        routed: &RoutedPath,
        method: &Method,
    ) -> Option<Self> {
        if !routed.is_remembered() {
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
            path: Arc::as_ptr(&routed.path).cast::<u8>() as usize,
            method,
        })
    }
}

struct Entry {
    decision: Decision,
    // Held so that the addresses in the key stay theirs.
    _record: Arc<TenantRecord>,
    _path: Arc<str>,
}

#[derive(Default)]
struct Inner {
    epoch: u64,
    entries: HashMap<Key, Entry, foldhash::fast::RandomState>,
}

/// One worker's remembered decisions.
#[derive(Default)]
pub(crate) struct Memo {
    inner: RefCell<Inner>,
}

impl Memo {
    /// Whether the decision under `key` in `epoch` is remembered, and if so, applies
    /// `f` to it. A new epoch forgets every decision first.
    #[inline]
    pub(crate) fn with<R>(
        &self,
        epoch: u64,
        key: Key,
        f: impl FnOnce(&Decision) -> R,
    ) -> Option<R> {
        let mut inner = self.inner.borrow_mut();
        if inner.epoch != epoch {
            inner.entries.clear();
            inner.epoch = epoch;
        }
        inner.entries.get(&key).map(|e| f(&e.decision))
    }

    /// Remembers `decision` under `key` in `epoch`.
    pub(crate) fn remember(
        &self,
        epoch: u64,
        key: Key,
        record: &Arc<TenantRecord>,
        path: &Arc<str>,
        decision: &Decision,
    ) {
        let mut inner = self.inner.borrow_mut();
        if inner.epoch != epoch {
            inner.entries.clear();
            inner.epoch = epoch;
        }
        if inner.entries.len() >= MAX_DECISIONS {
            inner.entries.clear();
        }
        inner.entries.insert(
            key,
            Entry {
                decision: decision.clone(),
                _record: Arc::clone(record),
                _path: Arc::clone(path),
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.borrow().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::TenantId;

    fn record(id: &str) -> Arc<TenantRecord> {
        Arc::new(TenantRecord::new(TenantId::parse(id).unwrap(), "pro"))
    }

    fn routed(path: &str) -> RoutedPath {
        RoutedPath {
            path: path.into(),
            route: None,
        }
    }

    #[test]
    fn remembers_per_record_path_method_and_epoch() {
        let memo = Memo::default();
        let (a, b) = (record("a"), record("b"));
        let hello = routed("/hello");
        let allow = Decision::allow("ok");
        let key = Key::of(&a, &hello, &Method::GET).unwrap();
        assert_eq!(memo.with(1, key, |d| d.allowed), None);
        memo.remember(1, key, &a, &hello.path, &allow);
        assert_eq!(memo.with(1, key, |d| d.allowed), Some(true));
        // Another record, method or interned path is another key.
        let other = [
            Key::of(&b, &hello, &Method::GET).unwrap(),
            Key::of(&a, &hello, &Method::POST).unwrap(),
            Key::of(&a, &routed("/hello"), &Method::GET).unwrap(),
        ];
        for k in other {
            assert!(k != key);
            assert_eq!(memo.with(1, k, |d| d.allowed), None);
        }
        // A new epoch forgets.
        assert_eq!(memo.with(2, key, |d| d.allowed), None);
        assert_eq!(memo.len(), 0);
    }

    #[test]
    fn never_remembers_what_it_cannot_name_and_stays_bounded() {
        let a = record("a");
        let ext = Method::from_bytes(b"PURGE").unwrap();
        assert!(Key::of(&a, &routed("/hello"), &ext).is_none());
        let long = routed(&format!("/{}", "x".repeat(crate::pipeline::MAX_PATH_LEN)));
        assert!(Key::of(&a, &long, &Method::GET).is_none());

        let memo = Memo::default();
        let allow = Decision::allow("ok");
        let paths: Vec<_> = (0..=MAX_DECISIONS)
            .map(|i| routed(&format!("/p{i}")))
            .collect();
        for p in &paths {
            let key = Key::of(&a, p, &Method::GET).unwrap();
            memo.remember(1, key, &a, &p.path, &allow);
            assert!(memo.len() <= MAX_DECISIONS);
        }
        assert_eq!(memo.len(), 1, "full, it started over");
    }
}
