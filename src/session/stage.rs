//! The `TenantAuth` stage: `Authorization: Bearer` → a verified [`Principal`](crate::Principal).

use std::{fmt, sync::Arc, time::Duration};

use actix_web::{dev::ServiceRequest, http::header::AUTHORIZATION};

use super::{SessionError, SessionManager};
use crate::{
    core::{
        error::{ConfigError, TenancyError},
        observe::{AuditEvent, Outcome, Stage as StageName},
    },
    pipeline::{wait, Built, Decision, Flow, Settings, Stage, Step, Worker, WorkerCx},
};
use tenancy_core::session::{bearer, pending_keys, refusal, TokenCheck, VerifiedToken};

/// This stage's name in the audit events and metrics.
const STAGE: StageName = StageName::named("authentication");

/// Authenticates requests with the bearer tokens of a [`SessionManager`] (or an
/// external issuer whose keys it holds), ahead of tenant resolution.
///
/// Give it to [`Tenancy::builder().auth(..)`](crate::TenancyBuilder::auth); the
/// resolver then needs [`Source::claim`](crate::resolve::Source::claim), so that the
/// token's tenant wins and any other source naming another tenant is a `403
/// tenant_conflict`.
///
/// | request | answer |
/// | --- | --- |
/// | a valid access token | the [`Principal`](crate::Principal) goes into the request extensions |
/// | no `Authorization` header | `401 unauthenticated` with `WWW-Authenticate: Bearer`, or on without a principal when [`allow_anonymous`](TenantAuthBuilder::allow_anonymous) |
/// | anything else: malformed, over 8 KiB, bad signature, expired, wrong `iss` / `aud`, a refresh token, revoked | `401 unauthenticated` with `WWW-Authenticate: Bearer error="invalid_token"`; no detail in the body |
/// | the revocation store fails | `503 auth_unavailable` (fail closed) |
/// | (feature `oidc`) no keys from the identity provider yet, or the registry cannot say which provider a tenant uses | `503 auth_unavailable` (fail closed) |
/// | (feature `oidc`, `TenantIssuers`) a valid token from a provider trusted for some tenant that names a tenant it may not be used for (another provider's, one without a provider, an id no tenant has, or its own provider's tenant whose binding takes other audiences) | `403 tenant_forbidden`, the same bytes as for an unknown or suspended tenant; the audit reason says which |
#[derive(Clone)]
pub struct TenantAuth(Built<AuthStage>);

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

/// Builds a [`TenantAuth`].
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
    /// (the resolver's other sources then decide). A header that is present is always
    /// checked. (The resolver's `allow_missing` is about a missing *tenant*.)
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// How long the revocation store may take to answer before the request fails
    /// closed with `503 auth_unavailable` (default 1 s). A store that answers without
    /// waiting (in memory) never waits.
    pub fn revocation_timeout(mut self, timeout: Duration) -> Self {
        self.revocation_timeout = timeout;
        self
    }

    /// How long a request may wait for an identity provider's keys (feature `oidc`:
    /// the first fetch, a refetch for a new `kid`, a per-tenant provider's discovery
    /// or registry lookup) before it fails closed with `503 auth_unavailable`
    /// (default 5 s). The fetch itself goes on, for the requests after it.
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
        let stage = AuthStage {
            sessions: self.sessions,
            allow_anonymous: self.allow_anonymous,
            revocation_timeout: self.revocation_timeout,
            key_timeout: self.key_timeout,
        };
        TenantAuth(Built::new(stage))
    }
}

pub(crate) struct AuthStage {
    sessions: SessionManager,
    allow_anonymous: bool,
    revocation_timeout: Duration,
    key_timeout: Duration,
}

impl fmt::Debug for AuthStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantAuth")
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

impl Stage for AuthStage {
    fn worker(self: Arc<Self>, cx: &WorkerCx) -> Box<dyn Worker> {
        Box::new(AuthWorker {
            stage: self,
            settings: Arc::clone(&cx.settings),
        })
    }

    fn precedes_resolution(&self) -> bool {
        true
    }
}

/// The authentication stage on one worker.
struct AuthWorker {
    stage: Arc<AuthStage>,
    settings: Arc<Settings>,
}

impl Worker for AuthWorker {
    fn prepare(&self, req: &ServiceRequest, flow: &mut Flow) -> Step {
        // Paths the resolver exempts (health checks, a login route) need no token.
        if flow.exempt {
            return Step::Pass;
        }
        self.stage.prepare(&self.settings, req)
    }
}

impl AuthStage {
    fn prepare(self: &Arc<Self>, settings: &Arc<Settings>, req: &ServiceRequest) -> Step {
        let values = req.headers().get_all(AUTHORIZATION).map(|v| v.as_bytes());
        let token = match bearer(values) {
            Ok(Some(token)) => token,
            Ok(None) if self.allow_anonymous => return Step::Pass,
            Ok(None) => {
                return self
                    .refuse(settings, req, TenancyError::CredentialMissing)
                    .into()
            }
            Err(why) => {
                let err = TenancyError::Unauthenticated { reason: why.into() };
                return self.refuse(settings, req, err).into();
            }
        };
        // A token verified before, byte for byte, needs nothing else here.
        let verified = match self.sessions.check_bearer(token) {
            Ok(TokenCheck::Verified(v)) => v,
            Ok(TokenCheck::Refused(e)) => return self.failed(settings, req, e).into(),
            Err(why) => {
                let err = TenancyError::Unauthenticated { reason: why.into() };
                return self.refuse(settings, req, err).into();
            }
            // The provider's keys must be fetched first; then revocation, as below.
            Ok(TokenCheck::Pending(checking)) => {
                let (me, settings) = (Arc::clone(self), Arc::clone(settings));
                return wait(move |req, _flow| {
                    Box::pin(async move {
                        // Bounded, and a panic in a registry or provider code is a `503`.
                        match pending_keys(checking, me.key_timeout).await {
                            Ok(verified) => me.revocation(&settings, req, verified).await,
                            Err(e) => me.failed(&settings, req, e),
                        }
                    })
                });
            }
        };
        match self.sessions.revocation_now(&verified) {
            Some(Ok(())) => {
                self.passed(settings, req, &verified);
                Step::Pass
            }
            Some(Err(e)) => self.failed(settings, req, e).into(),
            None => {
                let (me, settings) = (Arc::clone(self), Arc::clone(settings));
                wait(move |req, _flow| {
                    Box::pin(async move { me.revocation(&settings, req, verified).await })
                })
            }
        }
    }

    /// Asks the revocation store, in time: it may fail, hang or panic, and each is a
    /// `503`.
    async fn revocation(
        &self,
        settings: &Settings,
        req: &ServiceRequest,
        verified: VerifiedToken,
    ) -> Decision {
        match self
            .sessions
            .revocation(&verified, self.revocation_timeout)
            .await
        {
            Ok(()) => {
                self.passed(settings, req, &verified);
                Decision::Pass
            }
            Err(e) => self.failed(settings, req, e),
        }
    }

    /// A verified, unrevoked token: its principal into the request extensions, its one
    /// home, where the resolver, the extractors, `web::ReqData<Principal>` and any inner
    /// middleware read it; and (feature `metrics`) the pass counted, as the other
    /// stages' passes are.
    fn passed(&self, settings: &Settings, req: &ServiceRequest, verified: &VerifiedToken) {
        let principal = verified.principal();
        #[cfg(feature = "metrics")]
        settings.count(
            &AuditEvent::new(
                STAGE,
                Outcome::Allowed,
                req.method().as_str(),
                req.match_info().as_str(),
                "",
            )
            .tenant(principal.tenant(), None, None),
        );
        #[cfg(not(feature = "metrics"))]
        let _ = settings;
        principal.attach(req);
    }

    /// A token the check refused: the core's answer to it, reported.
    fn failed(&self, settings: &Settings, req: &ServiceRequest, e: SessionError) -> Decision {
        self.refuse(settings, req, refusal(e))
    }

    fn refuse(&self, settings: &Settings, req: &ServiceRequest, err: TenancyError) -> Decision {
        self.report(settings, req, &err);
        err.into()
    }

    fn report(&self, settings: &Settings, req: &ServiceRequest, err: &TenancyError) {
        self.report_as(settings, req, err, &err.reason());
    }

    fn report_as(
        &self,
        settings: &Settings,
        req: &ServiceRequest,
        err: &TenancyError,
        reason: &str,
    ) {
        settings.report(&AuditEvent::new(
            STAGE,
            Outcome::Rejected(err.code()),
            req.method().as_str(),
            req.match_info().as_str(),
            reason,
        ));
    }
}

crate::pipeline::built_stage!(
    /// Standalone, `TenantAuth` only attaches the principal; wrap it outside a
    /// [`TenantResolver`](crate::TenantResolver) (actix runs the last `.wrap()` first), or
    /// better, use [`Tenancy::builder().auth(..)`](crate::TenancyBuilder::auth), which
    /// puts every stage in the right order.
    TenantAuth
);
