//! JWT-backed tenant sessions, whatever serves the request (feature `jwt`): the
//! [`KeySet`] that signs and verifies, the [`SessionManager`] that issues, verifies,
//! refreshes and revokes, and the [`RevocationStore`]s that keep revocations (in
//! memory, or in Redis with feature `redis`); with feature `oidc`, tokens from
//! identity providers ([`oidc`]).
//!
//! The stages that verify a request's bearer token are the adapters':
//! actix-tenancy's `TenantAuth`, tower-tenancy's `TenancyLayer::builder().auth(..)`.
//! Both put the verified [`Principal`] where the claim source reads
//! it.

pub(crate) use crate::Principal;

mod bearer;
mod keys;
mod manager;
#[cfg(feature = "oidc")]
pub mod oidc;
#[cfg(feature = "redis")]
mod redis;
mod revocation;

pub use bearer::{bearer, pending_keys, refusal, TokenCheck, VerifiedToken};
pub use keys::{Key, KeyError, KeySet};
pub use manager::{
    Grant, SessionConfig, SessionError, SessionManager, TenantFrom, TokenPair, MAX_TOKEN_LEN,
};
#[cfg(feature = "redis")]
pub use redis::RedisRevocations;
pub use revocation::{
    Consumed, InMemoryRevocations, Revocation, RevocationError, RevocationStore, TokenFacts,
};

/// Now, in unix seconds, on the system's clock: for what does not take the sessions'
/// [`Clock`](crate::Clock) (a remote key set's schedule, Redis TTLs, the test kit).
#[cfg(any(feature = "oidc", feature = "redis", test))]
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
