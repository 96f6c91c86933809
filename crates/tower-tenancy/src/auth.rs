//! The authentication stage of a [`TenancyLayer`](crate::TenancyLayer) (feature `jwt`):
//! [`TenantAuth`] verifies the bearer token before resolution, and puts its
//! [`Principal`] where the claim source and the extractors read it.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use http::{header::AUTHORIZATION, request::Parts};
use tenancy_core::{
    error::{ConfigError, TenancyError},
    session::{bearer, pending_keys, refusal, SessionManager, TokenCheck, VerifiedToken},
    Principal,
};

/// Authenticates requests with the bearer tokens of a [`SessionManager`], ahead of
/// resolution: the same stage as actix-tenancy's `TenantAuth`, with the same answers.
/// Give it to [`TenancyLayer::builder(..).auth(..)`](crate::TenancyLayerBuilder::auth),
/// and add [`Source::claim`](crate::Source::claim) first to the layer's sources, so
/// that the token's tenant wins and any other source naming another tenant is a `403
/// tenant_conflict`.
///
/// | request | answer |
/// | --- | --- |
/// | a valid access token, not revoked | the [`Principal`] goes into the request extensions |
/// | no `Authorization` header | `401 unauthenticated` with `WWW-Authenticate: Bearer`, or on without a principal when [`allow_anonymous`](TenantAuthBuilder::allow_anonymous) |
/// | a malformed, expired, badly signed or revoked token | `401 unauthenticated` |
/// | a token naming a tenant its provider may not speak for | `403 tenant_forbidden` |
/// | the revocation store (or a provider's keys) not answering in time | `503 auth_unavailable` |
///
/// ```
/// use axum::{routing::get, Router};
/// use jsonwebtoken::Algorithm;
/// use tenancy_core::session::{Key, KeySet, SessionConfig, SessionManager};
/// use tenancy_core::{registry::InMemoryRegistry, TenantId, TenantRecord};
/// use tower_tenancy::{Source, TenancyLayer, TenantAuth};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = Key::hmac("k1", Algorithm::HS256, b"a secret of at least thirty-two bytes!")?;
/// let sessions = SessionManager::new(SessionConfig::new("https://auth.example", "api"), KeySet::signing(key)?);
/// let registry = InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme")?, "pro"));
/// let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(
///     TenancyLayer::builder(registry)
///         .auth(TenantAuth::new(sessions))
///         .source(Source::claim())
///         .build()?,
/// );
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone)]
pub struct TenantAuth(pub(crate) Arc<AuthStage>);

impl fmt::Debug for TenantAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantAuth")
            .field("allow_anonymous", &self.0.allow_anonymous)
            .finish_non_exhaustive()
    }
}

impl TenantAuth {
    /// Verifies tokens with `sessions`, with the defaults: a request without a token
    /// is refused.
    pub fn new(sessions: SessionManager) -> Self {
        Self::builder(sessions).assemble()
    }

    /// A builder for the stage verifying tokens with `sessions`.
    pub fn builder(sessions: SessionManager) -> TenantAuthBuilder {
        TenantAuthBuilder {
            sessions,
            allow_anonymous: false,
            revocation_timeout: Duration::from_secs(1),
            key_timeout: Duration::from_secs(5),
        }
    }
}

/// Builds a [`TenantAuth`]: the same settings as actix-tenancy's.
#[must_use]
pub struct TenantAuthBuilder {
    sessions: SessionManager,
    allow_anonymous: bool,
    revocation_timeout: Duration,
    key_timeout: Duration,
}

impl fmt::Debug for TenantAuthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantAuthBuilder")
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

impl TenantAuthBuilder {
    /// Lets a request without an `Authorization` header go on without a principal
    /// (the layer's other sources then decide). A header that is present is always
    /// checked.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// How long the revocation store may take before the request fails closed with
    /// `503 auth_unavailable` (default 1 s).
    pub fn revocation_timeout(mut self, timeout: Duration) -> Self {
        self.revocation_timeout = timeout;
        self
    }

    /// How long a request may wait for an identity provider's keys (feature `oidc`)
    /// before it fails closed with `503 auth_unavailable` (default 5 s).
    pub fn key_timeout(mut self, timeout: Duration) -> Self {
        self.key_timeout = timeout;
        self
    }

    /// Checks the configuration and builds the stage.
    pub fn build(self) -> Result<TenantAuth, ConfigError> {
        if self.revocation_timeout.is_zero() {
            return Err(ConfigError::zero_duration("revocation timeout"));
        }
        if self.key_timeout.is_zero() {
            return Err(ConfigError::zero_duration("key timeout"));
        }
        Ok(self.assemble())
    }

    fn assemble(self) -> TenantAuth {
        TenantAuth(Arc::new(AuthStage {
            sessions: self.sessions,
            allow_anonymous: self.allow_anonymous,
            revocation_timeout: self.revocation_timeout,
            key_timeout: self.key_timeout,
        }))
    }
}

pub(crate) struct AuthStage {
    sessions: SessionManager,
    allow_anonymous: bool,
    revocation_timeout: Duration,
    key_timeout: Duration,
}

/// What authentication decided: the principal (none for an anonymous request
/// allowed through), or the refusal.
pub(crate) type Authenticated = Result<Option<Principal>, TenancyError>;

/// A decision now, or the wait for it.
pub(crate) enum Auth {
    Now(Authenticated),
    Later(Pin<Box<dyn Future<Output = Authenticated> + Send>>),
}

impl AuthStage {
    /// Checks the request's bearer token: its signature and claims, then its
    /// revocation, without waiting when nothing must be waited for.
    pub(crate) fn check(self: &Arc<Self>, head: &Parts) -> Auth {
        let values = head
            .headers
            .get_all(AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes());
        let token = match bearer(values) {
            Ok(Some(token)) => token,
            Ok(None) if self.allow_anonymous => return Auth::Now(Ok(None)),
            Ok(None) => return Auth::Now(Err(TenancyError::CredentialMissing)),
            Err(why) => {
                return Auth::Now(Err(TenancyError::Unauthenticated { reason: why.into() }))
            }
        };
        let verified = match self.sessions.check_bearer(token) {
            Ok(TokenCheck::Verified(v)) => v,
            Ok(TokenCheck::Refused(e)) => return Auth::Now(Err(refusal(e))),
            Err(why) => {
                return Auth::Now(Err(TenancyError::Unauthenticated { reason: why.into() }))
            }
            // The provider's keys must be fetched first; then revocation.
            Ok(TokenCheck::Pending(checking)) => {
                let me = Arc::clone(self);
                return Auth::Later(Box::pin(async move {
                    // Bounded, and a panic in a registry or provider code is a `503`.
                    match pending_keys(checking, me.key_timeout).await {
                        Ok(verified) => me.revocation(verified).await,
                        Err(e) => Err(refusal(e)),
                    }
                }));
            }
        };
        match self.sessions.revocation_now(&verified) {
            Some(Ok(())) => Auth::Now(Ok(Some(verified.principal()))),
            Some(Err(e)) => Auth::Now(Err(refusal(e))),
            None => {
                let me = Arc::clone(self);
                Auth::Later(Box::pin(async move { me.revocation(verified).await }))
            }
        }
    }

    /// Asks the revocation store, in time: it may fail, hang or panic, and each is a
    /// `503`.
    async fn revocation(&self, verified: VerifiedToken) -> Authenticated {
        match self
            .sessions
            .revocation(&verified, self.revocation_timeout)
            .await
        {
            Ok(()) => Ok(Some(verified.principal())),
            Err(e) => Err(refusal(e)),
        }
    }
}
