//! Tenant policy, whatever serves the request: may this tenant make this request?
//!
//! A [`PolicyEvaluator`] answers a [`PolicyRequest`] with a [`Decision`]. [`RulePolicy`]
//! is the built-in evaluator (routes, capabilities and feature flags per tier and
//! tenant, versions, rollback, shadow mode); [`CachedPolicy`] puts a TTL cache in
//! front of a slow one. [`judge`] is what a policy stage does with an answer, the same
//! in every adapter.
//!
//! The stages that ask are the adapters': actix-tenancy's `TenantPolicy`,
//! tower-tenancy's `TenancyLayer::builder().policy(..)`.
//!
//! ```
//! use std::sync::Arc;
//! use tenancy_core::policy::{Method, PolicyRequest, PolicySet, RulePolicy, Rules};
//! use tenancy_core::{SourceKind, TenantContext, TenantId, TenantRecord};
//!
//! let policy = RulePolicy::new(
//!     PolicySet::new()
//!         .default_rules(Rules::new().deny("* /admin/**"))
//!         .tier("free", Rules::new().allow("GET /items/*")),
//! )
//! .unwrap();
//! let id = TenantId::parse("globex").unwrap();
//! let globex = TenantContext::new(
//!     id.clone(),
//!     SourceKind::Header,
//!     Arc::new(TenantRecord::new(id, "free")),
//!     None,
//! );
//! assert!(policy.decide(&globex, &PolicyRequest::new(Method::GET, "/items/7")).allowed);
//! assert!(!policy.decide(&globex, &PolicyRequest::new(Method::GET, "/admin/users")).allowed);
//! assert!(!policy.decide(&globex, &PolicyRequest::new(Method::POST, "/items/7")).allowed);
//! ```

mod cache;
mod judge;
mod method;
mod rules;

use std::{borrow::Cow, fmt, sync::Arc};

pub use cache::CachedPolicy;
pub use judge::{
    asked_capability, check_capability_headers, judge, no_tenant, MAX_CAPABILITY_HEADERS,
};
pub use method::{InvalidMethod, Method};
pub use rules::{PolicySet, RulePolicy, Rules, VersionError, DEFAULT_KEEP_VERSIONS};

use crate::{Answer, TenantContext};

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
    /// A request: its method (the core's, or a framework's, converted) and its path
    /// as the router routes it.
    pub fn new(method: impl Into<Method>, path: impl Into<Arc<str>>) -> Self {
        Self {
            method: method.into(),
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

    /// The path as the router routes it (percent-decoded except `%25`, `%2F` and
    /// `%2B`, the way actix decodes it; tower-tenancy decodes it the same way).
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
    /// both are. tower-tenancy's layer gives the template axum matched (its
    /// `MatchedPath`) when it runs inside the router, the route that really runs, and
    /// no route when it wraps the whole router: the path is then all there is to
    /// judge.
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
    /// [`Tenant::can`] and the capability guards. The default
    /// grants nothing: an evaluator that cannot answer fails closed.
    ///
    /// [`Tenant::can`]: https://docs.rs/actix-tenancy/latest/actix_tenancy/struct.Tenant.html#method.can
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
