//! The `TenantAuth` stage: `Authorization: Bearer` → a verified [`Principal`](crate::Principal).

use std::{
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    time::Duration,
};

use futures_util::FutureExt as _;

use actix_web::{dev::ServiceRequest, http::header::AUTHORIZATION};

use super::{
    manager::{Check, Checked},
    RevocationError, SessionError, SessionManager, MAX_TOKEN_LEN,
};
use crate::{
    core::{
        error::{ConfigError, TenancyError},
        observe::{AuditEvent, Outcome, Stage as StageName},
    },
    pipeline::{wait, Built, Decision, Flow, Settings, Stage, Step, Worker, WorkerCx},
};

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
    #[cfg_attr(not(feature = "oidc"), allow(dead_code))]
    key_timeout: Duration,
}

fn store_failed(why: &'static str) -> SessionError {
    SessionError::Store(RevocationError::new(why))
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

/// RFC 6750's `b64token` characters: `A-Z a-z 0-9 - . _ ~ + /` (a table: a token is
/// read on every request, and is hundreds of bytes long).
static B64TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    t
};

/// Reads the bearer token's bytes; `Ok(None)` when there is no `Authorization`
/// header. Their characters are checked by [`b64token`], unless the exact bytes were
/// verified before.
fn bearer(req: &ServiceRequest) -> Result<Option<&[u8]>, &'static str> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    // "Bearer " + the longest token; longer is refused before any parsing.
    if value.len() > MAX_TOKEN_LEN + 7 {
        return Err("the token is too large");
    }
    let value = value.as_bytes();
    let space = value
        .iter()
        .position(|&b| b == b' ')
        .ok_or("not a bearer credential")?;
    let (scheme, token) = (&value[..space], &value[space + 1..]);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err("not a bearer credential");
    }
    Ok(Some(token))
}

/// RFC 6750 `b64token`: the token characters, then optional padding. One pass over
/// the bytes, by table; whatever passes is ASCII.
fn b64token(token: &[u8]) -> Result<&str, &'static str> {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..body_len];
    if body.is_empty() || !body.iter().all(|&b| B64TOKEN[usize::from(b)]) {
        return Err("malformed bearer token");
    }
    std::str::from_utf8(token).map_err(|_| "malformed bearer token")
}

impl AuthStage {
    fn prepare(self: &Arc<Self>, settings: &Arc<Settings>, req: &ServiceRequest) -> Step {
        let token = match bearer(req) {
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
        let checked = match self.sessions.cached(token) {
            Some(hit) => Check::Ready(Ok(hit)),
            None => match b64token(token) {
                Ok(token) => self.sessions.check_uncached(token),
                Err(why) => {
                    let err = TenancyError::Unauthenticated { reason: why.into() };
                    return self.refuse(settings, req, err).into();
                }
            },
        };
        let verified = match checked {
            Check::Ready(Ok(v)) => v,
            Check::Ready(Err(e)) => return self.failed(settings, req, e).into(),
            // The provider's keys must be fetched first; then revocation, as below.
            #[cfg(feature = "oidc")]
            Check::Wait(checking) => {
                let (me, settings) = (Arc::clone(self), Arc::clone(settings));
                return wait(move |req, _flow| {
                    Box::pin(async move {
                        // Bounded, and a panic in a registry or provider code is a `503`.
                        let checking = AssertUnwindSafe(checking).catch_unwind();
                        let checked = match tokio::time::timeout(me.key_timeout, checking).await {
                            Ok(Ok(checked)) => checked,
                            Ok(Err(_panic)) => {
                                Err(SessionError::Unavailable("the key check panicked".into()))
                            }
                            Err(_) => Err(SessionError::Unavailable(
                                "the identity provider's keys did not come in time".into(),
                            )),
                        };
                        match checked {
                            Ok(verified) => me.revocation(&settings, req, verified).await,
                            Err(e) => me.failed(&settings, req, e),
                        }
                    })
                });
            }
        };
        let store = self.sessions.store();
        let facts = verified.facts();
        let now = catch_unwind(AssertUnwindSafe(|| store.is_revoked(&facts).now()))
            .unwrap_or_else(|_| Some(Err(RevocationError::new("the store panicked"))));
        match now {
            Some(Ok(false)) => {
                self.passed(settings, req, &verified);
                Step::Pass
            }
            Some(Ok(true)) => self.failed(settings, req, SessionError::Revoked).into(),
            Some(Err(e)) => self.failed(settings, req, SessionError::Store(e)).into(),
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
        verified: Arc<Checked>,
    ) -> Decision {
        let facts = verified.facts();
        let check = AssertUnwindSafe(self.sessions.not_revoked(&facts)).catch_unwind();
        let answer = match tokio::time::timeout(self.revocation_timeout, check).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_panic)) => Err(store_failed("the store panicked")),
            Err(_) => Err(store_failed("the store did not answer in time")),
        };
        match answer {
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
    fn passed(&self, settings: &Settings, req: &ServiceRequest, verified: &Checked) {
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

    fn failed(&self, settings: &Settings, req: &ServiceRequest, e: SessionError) -> Decision {
        match e {
            SessionError::Store(_) | SessionError::Unavailable(_) => {
                let err = TenancyError::AuthUnavailable {
                    reason: e.to_string().into(),
                };
                self.report(settings, req, &err);
                err.into()
            }
            SessionError::Conflict | SessionError::OtherAudience | SessionError::Unbound => {
                // A valid token from a trusted provider naming a tenant it may not be
                // used for: answered as the resolver answers an unknown or suspended
                // tenant, byte for byte, so that no token holder learns which ids are
                // tenants; the audit reason tells operators which case it was.
                let reason = match e {
                    SessionError::Conflict => "cross-tenant token: the token's issuer is not the identity provider of the tenant it names",
                    SessionError::OtherAudience => "cross-tenant token: for an audience of its identity provider that the tenant it names does not accept",
                    _ => "the token names a tenant bound to no identity provider (unknown, or without a binding)",
                };
                let err = TenancyError::TenantForbidden {
                    reason: reason.into(),
                };
                self.refuse(settings, req, err)
            }
            other => {
                let err = TenancyError::Unauthenticated {
                    reason: other.to_string().into(),
                };
                self.refuse(settings, req, err)
            }
        }
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
