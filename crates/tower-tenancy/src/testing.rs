//! A test kit (feature `testing`): handler unit tests with a resolved tenant, and the
//! core's [`FakeClock`] and conformance suites (`tenancy_core::testing`, re-exported).
//!
//! ```
//! # #[cfg(feature = "axum")]
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use axum::extract::FromRequestParts;
//! use tower_tenancy::{testing, Tenant};
//!
//! let (mut parts, ()) = http::Request::new(()).into_parts();
//! testing::attach(&mut parts.extensions, testing::tenant("acme", "pro"));
//! let tenant = Tenant::from_request_parts(&mut parts, &()).await.unwrap();
//! assert_eq!(tenant.id().as_str(), "acme");
//! # });
//! ```

use std::sync::Arc;

#[cfg(feature = "jwt")]
pub use tenancy_core::testing::revocation_conformance;
pub use tenancy_core::testing::{
    quota_conformance, registry_conformance, registry_unavailable, tenant, FakeClock,
};
use tenancy_core::{error::ProblemJson, TenantContext};

use crate::tenant::{Resolution, Tenant};

/// Puts `ctx` into a request's extensions as the layer would, so that
/// [`Tenant::of`], the `Tenant` extractor (and `Option<Tenant>`) and the `Principal`
/// extractor find it: for calling handlers directly, or for a router under test
/// without the layer. Rejections answer in the default problem+json.
pub fn attach(extensions: &mut http::Extensions, ctx: TenantContext) {
    if let Some(p) = ctx.principal() {
        extensions.insert(p.clone());
    }
    extensions.insert(Resolution {
        tenant: Some(Tenant(Arc::new(ctx))),
        responder: Arc::new(ProblemJson::default()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attached_tenant_and_its_principal_are_found() {
        let acme = tenant("acme", "pro");
        let principal = tenancy_core::Principal::new("alice").with_tenant(acme.id().clone());
        let ctx = TenantContext::new(
            acme.id().clone(),
            acme.source(),
            acme.record_arc().clone(),
            Some(principal),
        );
        let mut ext = http::Extensions::new();
        attach(&mut ext, ctx);
        assert_eq!(Tenant::of(&ext).unwrap().id().as_str(), "acme");
        assert_eq!(
            ext.get::<tenancy_core::Principal>().unwrap().subject(),
            "alice"
        );
    }
}
