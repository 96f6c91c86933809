//! The tenant registry: who the tenants are, and whether each may be served now.
//!
//! A [`TenantRegistry`] answers a lookup with one of three outcomes, and the resolver
//! keeps them apart:
//!
//! | lookup | resolver answers |
//! | --- | --- |
//! | `Ok(Some(record))` | by the record's [`TenantStatus`] (see [`StatusRules`]) |
//! | `Ok(None)`, not found | `403 tenant_forbidden`, byte for byte the same as a suspended tenant |
//! | `Err(_)`, unavailable | `503 tenant_unavailable`; never a pass, never "unknown tenant" |
//!
//! Ships with [`InMemoryRegistry`] (built in code, or loaded from JSON or TOML) and
//! [`CachedRegistry`], a caching wrapper for any registry with a TTL, a short negative
//! TTL, single-flight misses and a bounded stale-if-error window. With the `postgres`
//! feature, `postgres::PostgresRegistry` keeps tenants in PostgreSQL and its listener
//! keeps every replica's cache in step.

mod cache;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::{borrow::Cow, fmt, sync::Arc};

pub use crate::core::{Access, StatusRules, TenantRecord, TenantStatus};
pub use cache::{CacheConfig, CachedRegistry};
pub use memory::InMemoryRegistry;
#[cfg(feature = "postgres")]
pub use postgres::PostgresRegistry;

use crate::core::TenantId;

/// The outcome of a lookup that answered: the record, or `None` for an unknown id.
pub type Lookup = Option<Arc<TenantRecord>>;

/// A source of tenant records.
///
/// Implement [`lookup`](TenantRegistry::lookup); return `Ok(None)` only when the
/// backend answered that the tenant does not exist, and `Err` whenever it could not
/// answer (a timeout, a lost connection, a parse error). Mixing those two up is how an
/// outage turns into "unknown tenant" for everyone, or worse, into a pass.
///
/// [`lookup_ready`](TenantRegistry::lookup_ready) is the hot path: a registry that can
/// answer without waiting (an in-memory map, a warm cache) returns the answer there
/// and the resolver never creates a future for it.
#[async_trait::async_trait]
pub trait TenantRegistry: Send + Sync + 'static {
    /// Looks `id` up: `Ok(Some(_))` found, `Ok(None)` not found, `Err(_)` unavailable.
    async fn lookup(&self, id: &TenantId) -> Result<Lookup, RegistryError>;

    /// The answer, if it is available without waiting; `None` means "call
    /// [`lookup`](TenantRegistry::lookup)". The default never answers early.
    ///
    /// `id` has passed the resolver's [`TenantIdRule`](crate::TenantIdRule); it is a
    /// plain `&str` so the warm path allocates nothing. A returned record must be the
    /// record of `id`: the resolver checks, and fails closed if it is not.
    fn lookup_ready(&self, id: &str) -> Option<Lookup> {
        let _ = id;
        None
    }

    /// [`lookup_ready`](Self::lookup_ready) at the request's monotonic time `now`,
    /// which the pipeline reads once for every stage. A registry that ages its answers
    /// (a cache) may use it instead of reading the clock; the default ignores it.
    fn lookup_ready_at(&self, id: &str, now: std::time::Instant) -> Option<Lookup> {
        let _ = now;
        self.lookup_ready(id)
    }

    /// [`lookup_ready_at`](Self::lookup_ready_at), and, with a found record, a
    /// [`Lease`]: the registry's promise that it would answer `id` with the same record
    /// for as long as [`lease_holds`](Self::lease_holds) says so. The resolver keeps the
    /// record per worker under the lease and skips the lookup while it holds. The
    /// default gives no lease.
    fn lookup_leased_at(
        &self,
        id: &str,
        now: std::time::Instant,
    ) -> Option<(Lookup, Option<Lease>)> {
        self.lookup_ready_at(id, now).map(|answer| (answer, None))
    }

    /// Whether a lease this registry gave is still good at the request's monotonic
    /// time `now`. Checked on every request that relies on it, so it must be cheap
    /// (a clock comparison and an atomic load) and turn `false` as soon as the record
    /// it covers may have changed (an invalidation, an expiry). The default: never.
    fn lease_holds(&self, lease: &Lease, now: std::time::Instant) -> bool {
        let _ = (lease, now);
        false
    }
}

/// A registry's promise about one answer (see
/// [`TenantRegistry::lookup_leased_at`]): good until `until` on the monotonic clock,
/// and while the registry's `epoch`, a counter it moves on every change that could
/// alter an answer, has not moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The end of the answer's freshness.
    pub until: std::time::Instant,
    /// The registry's epoch when the answer was read.
    pub epoch: u64,
}

#[async_trait::async_trait]
impl<R: TenantRegistry + ?Sized> TenantRegistry for Arc<R> {
    async fn lookup(&self, id: &TenantId) -> Result<Lookup, RegistryError> {
        (**self).lookup(id).await
    }

    fn lookup_ready(&self, id: &str) -> Option<Lookup> {
        (**self).lookup_ready(id)
    }

    fn lookup_ready_at(&self, id: &str, now: std::time::Instant) -> Option<Lookup> {
        (**self).lookup_ready_at(id, now)
    }

    fn lookup_leased_at(
        &self,
        id: &str,
        now: std::time::Instant,
    ) -> Option<(Lookup, Option<Lease>)> {
        (**self).lookup_leased_at(id, now)
    }

    fn lease_holds(&self, lease: &Lease, now: std::time::Instant) -> bool {
        (**self).lease_holds(lease, now)
    }
}

/// The registry could not answer. The message is for logs only.
#[derive(Debug, Clone)]
pub struct RegistryError {
    message: Cow<'static, str>,
}

impl RegistryError {
    /// A registry failure with a message for the logs.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The failure as text, for logs.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant registry unavailable: {}", self.message)
    }
}

impl std::error::Error for RegistryError {}
