//! [`Tenancy`]: every stage composed as one `.wrap()`.

use std::{fmt, sync::Arc};

use crate::{
    error::{ConfigError, ErrorResponder},
    pipeline::Pipeline,
    policy::TenantPolicy,
    quota::TenantQuota,
    resolve::TenantResolver,
};

/// The composed pipeline: authentication, resolution, policy and quota in the only
/// correct order, as a single `.wrap()`, so actix's reversed wrap order cannot be got
/// wrong.
///
/// Like every stage, build it once, outside `HttpServer::new`'s closure, and clone it
/// into each worker: clones share the registry, its cache and every other piece of
/// state. A pipeline built inside the closure gets one cache per worker, which is a
/// bug.
///
/// ```
/// use actix_tenancy::{registry::{InMemoryRegistry, TenantRecord}, resolve::{Source, TenantResolver}, Tenancy, Tenant, TenantId};
/// use actix_web::{test, web, App};
///
/// # actix_web::rt::System::new().block_on(async {
/// let registry = InMemoryRegistry::new()
///     .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
/// let tenancy = Tenancy::builder()
///     .resolver(TenantResolver::builder(registry).source(Source::header()).build().unwrap())
///     .build()
///     .unwrap();
///
/// let app = test::init_service(
///     App::new()
///         .wrap(tenancy.clone())
///         .route("/tier", web::get().to(|t: Tenant| async move { t.tier().to_owned() })),
/// )
/// .await;
/// let req = test::TestRequest::get().uri("/tier").insert_header(("x-tenant-id", "acme")).to_request();
/// assert_eq!(test::call_and_read_body(&app, req).await, "pro");
/// # });
/// ```
#[derive(Clone)]
pub struct Tenancy {
    pipeline: Arc<Pipeline>,
}

impl fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenancy")
            .field("resolver", &self.pipeline.resolve)
            .finish_non_exhaustive()
    }
}

impl Tenancy {
    /// A builder for the composed pipeline.
    pub fn builder() -> TenancyBuilder {
        TenancyBuilder {
            #[cfg(feature = "jwt")]
            auth: None,
            resolver: None,
            policy: None,
            quota: None,
            responder: None,
        }
    }
}

/// Builds a [`Tenancy`].
#[must_use]
pub struct TenancyBuilder {
    #[cfg(feature = "jwt")]
    auth: Option<crate::session::JwtAuth>,
    resolver: Option<TenantResolver>,
    policy: Option<TenantPolicy>,
    quota: Option<TenantQuota>,
    responder: Option<Arc<dyn ErrorResponder>>,
}

impl fmt::Debug for TenancyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenancyBuilder")
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

impl TenancyBuilder {
    /// The authentication stage (feature `jwt`): runs first, on every path the
    /// resolver does not exempt. The resolver must then read the token's tenant with
    /// [`Source::claim`](crate::resolve::Source::claim), or `build` fails: a token for
    /// tenant A must never be served as tenant B because a header said so.
    #[cfg(feature = "jwt")]
    pub fn auth(mut self, auth: crate::session::JwtAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The resolution stage (required).
    pub fn resolver(mut self, resolver: TenantResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// The policy stage: runs after resolution, before quota.
    pub fn policy(mut self, policy: TenantPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The quota stage: runs after resolution and policy, on requests that have a
    /// tenant.
    pub fn quota(mut self, quota: TenantQuota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// How every stage's rejections are answered. Default: the resolver's responder.
    pub fn responder(mut self, responder: impl ErrorResponder) -> Self {
        self.responder = Some(Arc::new(responder));
        self
    }

    /// Checks the configuration and builds the pipeline.
    pub fn build(self) -> Result<Tenancy, ConfigError> {
        let resolver = self.resolver.ok_or(ConfigError::Missing("a resolver"))?;
        let responder = self
            .responder
            .unwrap_or_else(|| Arc::clone(&resolver.pipeline.responder));
        #[cfg(feature = "jwt")]
        let auth = match self.auth {
            Some(_) if !resolver.stage.reads_claims() => {
                return Err(ConfigError::Missing(
                    "Source::claim() in the resolver, so that the token's tenant wins",
                ))
            }
            auth => auth.map(crate::session::JwtAuth::into_stage),
        };
        #[cfg(not(feature = "jwt"))]
        let auth = None;
        Ok(Tenancy {
            pipeline: Arc::new(Pipeline {
                auth,
                resolve: Some(resolver.stage),
                policy: self.policy.map(TenantPolicy::into_stage),
                quota: self.quota.map(TenantQuota::into_stage),
                responder,
            }),
        })
    }
}

crate::pipeline::transform!(
    Tenancy => |tenancy| Arc::clone(&tenancy.pipeline)
);
