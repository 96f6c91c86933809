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
//! TTL, single-flight misses and a bounded stale-if-error window; both, and the trait,
//! are the framework-neutral core's (`tenancy_core::registry`). With the `postgres`
//! feature, [`postgres::PostgresRegistry`] keeps tenants in PostgreSQL and its listener
//! keeps every replica's cache in step.

#[cfg(feature = "postgres")]
pub use tenancy_core::registry::{postgres, PostgresRegistry};
pub use tenancy_core::registry::{
    Access, CacheConfig, CachedRegistry, InMemoryRegistry, Lease, Lookup, RegistryError,
    StatusRules, TenantRecord, TenantRegistry, TenantStatus,
};
