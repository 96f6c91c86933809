//! The `JwtAuth` stage: `Authorization: Bearer` → a verified [`Principal`].

use std::{fmt, sync::Arc};

use actix_web::{dev::ServiceRequest, http::header::AUTHORIZATION};

use super::{manager::Checked, SessionError, SessionManager, MAX_TOKEN_LEN};
use crate::{
    error::{TenancyError, NO_CREDENTIAL},
    observe::{emit, AuditEvent, AuditSink, Outcome, Stage, TracingAudit},
    session::Principal,
};

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
/// | a valid access token | the [`Principal`] goes into the request extensions |
/// | no `Authorization` header | `401 unauthenticated` with `WWW-Authenticate: Bearer`, or on without a principal when [`allow_missing`](Self::allow_missing) |
/// | anything else: malformed, over 8 KiB, bad signature, expired, wrong `iss` / `aud`, a refresh token, revoked | `401 unauthenticated` with `WWW-Authenticate: Bearer error="invalid_token"`; no detail in the body |
/// | the revocation store fails | `503 auth_unavailable` (fail closed) |
#[derive(Clone)]
#[must_use]
pub struct JwtAuth {
    sessions: SessionManager,
    allow_missing: bool,
    audit: Arc<dyn AuditSink>,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("allow_missing", &self.allow_missing)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    /// Verifies tokens with `sessions`.
    pub fn new(sessions: SessionManager) -> Self {
        Self {
            sessions,
            allow_missing: false,
            audit: Arc::new(TracingAudit),
        }
    }

    /// Lets a request without an `Authorization` header go on without a principal
    /// (the resolver's other sources then decide). A header that is present is always
    /// checked.
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }

    /// Where rejections are reported (default: [`TracingAudit`]).
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Arc::new(sink);
        self
    }

    pub(crate) fn into_stage(self) -> Arc<AuthStage> {
        Arc::new(AuthStage(self))
    }
}

pub(crate) struct AuthStage(JwtAuth);

/// Whether authentication decided, or must wait for the revocation store.
pub(crate) enum AuthStep {
    Pass(Option<Principal>),
    Refuse(TenancyError),
    Wait(Arc<Checked>),
}

/// Reads the bearer token; `Ok(None)` when there is no `Authorization` header.
fn bearer(req: &ServiceRequest) -> Result<Option<&str>, &'static str> {
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
    let value = value
        .to_str()
        .map_err(|_| "a non-ASCII Authorization header")?;
    let (scheme, token) = value.split_once(' ').ok_or("not a bearer credential")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("not a bearer credential");
    }
    // RFC 6750 b64token: the token characters, then optional padding.
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !ok {
        return Err("malformed bearer token");
    }
    Ok(Some(token))
}

impl AuthStage {
    pub(crate) fn prepare(&self, req: &ServiceRequest) -> AuthStep {
        let token = match bearer(req) {
            Ok(Some(token)) => token,
            Ok(None) if self.0.allow_missing => return AuthStep::Pass(None),
            Ok(None) => return self.refuse(req, NO_CREDENTIAL.into()),
            Err(why) => return self.refuse(req, why.into()),
        };
        let verified = match self.0.sessions.check(token) {
            Ok(v) => v,
            Err(e) => return self.failed(req, e),
        };
        match self.0.sessions.store().is_revoked_now(&verified.facts()) {
            Some(Ok(false)) => AuthStep::Pass(Some(verified.principal())),
            Some(Ok(true)) => self.failed(req, SessionError::Revoked),
            Some(Err(e)) => self.failed(req, SessionError::Store(e)),
            None => AuthStep::Wait(verified),
        }
    }

    pub(crate) async fn finish(&self, req: &ServiceRequest, verified: Arc<Checked>) -> AuthStep {
        match self.0.sessions.not_revoked(&verified.facts()).await {
            Ok(()) => AuthStep::Pass(Some(verified.principal())),
            Err(e) => self.failed(req, e),
        }
    }

    fn failed(&self, req: &ServiceRequest, e: SessionError) -> AuthStep {
        match e {
            SessionError::Store(e) => {
                let err = TenancyError::AuthUnavailable {
                    reason: e.to_string().into(),
                };
                self.report(req, &err);
                AuthStep::Refuse(err)
            }
            other => self.refuse(req, other.to_string().into()),
        }
    }

    fn refuse(&self, req: &ServiceRequest, reason: std::borrow::Cow<'static, str>) -> AuthStep {
        let err = TenancyError::Unauthenticated { reason };
        self.report(req, &err);
        AuthStep::Refuse(err)
    }

    fn report(&self, req: &ServiceRequest, err: &TenancyError) {
        emit(
            &*self.0.audit,
            false,
            &AuditEvent {
                stage: Stage::Authentication,
                outcome: Outcome::Rejected(err.code()),
                tenant: None,
                tier: None,
                source: None,
                method: req.method(),
                path: req.match_info().as_str(),
                reason: &err.reason(),
                rule: None,
                policy_version: None,
            },
        );
    }
}

crate::pipeline::transform!(
    /// Standalone, `JwtAuth` only attaches the principal; wrap it outside a
    /// [`TenantResolver`](crate::TenantResolver) (actix runs the last `.wrap()` first), or
    /// better, use [`Tenancy::builder().auth(..)`](crate::TenancyBuilder::auth), which
    /// puts every stage in the right order.
    JwtAuth => |stage| Arc::new(crate::pipeline::Pipeline {
        auth: Some(stage.clone().into_stage()),
        ..crate::pipeline::Pipeline::standalone()
    })
);
