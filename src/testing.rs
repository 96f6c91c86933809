//! A test kit (feature `testing`): handler unit tests with a resolved tenant, a
//! [`FakeClock`] for TTLs, refills, budgets and token expiry without sleeping, and
//! conformance suites to run against your own implementations of the crate's traits
//! (the crate's own backends pass them in its tests). All but [`attach`] is
//! `tenancy_core::testing`, re-exported.
//!
//! ```
//! use actix_tenancy::{testing, Tenant};
//! use actix_web::{test, FromRequest};
//!
//! async fn whoami(tenant: Tenant) -> String {
//!     tenant.id().to_string()
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let req = test::TestRequest::default().to_http_request();
//! testing::attach(&req, testing::tenant("acme", "pro"));
//! let tenant = Tenant::extract(&req).await.unwrap();
//! assert_eq!(whoami(tenant).await, "acme");
//! # });
//! ```
//!
//! The [`FakeClock`] drives a quota, a registry cache or the sessions past a period
//! without sleeping:
//!
//! ```
//! use std::time::Duration;
//! use actix_tenancy::{
//!     quota::{LocalQuota, QuotaManager, QuotaPlan, QuotaPlans},
//!     testing::{self, FakeClock},
//!     Moment,
//! };
//!
//! # actix_web::rt::System::new().block_on(async {
//! let time = FakeClock::new();
//! let plans = QuotaPlans::builder()
//!     .tier("free", QuotaPlan::per_minute(1))
//!     .build()
//!     .unwrap();
//! let quota = LocalQuota::with_clock(plans, time.clock());
//! let acme = testing::tenant("acme", "free");
//! assert!(quota.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
//! assert!(!quota.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
//! time.advance(Duration::from_secs(60)); // no sleep: the minute has passed
//! assert!(quota.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
//! # });
//! ```

use std::sync::Arc;

use actix_web::HttpMessage;

use crate::core::{error::ProblemJson, resolution::Resolution, TenantContext};

#[cfg(feature = "jwt")]
pub use tenancy_core::testing::revocation_conformance;
pub use tenancy_core::testing::{
    quota_conformance, registry_conformance, registry_unavailable, tenant, FakeClock,
};

/// Puts `ctx` into `req` as the resolver would, so that the [`Tenant`](crate::Tenant)
/// extractor (and `Option<Tenant>`) find it: for calling handlers directly, or for an
/// app under test without the middleware. Errors answer in the default problem+json.
pub fn attach(req: &impl HttpMessage, ctx: TenantContext) {
    // The principal's one home is the request extensions, as the resolver leaves it.
    if let Some(p) = ctx.principal() {
        req.extensions_mut().insert(p.clone());
    }
    req.extensions_mut().insert(Resolution {
        tenant: Some(Arc::new(ctx)),
        exempt: false,
        responder: Arc::new(ProblemJson::default()),
        capabilities: None,
    });
}

#[cfg(test)]
mod tests {
    use actix_web::{test::TestRequest, FromRequest};

    use super::*;
    use crate::{Principal, Tenant};

    #[actix_web::test]
    async fn an_attached_tenant_and_its_principal_are_found() {
        let req = TestRequest::default().to_http_request();
        let acme = tenant("acme", "pro");
        let principal = Principal::new("alice").with_tenant(acme.id().clone());
        let ctx = TenantContext::new(
            acme.id().clone(),
            acme.source(),
            acme.record_arc().clone(),
            Some(principal),
        );
        attach(&req, ctx);
        let got = Tenant::extract(&req).await.unwrap();
        assert_eq!(got.id().as_str(), "acme");
        assert_eq!(Principal::extract(&req).await.unwrap().subject(), "alice");
    }
}
