//! Tokens from identity providers (feature `oidc`): [`RemoteKeys`] (OpenID discovery
//! or a JWKS URL, refreshed in the background, refetched on an unknown `kid`) for one
//! provider, and [`TenantIssuers`] when each tenant brings its own.
//!
//! The HTTP client is hyper's one-connection client on tokio and the same rustls
//! (aws-lc-rs) that the `jwt` and `tls` features build: key sets are fetched a few
//! times an hour, so a pool, redirects and cookies (what reqwest adds) buy nothing,
//! and awc's client is not `Send`, so it could not be shared by every worker.
//!
//! ```no_run
//! use tenancy_core::session::{oidc::RemoteKeys, SessionConfig, SessionManager, TenantFrom};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let issuer = "https://acme.eu.auth0.com/";
//! let keys = RemoteKeys::issuer(issuer).fetch().await?; // refuse to start without keys
//! let config = SessionConfig::new(issuer, "https://api.example.com")
//!     .tenant_from(TenantFrom::claim("org_id"))
//!     .require_jti(false); // Auth0 access tokens carry no jti
//! let sessions = SessionManager::remote(config, keys)?;
//! # let _ = sessions; Ok(()) }
//! ```

use std::fmt;

mod client;
mod jwks;
mod remote;
mod tenants;

pub use remote::{RemoteKeys, RemoteKeysBuilder};

use jsonwebtoken::Algorithm;

use super::{KeyError, KeySet};

/// Reads a JWK set as a provider publishes it, the way [`RemoteKeys`] does, for an
/// application that fetches the set itself: signature keys of `algorithms` (HMAC never),
/// each pinned to one of them (a key without `alg` to the only one its `kty`/`crv`
/// fits), RSA keys of 2048 bits or more, at most 64 keys; unusable keys are skipped. A
/// token without `kid` may use the set's one key of its `alg`.
///
/// ```
/// use tenancy_core::session::oidc::read_jwks;
/// use jsonwebtoken::Algorithm;
///
/// let set = br#"{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0", "alg": "HS256"}]}"#;
/// assert!(read_jwks(set, &[Algorithm::RS256]).is_err(), "no usable key");
/// ```
pub fn read_jwks(json: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, KeyError> {
    let algorithms: Vec<Algorithm> = algorithms
        .iter()
        .copied()
        .filter(|a| a.family() != jsonwebtoken::AlgorithmFamily::Hmac)
        .collect();
    jwks::read(json, &algorithms, 64).map(|read| read.keys)
}
pub(crate) use tenants::Trusted;
pub use tenants::{Binding, TenantIssuers};

/// A remote key source could not be set up or fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OidcError {
    /// A URL or a setting is invalid.
    Config(String),
    /// Discovery or the key set could not be fetched or read.
    Fetch(String),
    /// The thread that runs key fetches could not be used.
    NoRuntime,
}

impl fmt::Display for OidcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(why) => write!(f, "OIDC configuration: {why}"),
            Self::Fetch(why) => write!(f, "OIDC fetch: {why}"),
            Self::NoRuntime => f.write_str("OIDC: the key fetch thread is not running"),
        }
    }
}

impl std::error::Error for OidcError {}
