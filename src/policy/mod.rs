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

mod cache;
mod memo;
mod rules;
mod stage;

use std::{borrow::Cow, fmt, sync::Arc};

use actix_web::http::Method;

pub use cache::CachedPolicy;
pub use rules::{PolicySet, RulePolicy, Rules, VersionError, DEFAULT_KEEP_VERSIONS};
pub use stage::{TenantPolicy, TenantPolicyBuilder};

use crate::core::{Answer, TenantContext};

/// What the evaluator is asked about.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PolicyRequest {
    method: Method,
    path: Arc<str>,
    route: Option<Arc<str>>,
    scopes: Vec<String>,
    capabilities: Vec<String>,
}

impl PolicyRequest {
    /// A request, for evaluators tested on their own.
    pub fn new(method: Method, path: impl Into<Arc<str>>) -> Self {
        Self {
            method,
            path: path.into(),
            route: None,
            scopes: Vec::new(),
            capabilities: Vec::new(),
        }
    }

    /// Sets the matched route pattern.
    #[must_use]
    pub fn with_route(mut self, route: impl Into<Arc<str>>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Adds a capability asked for (`model:gpt-4o`, `tool:web_search`).
    #[must_use]
    pub fn with_capability(mut self, capability: impl Into<String>) -> Self {
        self.capabilities.push(capability.into());
        self
    }

    /// Sets the principal's scopes.
    #[must_use]
    pub fn with_scopes(mut self, scopes: Vec<String>) -> Self {
        self.scopes = scopes;
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path as actix routes it (percent-decoded except reserved characters).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The first route pattern that matches the path (`/items/{id}`), when one does.
    ///
    /// The middleware runs before routing, and the first matching pattern is found
    /// without actix's guards: where patterns overlap and guards decide (a `#[get]`
    /// handler on `/items/{id}` registered before a `#[post]` one on `/items/export`),
    /// the router may run another handler than this pattern's. An evaluator that
    /// denies by route must also judge [`path`](Self::path), as
    /// [`RulePolicy`] does: a request is allowed only when
    /// both are.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The principal's scopes (empty without a principal).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The capabilities asked for.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }
}

/// An evaluator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Why, for the audit log (never sent to clients).
    pub reason: Cow<'static, str>,
    /// The id of the rule that decided, if the evaluator has rules.
    pub rule: Option<Arc<str>>,
    /// The version of the policy that decided.
    pub version: u64,
    /// For a denial: the capability asked for that was refused (`model:demo-large`),
    /// when that was the reason. The stage tells the client its kind (`model`).
    pub refused: Option<Arc<str>>,
}

impl Decision {
    /// Allowed, because of `reason`.
    pub fn allow(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            allowed: true,
            reason: reason.into(),
            rule: None,
            version: 0,
            refused: None,
        }
    }

    /// Denied, because of `reason`.
    pub fn deny(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            allowed: false,
            ..Self::allow(reason)
        }
    }

    /// Names the rule that decided.
    #[must_use]
    pub fn with_rule(mut self, rule: impl Into<Arc<str>>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// Names the policy version that decided.
    #[must_use]
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// Names the capability a denial refused (`model:demo-large`).
    #[must_use]
    pub fn with_refused(mut self, capability: impl Into<Arc<str>>) -> Self {
        self.refused = Some(capability.into());
        self
    }
}

/// The evaluator could not decide. The message is for logs only; the client gets
/// `503 policy_unavailable`.
#[derive(Debug, Clone)]
pub struct PolicyError(Cow<'static, str>);

impl PolicyError {
    /// A failure with a message for the logs.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy evaluation failed: {}", self.0)
    }
}

impl std::error::Error for PolicyError {}

/// Decides whether a tenant may make a request. Usable as `Arc<dyn PolicyEvaluator>`.
///
/// Implement [`evaluate`](Self::evaluate): an evaluator that decides in memory answers
/// [`Answer::Now`] (no future, no timer); one that asks a policy service answers
/// [`Answer::later`], and the stage waits for it at most its timeout (do the work
/// inside it: see [`Answer`]). A closure
/// `Fn(&TenantContext, &PolicyRequest) -> Result<Decision, PolicyError>` is an
/// evaluator that answers now.
pub trait PolicyEvaluator: Send + Sync + 'static {
    /// Decides.
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>>;

    /// The decision of a shadow version running beside the active one, if there is one
    /// and it can decide without waiting. The stage audits it as would-allow or
    /// would-deny; it never changes the response.
    fn shadow(&self, tenant: &TenantContext, req: &PolicyRequest) -> Option<Decision> {
        let _ = (tenant, req);
        None
    }

    /// Whether `tenant` has `capability` (`"tool:web_search"`, `"feature:beta"`), for
    /// [`Tenant::can`](crate::Tenant::can) and the capability guards. The default
    /// grants nothing: an evaluator that cannot answer fails closed.
    fn can(&self, tenant: &TenantContext, capability: &str) -> bool {
        let _ = (tenant, capability);
        false
    }

    /// The version decisions are made by now, if the evaluator is versioned; a
    /// [`CachedPolicy`] keys its entries by it.
    fn version(&self) -> Option<u64> {
        None
    }

    /// Lets the stage remember decisions, per worker, while the answer stays the same
    /// number. `Some(epoch)` promises that, for as long as this returns `epoch`,
    /// [`evaluate`](Self::evaluate) gives a request that asks for no
    /// capability the same decision for the same tenant record, method and routed
    /// path: it reads nothing else (no scopes, no claims, no clock, no other header),
    /// and no shadow version needs to see each request. The stage then evaluates a
    /// repeated request once per worker and epoch (at most 4,096 remembered per
    /// worker). The default, `None`, asks on every request.
    /// [`RulePolicy`] keeps this promise: its epoch moves with every change of the
    /// active version, and it answers `None` while a shadow version runs.
    fn memo_epoch(&self) -> Option<u64> {
        None
    }
}

impl<F> PolicyEvaluator for F
where
    F: Fn(&TenantContext, &PolicyRequest) -> Result<Decision, PolicyError> + Send + Sync + 'static,
{
    #[inline]
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        Answer::Now(self(tenant, req))
    }
}

impl<P: PolicyEvaluator + ?Sized> PolicyEvaluator for std::sync::Arc<P> {
    #[inline]
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        (**self).evaluate(tenant, req)
    }

    fn shadow(&self, tenant: &TenantContext, req: &PolicyRequest) -> Option<Decision> {
        (**self).shadow(tenant, req)
    }

    fn can(&self, tenant: &TenantContext, capability: &str) -> bool {
        (**self).can(tenant, capability)
    }

    fn version(&self) -> Option<u64> {
        (**self).version()
    }

    fn memo_epoch(&self) -> Option<u64> {
        (**self).memo_epoch()
    }
}
