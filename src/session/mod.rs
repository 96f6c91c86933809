//! Verified identities: the [`Principal`] that authentication puts in the request
//! extensions (the resolver's claim source reads it), and, with the `jwt` feature,
//! JWT-backed tenant sessions: [`KeySet`], [`SessionManager`], [`TenantAuth`] and the
//! [`RevocationStore`]s.

#[cfg(feature = "jwt")]
pub(crate) use crate::core::Principal;
pub use crate::core::RevokeSessions;

#[cfg(feature = "jwt")]
mod keys;
#[cfg(feature = "jwt")]
mod manager;
#[cfg(feature = "oidc")]
pub mod oidc;
#[cfg(all(feature = "jwt", feature = "redis"))]
mod redis;
#[cfg(feature = "jwt")]
mod revocation;
#[cfg(feature = "jwt")]
mod stage;

#[cfg(feature = "jwt")]
pub use keys::{Key, KeyError, KeySet};
#[cfg(feature = "jwt")]
pub use manager::{
    Grant, SessionConfig, SessionError, SessionManager, TenantFrom, TokenPair, MAX_TOKEN_LEN,
};
#[cfg(all(feature = "jwt", feature = "redis"))]
pub use redis::RedisRevocations;
#[cfg(feature = "jwt")]
pub use revocation::{
    Consumed, InMemoryRevocations, Revocation, RevocationError, RevocationStore, TokenFacts,
};
#[cfg(feature = "jwt")]
pub use stage::{TenantAuth, TenantAuthBuilder};

/// Now, in unix seconds, on the system's clock: for what does not take the sessions'
/// [`Clock`](crate::Clock) (a remote key set's schedule, Redis TTLs, the test kit).
#[cfg(all(
    feature = "jwt",
    any(feature = "oidc", feature = "redis", feature = "testing", test)
))]
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
