//! Tenant policy: may this tenant make this request?
//!
//! A [`PolicyEvaluator`] answers with a [`Decision`]; the [`TenantPolicy`] stage runs it
//! after resolution and before quota:
//!
//! | evaluator answer | response |
//! | --- | --- |
//! | allowed | the request goes on |
//! | denied | `403 policy_denied` |
//! | an error, a timeout (default 100 ms) or a panic | `503 policy_unavailable`; the server keeps serving |
//! | no tenant (`allow_missing` let one through) | `403 policy_denied`: no tenant, no permission |
//!
//! Exempt paths skip policy like every stage. Every decision goes to the audit sink
//! with the rule and the policy version that made it.
//!
//! [`RulePolicy`] is the built-in evaluator (routes, capabilities and feature flags
//! per tier and tenant, versions, rollback, shadow mode); [`CachedPolicy`] puts a TTL
//! cache in front of a slow one. Handlers ask the same rules with
//! [`Tenant::can`](crate::Tenant::can), routes with
//! [`guard::feature`](crate::guard::feature).
//!
//! The evaluator sees a [`PolicyRequest`]: the method, the path, the matched route
//! pattern (`/items/{id}`, so rules never depend on ids), the principal's scopes, and
//! the capabilities asked for, read from the headers the stage is told to read
//! ([`capability_header`](TenantPolicyBuilder::capability_header): `X-Model` as
//! `model:<value>`, say); it reads none by default.
//!
//! ```
//! use actix_tenancy::policy::{Decision, PolicyRequest, TenantPolicy};
//! use actix_tenancy::prelude::*;
//! use actix_web::{test, web, App};
//!
//! # actix_web::rt::System::new().block_on(async {
//! // Reports are for pro and enterprise tenants.
//! let policy = TenantPolicy::new(|tenant: &TenantContext, req: &PolicyRequest| {
//!     Ok(if req.route() == Some("/reports") && tenant.tier() == "free" {
//!         Decision::deny("reports need a paid tier").with_rule("reports-paid")
//!     } else {
//!         Decision::allow("default")
//!     })
//! });
//! let registry = InMemoryRegistry::new()
//!     .with(TenantRecord::new(TenantId::parse("globex").unwrap(), "free"))
//!     .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
//! let tenancy = Tenancy::builder()
//!     .resolver(TenantResolver::builder(registry).source(Source::header()).build().unwrap())
//!     .policy(policy)
//!     .build()
//!     .unwrap();
//! let app = test::init_service(
//!     App::new().wrap(tenancy).route("/reports", web::get().to(|| async { "report" })),
//! )
//! .await;
//! let get = |t: &str| test::TestRequest::get().uri("/reports").insert_header(("x-tenant-id", t.to_owned())).to_request();
//! assert_eq!(test::call_service(&app, get("acme")).await.status(), 200);
//! assert_eq!(test::call_service(&app, get("globex")).await.status(), 403);
//! # });
//! ```

mod memo;
mod stage;

pub use stage::{TenantPolicy, TenantPolicyBuilder};
// The engine is the core's: the same evaluators for every adapter.
pub use tenancy_core::policy::{
    CachedPolicy, Decision, InvalidMethod, Method, PolicyError, PolicyEvaluator, PolicyRequest,
    PolicySet, RulePolicy, Rules, VersionError, DEFAULT_KEEP_VERSIONS,
};
