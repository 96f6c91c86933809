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
//! feature, actix-tenancy's `PostgresRegistry` keeps tenants in PostgreSQL and its
//! listener keeps every replica's cache in step.

mod cache;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::{borrow::Cow, fmt, sync::Arc};

pub use crate::{Access, StatusRules, TenantRecord, TenantStatus};
pub use cache::{CacheConfig, CachedRegistry};
pub use memory::InMemoryRegistry;
#[cfg(feature = "postgres")]
pub use postgres::PostgresRegistry;

pub use crate::Lease;
use crate::{Answer, Moment};

/// The outcome of a lookup that answered: the record, or `None` for an unknown id.
pub type Lookup = Option<Arc<TenantRecord>>;

/// A source of tenant records.
///
/// Implement [`lookup`](TenantRegistry::lookup); answer `Ok(None)` only when the
/// backend answered that the tenant does not exist, and `Err` whenever it could not
/// answer (a timeout, a lost connection, a parse error). Mixing those two up is how an
/// outage turns into "unknown tenant" for everyone, or worse, into a pass.
///
/// A registry that knows the answer without waiting (an in-memory map, a warm cache)
/// answers [`Answer::Now`]: the resolver then creates no future and no timer. One that
/// asks a server answers [`Answer::later`] with its `async` block, and the resolver
/// waits for it at most its `registry_timeout` (do the work inside the block: see
/// [`Answer`]).
///
/// ```
/// use tenancy_core::registry::{Lookup, RegistryError, TenantRegistry};
/// use tenancy_core::{Answer, Moment};
///
/// struct Remote;
///
/// impl TenantRegistry for Remote {
///     fn lookup<'a>(&'a self, id: &'a str, _: &mut Moment) -> Answer<'a, Result<Lookup, RegistryError>> {
///         Answer::later(async move {
///             // ask the service that knows the tenants about `id`
///             let _ = id;
///             Err(RegistryError::new("the tenant service is down"))
///         })
///     }
/// }
/// ```
pub trait TenantRegistry: Send + Sync + 'static {
    /// Looks `id` up: `Ok(Some(_))` found, `Ok(None)` not found, `Err(_)` unavailable.
    ///
    /// `id` has passed the resolver's [`TenantIdRule`](crate::TenantIdRule) (a plain
    /// `&str`, so that the warm path allocates nothing); a returned record must be the
    /// record of `id`: the resolver checks, and fails closed if it is not. `at` is the
    /// request's [`Moment`]: a registry that ages its answers reads the time there, and
    /// one that can promise an answer for a while [grants](Moment::grant) a [`Lease`]
    /// on it.
    fn lookup<'a>(
        &'a self,
        id: &'a str,
        at: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>>;

    /// Whether a lease this registry granted is still good at the request's monotonic
    /// time `now`. The resolver keeps a leased record per worker and skips the lookup
    /// while this says so, so it must be cheap (a clock comparison and an atomic load)
    /// and turn `false` as soon as the record it covers may have changed (an
    /// invalidation, an expiry). The default: never.
    fn lease_holds(&self, lease: &Lease, now: std::time::Instant) -> bool {
        let _ = (lease, now);
        false
    }
}

impl<R: TenantRegistry + ?Sized> TenantRegistry for Arc<R> {
    #[inline]
    fn lookup<'a>(
        &'a self,
        id: &'a str,
        at: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>> {
        (**self).lookup(id, at)
    }

    #[inline]
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
