//! [`Tenancy`]: every stage composed as one `.wrap()`. The composition root: the one
//! module that names every stage; the stages themselves know only the core and the
//! pipeline's protocol.

use std::{fmt, sync::Arc};

use crate::{
    core::error::ConfigError,
    pipeline::{common_setters, Common, Composed, Pipeline, Stage},
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
            .field("stages", &self.pipeline.stages.len())
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
            common: Common::default(),
        }
    }
}

/// Builds a [`Tenancy`].
#[must_use]
pub struct TenancyBuilder {
    #[cfg(feature = "jwt")]
    auth: Option<crate::session::TenantAuth>,
    resolver: Option<TenantResolver>,
    policy: Option<TenantPolicy>,
    quota: Option<TenantQuota>,
    common: Common,
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
    pub fn auth(mut self, auth: crate::session::TenantAuth) -> Self {
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

    common_setters!();

    /// Checks the configuration and builds the pipeline. The responder, the audit sink,
    /// the metrics and the access log set here are every stage's: they live on the
    /// pipeline, in one place.
    pub fn build(self) -> Result<Tenancy, ConfigError> {
        let resolver = self.resolver.ok_or(ConfigError::Missing("a resolver"))?;
        #[cfg(feature = "jwt")]
        let reads_claims = resolver.reads_claims();
        let mut stages: Vec<Arc<dyn Stage>> = Vec::with_capacity(4);
        #[cfg(feature = "jwt")]
        if let Some(auth) = self.auth {
            if !reads_claims {
                return Err(ConfigError::Conflict(
                    "an authentication stage needs Source::claim() in the resolver, so that \
                     the token's tenant wins over every other source"
                        .into(),
                ));
            }
            stages.push(auth.into_stage());
        }
        stages.push(resolver.into_stage());
        if let Some(policy) = self.policy {
            stages.push(policy.into_stage());
        }
        if let Some(quota) = self.quota {
            stages.push(quota.into_stage());
        }
        Ok(Tenancy {
            pipeline: Arc::new(Pipeline::new(stages, self.common)),
        })
    }
}

impl Composed for Tenancy {
    fn pipeline(&self) -> Arc<Pipeline> {
        Arc::clone(&self.pipeline)
    }
}

crate::pipeline::transform!(Tenancy);
