//! A decision cache in front of a slow evaluator.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use dashmap::DashMap;

use super::{Decision, Method, PolicyError, PolicyEvaluator, PolicyRequest};
use crate::{Answer, TenantContext, TenantId};

/// Caches the decisions of a slow evaluator (a policy service, a database) for a TTL.
///
/// Entries are keyed by tenant, its tier and parent, method, path and matched route
/// pattern, capabilities, scopes and the evaluator's
/// [`version`](PolicyEvaluator::version), so a new policy version, or a tenant moved to
/// another tier, is never answered from the old entries. The path is part of the key:
/// the route pattern is found without actix's guards, so two paths of one pattern may
/// run different handlers (`/items/7` and `/items/export`), and an evaluator that
/// judges the path may answer them differently. Only decisions are cached, never
/// errors; requests that matched no route are not cached. A hit
/// is answered without waiting, so the request stays on the pipeline's fast path.
///
/// ```
/// use std::time::Duration;
/// use tenancy_core::policy::{CachedPolicy, Decision, PolicyRequest};
/// use tenancy_core::TenantContext;
///
/// let slow = |_: &TenantContext, _: &PolicyRequest| {
///     Ok(Decision::allow("asked the policy service"))
/// };
/// // Given to a policy stage: actix-tenancy's `TenantPolicy::new(cached)`, or
/// // tower-tenancy's `TenantPolicy::new(cached)`.
/// let cached = CachedPolicy::new(slow, Duration::from_secs(30));
/// # let _ = cached;
/// ```
pub struct CachedPolicy<E> {
    inner: E,
    ttl: Duration,
    max_entries: usize,
    entries: DashMap<Key, (Decision, Instant), foldhash::fast::RandomState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: TenantId,
    tier: Box<str>,
    parent: Option<TenantId>,
    method: Method,
    path: Arc<str>,
    route: Arc<str>,
    capabilities: Vec<String>,
    scopes: Vec<String>,
    version: Option<u64>,
}

impl<E> fmt::Debug for CachedPolicy<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedPolicy")
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl<E: PolicyEvaluator> CachedPolicy<E> {
    /// Caches `inner`'s decisions for `ttl`, at most 10 000 of them.
    pub fn new(inner: E, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            max_entries: 10_000,
            entries: DashMap::default(),
        }
    }

    /// The most decisions kept; when full, expired entries are dropped, and if none
    /// had expired, all of them.
    #[must_use]
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }

    /// Forgets every cached decision (e.g. after the policy service changed).
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// How many decisions are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no decision is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key(&self, tenant: &TenantContext, req: &PolicyRequest) -> Option<Key> {
        Some(Key {
            tenant: tenant.id().clone(),
            tier: tenant.tier().into(),
            parent: tenant.record().parent().cloned(),
            method: req.method().clone(),
            route: req.route.clone()?,
            path: Arc::clone(&req.path),
            capabilities: req.capabilities().to_vec(),
            scopes: req.scopes().to_vec(),
            version: self.inner.version(),
        })
    }

    fn hit(&self, key: &Key) -> Option<Decision> {
        let entry = self.entries.get(key)?;
        let (decision, at) = &*entry;
        (at.elapsed() < self.ttl).then(|| decision.clone())
    }

    fn store(&self, key: Option<Key>, answer: &Result<Decision, PolicyError>) {
        let (Some(key), Ok(decision)) = (key, answer) else {
            return;
        };
        if self.entries.len() >= self.max_entries {
            let ttl = self.ttl;
            self.entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if self.entries.len() >= self.max_entries {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (decision.clone(), Instant::now()));
    }
}

impl<E: PolicyEvaluator> PolicyEvaluator for CachedPolicy<E> {
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        let key = self.key(tenant, req);
        if let Some(hit) = key.as_ref().and_then(|k| self.hit(k)) {
            return Answer::Now(Ok(hit));
        }
        match self.inner.evaluate(tenant, req) {
            Answer::Now(answer) => {
                self.store(key, &answer);
                Answer::Now(answer)
            }
            Answer::Later(later) => Answer::later(async move {
                let answer = later.await;
                self.store(key, &answer);
                answer
            }),
        }
    }

    fn shadow(&self, tenant: &TenantContext, req: &PolicyRequest) -> Option<Decision> {
        self.inner.shadow(tenant, req)
    }

    fn can(&self, tenant: &TenantContext, capability: &str) -> bool {
        self.inner.can(tenant, capability)
    }

    fn version(&self) -> Option<u64> {
        self.inner.version()
    }
}
