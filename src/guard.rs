//! Route by tenant: actix guards ([`Guard`]) that read the resolved tenant.
//!
//! With the resolver (or [`Tenancy`](crate::Tenancy)) wrapped at `App` level, the tenant
//! is settled before routing, so guards can send tenants to different scopes or
//! handler versions: by [`tier`], [`region`], [`id`], any predicate ([`tenant`]), or
//! by the policy's feature flags and capabilities ([`feature`], [`capability`]). A
//! request without a tenant matches no tenant guard.
//!
//! ```
//! use actix_tenancy::{guard, prelude::*};
//! use actix_web::{test, web, App};
//!
//! # actix_web::rt::System::new().block_on(async {
//! let registry = InMemoryRegistry::new()
//!     .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "enterprise"))
//!     .with(TenantRecord::new(TenantId::parse("globex").unwrap(), "free"));
//! let resolver = TenantResolver::builder(registry).source(Source::header()).build().unwrap();
//! let app = test::init_service(
//!     App::new()
//!         .wrap(resolver)
//!         .service(web::scope("/api").guard(guard::tier("enterprise")).route("/x", web::get().to(|| async { "v2" })))
//!         .service(web::scope("/api").route("/x", web::get().to(|| async { "v1" }))),
//! )
//! .await;
//! let get = |t: &str| test::TestRequest::get().uri("/api/x").insert_header(("x-tenant-id", t.to_owned())).to_request();
//! assert_eq!(test::call_and_read_body(&app, get("acme")).await, "v2");
//! assert_eq!(test::call_and_read_body(&app, get("globex")).await, "v1");
//! # });
//! ```

use actix_web::guard::{Guard, GuardContext};

use crate::core::{Resolution, TenantContext};

/// A guard matching the tenants for which `pred` holds.
pub fn tenant<F>(pred: F) -> TenantGuard<F>
where
    F: Fn(&TenantContext) -> bool,
{
    TenantGuard(pred)
}

/// Tenants on `tier`.
pub fn tier(tier: &'static str) -> TenantGuard<impl Fn(&TenantContext) -> bool> {
    tenant(move |t| t.tier() == tier)
}

/// Tenants whose record names `region`.
pub fn region(region: &'static str) -> TenantGuard<impl Fn(&TenantContext) -> bool> {
    tenant(move |t| t.record().region() == Some(region))
}

/// One tenant, by id.
pub fn id(id: &'static str) -> TenantGuard<impl Fn(&TenantContext) -> bool> {
    tenant(move |t| t.id() == id)
}

/// Tenants for which the feature flag `name` is on (the capability `feature:<name>`,
/// see [`Tenant::can`](crate::Tenant::can)). Needs a policy stage that answers
/// capability checks, such as [`RulePolicy`](crate::policy::RulePolicy); without one,
/// no tenant matches.
pub fn feature(name: &str) -> CapabilityGuard {
    CapabilityGuard(format!("feature:{name}").into())
}

/// Tenants that have `capability` (`"tool:web_search"`), by the policy's rules; see
/// [`feature`].
pub fn capability(capability: &str) -> CapabilityGuard {
    CapabilityGuard(capability.into())
}

/// A guard matching tenants that have a capability; see [`capability`].
#[derive(Debug, Clone)]
pub struct CapabilityGuard(Box<str>);

impl Guard for CapabilityGuard {
    fn check(&self, ctx: &GuardContext<'_>) -> bool {
        let ext = ctx.req_data();
        let Some(r) = ext.get::<Resolution>() else {
            return false;
        };
        match (&r.tenant, &r.capabilities) {
            (Some(t), Some(p)) => p.can(t, &self.0),
            _ => false,
        }
    }
}

/// A guard over the resolved tenant; see [`tenant`].
#[derive(Debug, Clone, Copy)]
pub struct TenantGuard<F>(F);

impl<F> Guard for TenantGuard<F>
where
    F: Fn(&TenantContext) -> bool,
{
    fn check(&self, ctx: &GuardContext<'_>) -> bool {
        let ext = ctx.req_data();
        match ext.get::<Resolution>().and_then(|r| r.tenant.as_deref()) {
            Some(t) => (self.0)(t),
            None => false,
        }
    }
}
