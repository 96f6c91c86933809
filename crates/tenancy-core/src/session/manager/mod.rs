//! Issuing, verifying, refreshing and revoking tenant sessions.
//!
//! [`SessionManager`] and what it holds are here; its work is in one file a concept,
//! each with `impl SessionManager` blocks of its own:
//!
//! - `config`: [`SessionConfig`], how sessions are issued and checked;
//! - `claims`: where a token names its tenant ([`TenantFrom`]), claim paths, list
//!   claims, the claims a session sets itself;
//! - `error`: [`SessionError`];
//! - `issue`: issuing and signing pairs ([`Grant`], [`TokenPair`]);
//! - `verify`: a token's signature and claims, checked against the manager's own keys
//!   (`check_as`), and revocation;
//! - `providers` (feature `oidc`): tokens of one identity provider or of each tenant's
//!   own;
//! - `cache`: the verified-token cache, hashed by a token's tail;
//! - `refresh`: refresh rotation, its used marks and retries, logout and revocation.

use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, Validation};

use super::{
    keys::{install_crypto, Key, KeyError, KeySet},
    InMemoryRevocations, RevocationStore,
};
#[cfg(feature = "oidc")]
use crate::error::ConfigError;

mod cache;
mod claims;
mod config;
mod error;
mod issue;
#[cfg(feature = "oidc")]
mod providers;
mod refresh;
#[cfg(test)]
mod testkit;
mod verify;

use cache::TokenCache;
pub use claims::TenantFrom;
pub use config::SessionConfig;
pub use error::SessionError;
pub use issue::{Grant, TokenPair};
pub use verify::MAX_TOKEN_LEN;
use verify::{validations, Verified};
pub(crate) use verify::{Check, Checked};

/// Whose keys verify tokens.
enum Trust {
    /// The manager's own key set.
    Own,
    /// One identity provider's remote key set.
    #[cfg(feature = "oidc")]
    Remote(super::oidc::RemoteKeys),
    /// Each tenant's own provider.
    #[cfg(feature = "oidc")]
    Tenants(Arc<super::oidc::TenantIssuers>),
}

/// Issues, verifies, refreshes and revokes JWT-backed tenant sessions.
///
/// Clones share keys and store. Access tokens carry `iss`, `aud`, `sub`, the tenant
/// claim, `exp`, `nbf`, `iat`, a random `jti`, the refresh family (`fam`), and
/// `token_use: "access"`; refresh tokens say `token_use: "refresh"` and are accepted
/// only by [`refresh`](Self::refresh). A token from another issuer without
/// `token_use` counts as an access token.
///
/// ```
/// use std::time::Duration;
/// use tenancy_core::session::{Grant, Key, KeySet, SessionConfig, SessionManager};
/// use tenancy_core::TenantId;
/// use jsonwebtoken::Algorithm;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let key = Key::hmac("k1", Algorithm::HS256, b"a secret of at least thirty-two bytes!").unwrap();
/// let sessions = SessionManager::new(
///     SessionConfig::new("https://auth.example.com", "api"),
///     KeySet::signing(key).unwrap(),
/// );
/// let acme = TenantId::parse("acme").unwrap();
/// let pair = sessions.issue(&acme, "user-42", Grant::new().scopes(["reports:read"])).unwrap();
/// let principal = sessions.verify(&pair.access_token).await.unwrap();
/// assert_eq!(principal.tenant(), Some(&acme));
/// assert!(sessions.verify(&pair.refresh_token).await.is_err(), "not an access token");
///
/// let next = sessions.refresh(&pair.refresh_token).await.unwrap();
/// // Presented again within the grace (a retry whose answer was lost): the same pair.
/// let again = sessions.refresh(&pair.refresh_token).await.unwrap();
/// assert_eq!(again.refresh_token, next.refresh_token);
///
/// // Outside the grace (here none), a used refresh token again is theft.
/// let strict = SessionManager::new(
///     SessionConfig::new("https://auth.example.com", "api").refresh_grace(Duration::ZERO),
///     sessions.keys().as_ref().clone(),
/// );
/// let pair = strict.issue(&acme, "user-42", Grant::new()).unwrap();
/// let next = strict.refresh(&pair.refresh_token).await.unwrap();
/// assert!(strict.refresh(&pair.refresh_token).await.is_err(), "used once");
/// assert!(strict.verify(&next.access_token).await.is_err(), "theft: family revoked");
/// # });
/// ```
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: SessionConfig,
    validations: Vec<(Algorithm, Validation)>,
    keys: ArcSwap<KeySet>,
    trust: Trust,
    store: Arc<dyn RevocationStore>,
    cache: TokenCache,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("config", &self.inner.config)
            .field("keys", &**self.inner.keys.load())
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// Sessions with `keys`, revocations kept in memory.
    pub fn new(config: SessionConfig, keys: KeySet) -> Self {
        Self::with_trust(config, keys, Trust::Own)
    }

    fn with_trust(config: SessionConfig, keys: KeySet, trust: Trust) -> Self {
        install_crypto();
        Self {
            inner: Arc::new(Inner {
                cache: TokenCache::new(config.verified_cache),
                validations: validations(&config),
                store: Arc::new(InMemoryRevocations::new().with_clock(config.clock.clone())),
                config,
                keys: ArcSwap::from_pointee(keys),
                trust,
            }),
        }
    }

    /// Verifies the tokens of one identity provider, with its [`RemoteKeys`]
    /// (feature `oidc`); issues none. Tokens must carry the configuration's issuer
    /// and one of its audiences. Keys found by discovery must be the configuration's
    /// issuer's, or this is a [`ConfigError::Conflict`].
    ///
    /// [`RemoteKeys`]: super::oidc::RemoteKeys
    #[cfg(feature = "oidc")]
    pub fn remote(
        config: SessionConfig,
        keys: super::oidc::RemoteKeys,
    ) -> Result<Self, ConfigError> {
        if let Some(found) = keys.issuer_name() {
            if found != config.issuer {
                return Err(ConfigError::Conflict(
                    format!(
                        "the key set is the issuer {found:?}'s, but tokens are checked for {:?}",
                        config.issuer
                    )
                    .into(),
                ));
            }
        }
        Ok(Self::with_trust(
            config,
            KeySet::verify_only(),
            Trust::Remote(keys),
        ))
    }

    /// Verifies tokens of each tenant's own identity provider (feature `oidc`);
    /// issues none. The configuration's issuer is not used; its audiences are, for
    /// tenants whose [`Binding`](super::oidc::Binding) names none.
    ///
    /// Takes the [`TenantIssuers`](super::oidc::TenantIssuers) or an `Arc` of it: keep
    /// a clone of the `Arc` to call
    /// [`refresh_all_now`](super::oidc::TenantIssuers::refresh_all_now) later.
    #[cfg(feature = "oidc")]
    pub fn tenant_issuers(
        config: SessionConfig,
        issuers: impl Into<Arc<super::oidc::TenantIssuers>>,
    ) -> Self {
        Self::with_trust(
            config,
            KeySet::verify_only(),
            Trust::Tenants(issuers.into()),
        )
    }

    /// Keeps revocations in `store` (e.g. [`RedisRevocations`](super::RedisRevocations)
    /// so every replica sees them).
    ///
    /// A builder step: it makes a new manager, with the keys it had, a fresh
    /// verified-token cache, and its own key slot. Call it before you clone the manager
    /// into the app: a clone taken before it keeps the old store, and a later
    /// [`set_keys`](Self::set_keys) or [`rotate`](Self::rotate) on one of them does not
    /// reach the other.
    pub fn with_store(self, store: impl RevocationStore) -> Self {
        let inner = Inner {
            config: self.inner.config.clone(),
            validations: self.inner.validations.clone(),
            keys: ArcSwap::new(self.inner.keys.load_full()),
            trust: match &self.inner.trust {
                Trust::Own => Trust::Own,
                #[cfg(feature = "oidc")]
                Trust::Remote(r) => Trust::Remote(r.clone()),
                #[cfg(feature = "oidc")]
                Trust::Tenants(t) => Trust::Tenants(Arc::clone(t)),
            },
            store: Arc::new(store),
            cache: TokenCache::new(self.inner.config.verified_cache),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// The keys in use now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.inner.keys.load_full()
    }

    /// Replaces the keys (e.g. `keys().as_ref().clone().rotate(new)?`), at once for
    /// every clone of this manager.
    pub fn set_keys(&self, keys: KeySet) {
        self.inner.keys.store(Arc::new(keys));
        // Entries of the old set are never used again (see `TokenCache`): free them.
        self.inner.cache.clear();
    }

    /// Signs with a new key; the old signing key keeps verifying until
    /// [`retire`](Self::retire)d.
    pub fn rotate(&self, key: Key) -> Result<(), KeyError> {
        let keys = self.keys().as_ref().clone().rotate(key)?;
        self.set_keys(keys);
        Ok(())
    }

    /// Drops a key: tokens it signed stop verifying.
    pub fn retire(&self, kid: &str) -> Result<(), KeyError> {
        let keys = self.keys().as_ref().clone().retire(kid)?;
        self.set_keys(keys);
        Ok(())
    }

    /// Now, in unix seconds, on the sessions' clock.
    fn now(&self) -> u64 {
        self.inner.config.clock.unix_secs()
    }

    pub(crate) fn store(&self) -> &dyn RevocationStore {
        &*self.inner.store
    }
}

#[cfg(test)]
mod tests {
    use super::{
        testkit::{acme, config, sessions},
        *,
    };
    use crate::session::Grant;

    #[tokio::test]
    async fn another_store_shares_the_keys_but_not_the_revocations_or_the_cache() {
        let (s, _) = sessions(config());
        let pair = s.issue(&acme(), "u1", Grant::new()).unwrap();
        let p = s.verify(&pair.access_token).await.unwrap();
        let moved = s.clone().with_store(InMemoryRevocations::new());
        assert!(Arc::ptr_eq(&moved.keys(), &s.keys()));
        assert_eq!(moved.config().issuer, s.config().issuer);
        assert!(
            moved.cached(pair.access_token.as_bytes()).is_none(),
            "a cache of its own"
        );
        s.revoke(p.token_id().unwrap()).await.unwrap();
        assert!(
            moved.verify(&pair.access_token).await.is_ok(),
            "a store of its own"
        );
        assert!(s.verify(&pair.access_token).await.is_err());
    }

    #[tokio::test]
    async fn a_rotated_key_signs_and_the_old_one_verifies_until_retired() {
        let (s, _) = sessions(config());
        let old = s.issue(&acme(), "u1", Grant::new()).unwrap().access_token;
        let secret = b"another secret of at least 32 bytes, k2";
        s.rotate(Key::hmac("k2", Algorithm::HS256, secret).unwrap())
            .unwrap();
        assert_eq!(s.keys().signing_kid(), Some("k2"));
        let new = s.issue(&acme(), "u1", Grant::new()).unwrap().access_token;
        assert!(s.verify(&old).await.is_ok() && s.verify(&new).await.is_ok());
        s.retire("k1").unwrap();
        assert!(s.verify(&old).await.is_err(), "its key is gone");
        assert!(s.verify(&new).await.is_ok());
        assert!(s.retire("k9").is_err(), "no such key");
    }
}
