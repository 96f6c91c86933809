//! The extractors handlers take: [`Tenant`] and [`Principal`](crate::Principal) (whose
//! actix impl is in `tenancy-core`, which owns the type). They only read what the
//! middleware stored in the request extensions; nothing is resolved again.

use std::{
    fmt,
    future::{ready, Ready},
    ops::Deref,
    sync::Arc,
};

use actix_web::{dev::Payload, FromRequest, HttpRequest};

use crate::core::{
    error::{respond_err, ProblemJson, TenancyError},
    Capabilities, Resolution, TenantContext,
};

/// The resolved tenant of a request, as a handler argument.
///
/// ```
/// use actix_tenancy::Tenant;
/// use actix_web::HttpResponse;
///
/// async fn whoami(tenant: Tenant) -> HttpResponse {
///     HttpResponse::Ok().body(format!("{} on {}", tenant.id(), tenant.tier()))
/// }
/// ```
///
/// Extraction never re-resolves anything: it reads the one [`TenantContext`] the
/// resolver stored.
/// - Resolver ran, tenant found: the handler gets it.
/// - Resolver ran, no tenant (exempt path or `allow_missing`): `401 tenant_missing`.
///   Take `Option<Tenant>` on routes where a tenant is optional.
/// - No resolver ran (the middleware is not wrapped around this route): `500`, and an
///   error log line naming the missing middleware. This is a bug in the application,
///   and it fails closed.
#[derive(Clone)]
pub struct Tenant {
    ctx: Arc<TenantContext>,
    capabilities: Option<Arc<dyn Capabilities>>,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tenant").field(&self.ctx).finish()
    }
}

impl Tenant {
    /// The shared context.
    pub fn context(&self) -> &Arc<TenantContext> {
        &self.ctx
    }

    /// Unwraps the shared context.
    pub fn into_inner(self) -> Arc<TenantContext> {
        self.ctx
    }

    /// Whether the tenant has `capability` (`"tool:web_search"`, `"model:gpt-4o"`,
    /// `"feature:beta"`) under the policy the request passed, by the same rules (see
    /// [`RulePolicy`](crate::policy::RulePolicy)). Without a policy stage, or with an
    /// evaluator that does not answer capability checks, nothing is granted.
    ///
    /// ```
    /// use actix_tenancy::Tenant;
    ///
    /// async fn search(tenant: Tenant) -> actix_web::Result<&'static str> {
    ///     tenant.require("tool:web_search")?;
    ///     Ok("results")
    /// }
    /// ```
    pub fn can(&self, capability: &str) -> bool {
        self.capabilities
            .as_ref()
            .is_some_and(|c| c.can(&self.ctx, capability))
    }

    /// `Ok` when the tenant [`can`](Self::can) use `capability`; otherwise the
    /// [`TenancyError`] that answers `403 policy_denied` (as `application/problem+json`,
    /// through its `ResponseError` impl; with a custom responder, check
    /// [`can`](Self::can) and answer in your own shape). The capability is not echoed
    /// to the client.
    pub fn require(&self, capability: &str) -> Result<(), TenancyError> {
        if self.can(capability) {
            return Ok(());
        }
        Err(TenancyError::PolicyDenied {
            reason: format!("capability {capability:?} not granted").into(),
        })
    }
}

impl Deref for Tenant {
    type Target = TenantContext;
    #[inline]
    fn deref(&self) -> &TenantContext {
        &self.ctx
    }
}

impl FromRequest for Tenant {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    #[inline]
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match Resolution::of(req) {
            Some(Resolution {
                tenant: Some(ctx),
                capabilities,
                ..
            }) => Ok(Tenant { ctx, capabilities }),
            Some(Resolution {
                tenant: None,
                responder,
                ..
            }) => Err(respond_err(TenancyError::TenantMissing, &*responder, req)),
            None => {
                tracing::error!(
                    target: "actix_tenancy",
                    path = %req.path(),
                    "the Tenant extractor found no tenant resolution: wrap the app or scope \
                     in actix_tenancy::TenantResolver (or Tenancy) before routing"
                );
                Err(respond_err(
                    TenancyError::Misconfigured("TenantResolver middleware missing"),
                    &ProblemJson::default(),
                    req,
                ))
            }
        })
    }
}
