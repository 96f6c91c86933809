//! Verified identities: the [`Principal`](crate::Principal) that authentication puts in the request
//! extensions (the resolver's claim source reads it), and, with the `jwt` feature,
//! JWT-backed tenant sessions: [`KeySet`], [`SessionManager`], [`TenantAuth`] and the
//! [`RevocationStore`]s.

pub use crate::core::RevokeSessions;

#[cfg(feature = "jwt")]
mod stage;

#[cfg(feature = "jwt")]
pub use stage::{TenantAuth, TenantAuthBuilder};
// The engine is the core's: the same sessions for every adapter.
#[cfg(feature = "oidc")]
pub use tenancy_core::session::oidc;
#[cfg(all(feature = "jwt", feature = "redis"))]
pub use tenancy_core::session::RedisRevocations;
#[cfg(feature = "jwt")]
pub use tenancy_core::session::{
    Consumed, Grant, InMemoryRevocations, Key, KeyError, KeySet, Revocation, RevocationError,
    RevocationStore, SessionConfig, SessionError, SessionManager, TenantFrom, TokenFacts,
    TokenPair, MAX_TOKEN_LEN,
};
