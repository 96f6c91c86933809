//! The quota stage of a [`TenancyLayer`](crate::TenancyLayer): [`TenantQuota`] charges
//! each request to its tenant's plan before the inner service runs, and settles the
//! charge once the response's body has been sent.

use std::{fmt, future::IntoFuture as _, sync::Arc};

use http::{header::HeaderName, request::Parts, HeaderMap, HeaderValue, StatusCode};
use tenancy_core::{
    caught, caught_async,
    error::{ConfigError, TenancyError},
    observe::Outcome,
    quota::{
        correction, judge, ActualCost, HeaderCost, Judgement, QueryCost, QuotaDecision, QuotaError,
        QuotaFields, QuotaManager,
    },
    Charge, Moment, TenantContext,
};

/// `X-Quota-Remaining`: units that could pass now (rate and budgets).
pub const QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");
/// `X-Quota-Shadow: would-deny`, on requests a shadow plan would have refused.
pub const QUOTA_SHADOW: HeaderName = HeaderName::from_static("x-quota-shadow");
/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How many units a request costs, read from its head before the inner service runs.
///
/// A closure `Fn(&Parts) -> u32` is an estimator; the core's
/// [`HeaderCost`] and [`QueryCost`] read a cost the client names. Returning an error
/// rejects the
/// request (`400 cost_invalid` for [`TenancyError::CostInvalid`]): a cost the client
/// sends is input like any other, and a bad one is never a credit.
pub trait CostEstimator: Send + Sync + 'static {
    /// The cost of the request whose head is `head`.
    fn estimate(&self, head: &Parts) -> Result<u32, TenancyError>;
}

impl<F> CostEstimator for F
where
    F: Fn(&Parts) -> u32 + Send + Sync + 'static,
{
    fn estimate(&self, head: &Parts) -> Result<u32, TenancyError> {
        Ok(self(head))
    }
}

/// A cost in a header (`x-token-count: 42`), read as actix-tenancy reads it.
impl CostEstimator for HeaderCost {
    fn estimate(&self, head: &Parts) -> Result<u32, TenancyError> {
        let values = head.headers.get_all(self.name()).iter();
        self.cost(values.map(|v| v.as_bytes()))
    }
}

/// A cost in a query parameter (`?max_tokens=600`), read as actix-tenancy reads it.
impl CostEstimator for QueryCost {
    fn estimate(&self, head: &Parts) -> Result<u32, TenancyError> {
        self.cost(head.uri.query().unwrap_or(""))
    }
}

/// Costs by route (feature `axum`): the estimator bound to the method and the route
/// template axum's router matched (`/api/complete`, `/items/{id}`, as written in the
/// `Router`, nested routers' prefixes included); every other request costs
/// [`otherwise`](RouteCostBuilder::otherwise) (default: 1 unit).
///
/// The template is axum's `MatchedPath`: the route that really runs, there when the
/// layer runs inside the router (`Router::layer`, `route_layer`). A `HEAD` request
/// costs what its route's `GET` is bound to (axum runs the `GET` handler for it) unless
/// `HEAD` is bound itself. A layer wrapped around the whole router runs before it and
/// knows no route: a request whose method has bound routes is then charged the
/// highest of their costs and `otherwise`'s, never less than the route that runs, and
/// every bound estimator reads the request (a bad cost one of them refuses is a
/// `400`).
///
/// ```
/// use http::{request::Parts, Method};
/// use tower_tenancy::quota::RouteCost;
/// use tenancy_core::quota::QueryCost;
///
/// let cost = RouteCost::builder()
///     .route(Method::POST, "/api/complete", QueryCost::new("max_tokens").max(32_000))
///     .otherwise(|_: &Parts| 0)
///     .build()
///     .unwrap();
/// ```
#[cfg(feature = "axum")]
#[derive(Clone)]
pub struct RouteCost {
    routes: Arc<[Bound]>,
    otherwise: Arc<dyn CostEstimator>,
}

/// An estimator bound to a method and a route template.
#[cfg(feature = "axum")]
type Bound = (http::Method, Arc<str>, Arc<dyn CostEstimator>);

#[cfg(feature = "axum")]
impl fmt::Debug for RouteCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<_> = self.routes.iter().map(|(m, p, _)| (m, p)).collect();
        f.debug_struct("RouteCost")
            .field("routes", &routes)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "axum")]
impl RouteCost {
    /// A builder with no route: every request costs 1 until routes are added.
    pub fn builder() -> RouteCostBuilder {
        RouteCostBuilder {
            routes: Vec::new(),
            otherwise: Arc::new(|_: &Parts| 1),
        }
    }
}

/// Builds a [`RouteCost`].
#[cfg(feature = "axum")]
#[must_use]
pub struct RouteCostBuilder {
    routes: Vec<Bound>,
    otherwise: Arc<dyn CostEstimator>,
}

#[cfg(feature = "axum")]
impl fmt::Debug for RouteCostBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<_> = self.routes.iter().map(|(m, p, _)| (m, p)).collect();
        f.debug_struct("RouteCostBuilder")
            .field("routes", &routes)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "axum")]
impl RouteCostBuilder {
    /// Requests with `method` routed to `template` (as written in the `Router`,
    /// nested prefixes included: `/api/complete`, `/items/{id}`) cost what
    /// `estimator` says.
    pub fn route(
        mut self,
        method: http::Method,
        template: &str,
        estimator: impl CostEstimator,
    ) -> Self {
        self.routes
            .push((method, Arc::from(template), Arc::new(estimator)));
        self
    }

    /// What every other request costs (default: 1 unit).
    pub fn otherwise(mut self, estimator: impl CostEstimator) -> Self {
        self.otherwise = Arc::new(estimator);
        self
    }

    /// Checks the templates (each starts with `/`, none bound twice) and builds the
    /// estimator.
    pub fn build(self) -> Result<RouteCost, ConfigError> {
        tenancy_core::quota::check_routes(self.routes.iter().map(|(m, t, _)| (m.as_str(), &**t)))?;
        Ok(RouteCost {
            routes: self.routes.into(),
            otherwise: self.otherwise,
        })
    }
}

#[cfg(feature = "axum")]
impl CostEstimator for RouteCost {
    /// The estimator of the route axum matched (for `HEAD`, its `GET` one unless
    /// `HEAD` is bound); without a route (the layer runs before the router), the
    /// highest of the costs bound to the method and `otherwise`'s.
    fn estimate(&self, head: &Parts) -> Result<u32, TenancyError> {
        // axum answers `HEAD` with the `GET` handler where no `HEAD` one is bound: a
        // `HEAD` request costs what its route's `GET` is bound to, unless `HEAD` is
        // bound itself.
        let is_head = head.method == http::Method::HEAD;
        let serves = |m: &http::Method| *m == head.method || (is_head && *m == http::Method::GET);
        let mut bound = self.routes.iter().filter(|(m, ..)| serves(m)).peekable();
        if bound.peek().is_none() {
            return self.otherwise.estimate(head);
        }
        match head.extensions.get::<axum::extract::MatchedPath>() {
            Some(route) => {
                let on_route = |m: &http::Method| {
                    self.routes
                        .iter()
                        .find(|(bm, t, _)| bm == m && **t == *route.as_str())
                };
                let hit = match on_route(&head.method) {
                    Some(hit) => Some(hit),
                    None if is_head => on_route(&http::Method::GET),
                    None => None,
                };
                match hit {
                    Some((_, _, estimator)) => estimator.estimate(head),
                    None => self.otherwise.estimate(head),
                }
            }
            None => {
                // No route known yet: the highest of every cost the request may be
                // charged, `otherwise` included.
                let mut highest = self.otherwise.estimate(head)?;
                for (_, _, estimator) in bound {
                    highest = highest.max(estimator.estimate(head)?);
                }
                Ok(highest)
            }
        }
    }
}

/// The quota stage: give it to
/// [`TenancyLayer::builder(..).quota(..)`](crate::TenancyLayerBuilder::quota). It runs
/// after resolution, on every request that has a tenant; a request with no tenant (an
/// exempt path, or `allow_missing`) is not charged.
///
/// The same stage as actix-tenancy's `TenantQuota`, on the same engines
/// ([`LocalQuota`](tenancy_core::quota::LocalQuota), `RedisQuota`, or your own
/// [`QuotaManager`]): `429 quota_exceeded` with `Retry-After`, `X-Quota-Remaining: 0`
/// and the `RateLimit-Policy` / `RateLimit` fields when the tenant is over its plan (a
/// gRPC request gets `RESOURCE_EXHAUSTED` with a `RetryInfo`), `503
/// quota_unavailable` when the manager cannot answer. Allowed responses carry the same
/// fields.
///
/// ```
/// use axum::{routing::get, Router};
/// use tenancy_core::quota::{LocalQuota, Period, QuotaPlan, QuotaPlans};
/// use tenancy_core::{registry::InMemoryRegistry, TenantId, TenantRecord};
/// use tower_tenancy::{Source, TenancyLayer, TenantQuota};
///
/// let plans = QuotaPlans::builder()
///     .tier("free", QuotaPlan::per_second(2).budget(1_000, Period::Day))
///     .build()
///     .unwrap();
/// let registry = InMemoryRegistry::new()
///     .with(TenantRecord::new(TenantId::parse("globex").unwrap(), "free"));
/// let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(
///     TenancyLayer::builder(registry)
///         .source(Source::header())
///         .quota(TenantQuota::new(LocalQuota::new(plans)))
///         .build()
///         .unwrap(),
/// );
/// ```
#[derive(Clone)]
pub struct TenantQuota(pub(crate) Arc<QuotaStage>);

impl fmt::Debug for TenantQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TenantQuota {
    /// The stage for `manager` with the defaults: one unit per request, quota headers
    /// on every response, no refunds.
    pub fn new(manager: impl QuotaManager) -> Self {
        Self::builder(manager).assemble()
    }

    /// A builder for the stage of `manager`.
    pub fn builder(manager: impl QuotaManager) -> TenantQuotaBuilder {
        TenantQuotaBuilder {
            manager: Arc::new(manager),
            estimator: Arc::new(|_: &Parts| 1),
            headers_on_success: true,
            refund_server_errors: false,
            min_cost: 1,
        }
    }
}

/// Builds a [`TenantQuota`]: the same settings as actix-tenancy's.
#[must_use]
pub struct TenantQuotaBuilder {
    manager: Arc<dyn QuotaManager>,
    estimator: Arc<dyn CostEstimator>,
    headers_on_success: bool,
    refund_server_errors: bool,
    min_cost: u32,
}

impl fmt::Debug for TenantQuotaBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantQuotaBuilder")
            .field("headers_on_success", &self.headers_on_success)
            .field("refund_server_errors", &self.refund_server_errors)
            .field("min_cost", &self.min_cost)
            .finish_non_exhaustive()
    }
}

impl TenantQuotaBuilder {
    /// The least a request costs, whatever its estimator says (default: 1). A cost a
    /// client names of 0 would otherwise pass an exhausted budget and take nothing from
    /// the rate. Set 0 only knowingly, for requests that are free.
    pub fn min_cost(mut self, units: u32) -> Self {
        self.min_cost = units;
        self
    }

    /// How much a request costs (default: 1).
    pub fn cost(mut self, estimator: impl CostEstimator) -> Self {
        self.estimator = Arc::new(estimator);
        self
    }

    /// Whether allowed responses carry `X-Quota-Remaining` and the `RateLimit` fields
    /// (default: yes). Refusals always carry them.
    pub fn headers_on_success(mut self, on: bool) -> Self {
        self.headers_on_success = on;
        self
    }

    /// Refund the charged units when the request is not served (default: no): the
    /// inner service answers with a 5xx or fails, the response's body fails mid-way,
    /// or the client goes away before the body has been sent to its end. Budgets get
    /// the units back; a local rate limiter cannot un-admit a request.
    pub fn refund_server_errors(mut self, on: bool) -> Self {
        self.refund_server_errors = on;
        self
    }

    /// Builds the stage. Every combination of these settings is valid; the `Result`
    /// keeps the construction of every stage the same.
    pub fn build(self) -> Result<TenantQuota, ConfigError> {
        Ok(self.assemble())
    }

    fn assemble(self) -> TenantQuota {
        TenantQuota(Arc::new(QuotaStage {
            manager: self.manager,
            estimator: self.estimator,
            headers_on_success: self.headers_on_success,
            refund_server_errors: self.refund_server_errors,
            min_cost: self.min_cost,
        }))
    }
}

pub(crate) struct QuotaStage {
    manager: Arc<dyn QuotaManager>,
    estimator: Arc<dyn CostEstimator>,
    headers_on_success: bool,
    refund_server_errors: bool,
    min_cost: u32,
}

impl fmt::Debug for QuotaStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantQuota")
            .field("headers_on_success", &self.headers_on_success)
            .field("refund_server_errors", &self.refund_server_errors)
            .field("min_cost", &self.min_cost)
            .finish_non_exhaustive()
    }
}

/// What the stage says of a request: the audit event's words and outcome.
pub(crate) struct Said {
    pub(crate) outcome: Outcome,
    pub(crate) why: std::borrow::Cow<'static, str>,
}

/// A quota refusal: the error, and the fields its response carries.
pub(crate) struct Refused {
    pub(crate) err: TenancyError,
    pub(crate) fields: Option<QuotaFields>,
}

/// An admission: the fields the response carries, and the charge to settle.
pub(crate) struct Charged {
    pub(crate) fields: Option<QuotaFields>,
    pub(crate) settlement: Settlement,
}

/// The stage's decision on one request, and what to report of it (`None`: a pass
/// nobody listens to).
pub(crate) type Decided = (Result<Charged, Refused>, Option<Said>);

impl QuotaStage {
    /// The request's cost: the estimator's, at least `min_cost`.
    pub(crate) fn estimate(&self, head: &Parts) -> Result<u32, TenancyError> {
        caught("CostEstimator::estimate", || self.estimator.estimate(head))
            .unwrap_or(Err(TenancyError::Panicked("the cost estimator panicked")))
            .map(|cost| cost.max(self.min_cost))
    }

    /// Asks the manager without waiting: `None` when it must wait.
    pub(crate) fn check_now(
        &self,
        tenant: &TenantContext,
        cost: u32,
        at: &mut Moment,
    ) -> Option<Result<QuotaDecision, QuotaError>> {
        caught("QuotaManager::check", || {
            self.manager.check(tenant, cost, at).now()
        })
        .unwrap_or_else(|| Some(Err(QuotaError::new("the quota manager panicked"))))
    }

    /// Asks the manager again and waits for its answer; a panic, when asked or while
    /// answering, is an unavailable manager.
    pub(crate) async fn check_later(
        &self,
        tenant: &TenantContext,
        cost: u32,
        now: std::time::Instant,
    ) -> Result<QuotaDecision, QuotaError> {
        let panicked = || Err(QuotaError::new("the quota manager panicked"));
        let Some(check) = caught("QuotaManager::check", || {
            self.manager.check(tenant, cost, &mut Moment::at(now))
        }) else {
            return panicked();
        };
        caught_async("QuotaManager::check", check.into_future())
            .await
            .unwrap_or_else(panicked)
    }

    /// Carries out the core's judgement of the manager's answer, as actix-tenancy's
    /// stage does; `audit_pass` is whether an admission is reported.
    pub(crate) fn decided(
        self: &Arc<Self>,
        tenant: Arc<TenantContext>,
        cost: u32,
        answer: Result<QuotaDecision, QuotaError>,
        audit_pass: bool,
    ) -> Decided {
        match judge(answer, cost, self.headers_on_success) {
            Judgement::Refuse { err, fields, why } => {
                let said = Said {
                    outcome: Outcome::Rejected(err.code()),
                    why,
                };
                (Err(Refused { err, fields }), Some(said))
            }
            Judgement::Admit {
                charge,
                fields,
                outcome,
                why,
            } => {
                let said = (outcome != Outcome::Allowed || audit_pass).then(|| Said {
                    outcome,
                    why: why.into(),
                });
                let settlement = Settlement {
                    stage: Arc::clone(self),
                    tenant,
                    charge,
                    actual: None,
                    served: false,
                };
                (Ok(Charged { fields, settlement }), said)
            }
        }
    }
}

/// A refusal for `err` with no quota fields (a bad cost), reported with its reason.
pub(crate) fn refused(err: TenancyError) -> Decided {
    let said = Said {
        outcome: Outcome::Rejected(err.code()),
        why: err.reason().into_owned().into(),
    };
    (Err(Refused { err, fields: None }), Some(said))
}

/// Writes the quota fields into a response's headers.
pub(crate) fn write(fields: QuotaFields, map: &mut HeaderMap) {
    if let Some(remaining) = fields.remaining {
        map.insert(QUOTA_REMAINING, HeaderValue::from(remaining));
    }
    if let Some(policy) = fields.plan.as_deref().and_then(|p| p.http_policy_header()) {
        map.insert(RATELIMIT_POLICY, policy.clone());
    }
    if let Some(state) = fields
        .state
        .and_then(|s| HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok())
    {
        map.insert(RATELIMIT, state);
    }
    if let Some(secs) = fields.retry_after {
        map.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if fields.shadow {
        map.insert(QUOTA_SHADOW, HeaderValue::from_static("would-deny"));
    }
}

/// A charge to settle once the request has ended. Dropped before it was
/// [`served`](Self::served), the request was abandoned: the inner service failed,
/// the body failed mid-way, or the client went away. Its correction is made then.
pub(crate) struct Settlement {
    stage: Arc<QuotaStage>,
    tenant: Arc<TenantContext>,
    charge: Charge,
    /// The cost the response reported ([`ActualCost`]).
    actual: Option<u32>,
    /// The response's body was sent to its end.
    served: bool,
}

impl fmt::Debug for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settlement")
            .field("tenant", &self.tenant.id())
            .field("units", &self.charge.units())
            .field("actual", &self.actual)
            .field("served", &self.served)
            .finish()
    }
}

impl Settlement {
    /// The response's head is known: a `5xx` is a request not served (refunded when
    /// refunds are on, at once); otherwise its [`ActualCost`] is kept for the end of
    /// its body. `None` when nothing remains to settle.
    pub(crate) fn answered(
        mut self,
        status: StatusCode,
        extensions: &http::Extensions,
    ) -> Option<Self> {
        self.actual = extensions.get::<ActualCost>().map(|c| c.0);
        if status.is_server_error() && self.stage.refund_server_errors {
            // Dropped unserved: refunded.
            return None;
        }
        Some(self)
    }

    /// The response's body was sent to its end.
    pub(crate) fn served(&mut self) {
        self.served = true;
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        let refund = self.stage.refund_server_errors;
        let Some(actual) = correction(self.charge, refund, self.served, self.actual) else {
            return;
        };
        if refund && !self.served {
            tracing::debug!(target: "tower_tenancy::quota", "request not served: refunding");
        }
        let (stage, tenant, charge) = (
            Arc::clone(&self.stage),
            Arc::clone(&self.tenant),
            self.charge,
        );
        if std::thread::panicking() {
            // Dropped while a panic unwinds: a panic in the manager now would abort the
            // process. The correction is made later, on the runtime; never here.
            later(stage, tenant, charge, actual);
            return;
        }
        correct(stage, &tenant, charge, actual);
    }
}

/// Corrects a charge, without waiting when the manager can; a manager that panics
/// loses that one correction (logged), never the response.
fn correct(stage: Arc<QuotaStage>, tenant: &Arc<TenantContext>, charge: Charge, actual: u32) {
    let now = caught("QuotaManager::settle", || {
        stage.manager.settle(tenant, charge, actual).now()
    });
    match now {
        Some(Some(Err(err))) => {
            tracing::warn!(target: "tower_tenancy::quota", error = %err, "quota correction failed");
        }
        Some(Some(Ok(()))) | None => {}
        // Asked again on a task of its own, and waited for there.
        Some(None) => later(stage, Arc::clone(tenant), charge, actual),
    }
}

/// Corrects a charge on a task of the current Tokio runtime.
fn later(stage: Arc<QuotaStage>, tenant: Arc<TenantContext>, charge: Charge, actual: u32) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(target: "tower_tenancy::quota",
            "quota correction outside a Tokio runtime: not made");
        return;
    };
    runtime.spawn(async move {
        let Some(settle) = caught("QuotaManager::settle", || {
            stage.manager.settle(&tenant, charge, actual)
        }) else {
            return;
        };
        if let Some(Err(err)) = caught_async("QuotaManager::settle", settle.into_future()).await {
            tracing::warn!(target: "tower_tenancy::quota", error = %err, "quota correction failed");
        }
    });
}
