//! The policy stage of a [`TenancyLayer`](crate::TenancyLayer): [`TenantPolicy`] asks
//! an evaluator whether the tenant may make the request, after resolution and before
//! quota.

use std::{fmt, future::IntoFuture as _, sync::Arc, time::Duration};

use http::{header::HeaderName, request::Parts};
use tenancy_core::{
    caught, caught_async,
    error::{ConfigError, ErrorCode, TenancyError},
    observe::Outcome,
    policy::{
        asked_capability, check_capability_headers, judge, Decision, Method, PolicyError,
        PolicyEvaluator, PolicyRequest,
    },
    Answer, TenantContext,
};

use crate::memo::{Memo, Probe};

/// The policy stage: give it to
/// [`TenancyLayer::builder(..).policy(..)`](crate::TenancyLayerBuilder::policy). It runs
/// after resolution and before quota, the same stage as actix-tenancy's `TenantPolicy`
/// on the same evaluators ([`RulePolicy`](tenancy_core::policy::RulePolicy),
/// [`CachedPolicy`](tenancy_core::policy::CachedPolicy), a closure, your own):
///
/// | evaluator answer | response |
/// | --- | --- |
/// | allowed | the request goes on |
/// | denied | `403 policy_denied` (`PERMISSION_DENIED` for gRPC) |
/// | an error, a timeout (default 100 ms) or a panic | `503 policy_unavailable` |
/// | no tenant (`allow_missing` let one through) | `403 policy_denied` |
///
/// Exempt paths skip it. The evaluator sees the method, the path as actix routes it
/// (percent-decoded but for `%25`, `%2F`, `%2B`) and, with the `axum` feature, the
/// route template axum's router matched (`/items/{id}`, axum's `MatchedPath`) when
/// the layer runs inside the router ([`Router::layer`](https://docs.rs/axum/0.8/axum/struct.Router.html#method.layer)
/// or `route_layer`, as below): the route that really runs, so rules written against
/// templates (`GET /items/{id}`) mean on axum what they mean on actix. A layer
/// wrapped around the whole router runs before it, and the path is then all there is
/// to judge: a rule written as a template allows nothing there (write `GET /items/*`).
/// `RulePolicy` judges both route and path: a request is allowed only when both are.
/// A `HEAD` request is judged as itself and as the `GET` axum runs for it where no
/// `HEAD` handler is bound, and goes on only when both are allowed.
///
/// ```
/// use axum::{routing::get, Router};
/// use tenancy_core::policy::{PolicySet, RulePolicy, Rules};
/// use tenancy_core::{registry::InMemoryRegistry, TenantId, TenantRecord};
/// use tower_tenancy::{Source, TenancyLayer, TenantPolicy};
///
/// let rules = RulePolicy::new(
///     PolicySet::new()
///         .default_rules(Rules::new().deny("* /admin/**"))
///         .tier("free", Rules::new().allow("GET /items/{id}")),
/// )
/// .unwrap();
/// let registry = InMemoryRegistry::new()
///     .with(TenantRecord::new(TenantId::parse("globex").unwrap(), "free"));
/// let app: Router = Router::new().route("/items/{id}", get(|| async { "item" })).layer(
///     TenancyLayer::builder(registry)
///         .source(Source::header())
///         .policy(TenantPolicy::new(rules))
///         .build()
///         .unwrap(),
/// );
/// ```
#[derive(Clone)]
pub struct TenantPolicy(pub(crate) Arc<PolicyStage>);

impl fmt::Debug for TenantPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TenantPolicy {
    /// The stage for `evaluator` with the defaults: a 100 ms timeout, no capability
    /// headers.
    pub fn new(evaluator: impl PolicyEvaluator) -> Self {
        Self(Arc::new(PolicyStage {
            evaluator: Arc::new(HeadAsGet(Arc::new(evaluator))),
            timeout: DEFAULT_TIMEOUT,
            capabilities: Vec::new(),
            memo: Memo::default(),
        }))
    }

    /// A builder for the stage of `evaluator`.
    pub fn builder(evaluator: impl PolicyEvaluator) -> TenantPolicyBuilder {
        TenantPolicyBuilder {
            evaluator: Arc::new(HeadAsGet(Arc::new(evaluator))),
            timeout: DEFAULT_TIMEOUT,
            capabilities: Vec::new(),
        }
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// Builds a [`TenantPolicy`]: the same settings as actix-tenancy's.
#[must_use]
pub struct TenantPolicyBuilder {
    evaluator: Arc<dyn PolicyEvaluator>,
    timeout: Duration,
    capabilities: Vec<(&'static str, HeaderName)>,
}

impl fmt::Debug for TenantPolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantPolicyBuilder")
            .field("timeout", &self.timeout)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl TenantPolicyBuilder {
    /// How long an evaluator that must wait may take (default 100 ms); past it the
    /// request is answered `503 policy_unavailable`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reads the capability of `kind` a request asks for from the header `name`
    /// (`x-model: gpt-4o` asks for `model:gpt-4o`); a repeated or malformed value is
    /// refused. At most eight.
    pub fn capability_header(mut self, kind: &'static str, name: HeaderName) -> Self {
        self.capabilities.push((kind, name));
        self
    }

    /// Checks the settings and builds the stage.
    pub fn build(self) -> Result<TenantPolicy, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::zero_duration("policy timeout"));
        }
        check_capability_headers(self.capabilities.iter().map(|(k, n)| (*k, n.as_str())))?;
        Ok(TenantPolicy(Arc::new(PolicyStage {
            evaluator: self.evaluator,
            timeout: self.timeout,
            capabilities: self.capabilities,
            memo: Memo::default(),
        })))
    }
}

pub(crate) struct PolicyStage {
    evaluator: Arc<dyn PolicyEvaluator>,
    timeout: Duration,
    capabilities: Vec<(&'static str, HeaderName)>,
    /// Decisions remembered while the evaluator's `memo_epoch` holds.
    memo: Memo,
}

impl fmt::Debug for PolicyStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantPolicy")
            .field("timeout", &self.timeout)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

/// One audit event of the stage: its outcome, reason and the decision that made it.
pub(crate) struct Said {
    pub(crate) outcome: Outcome,
    pub(crate) why: String,
    pub(crate) decision: Option<Decision>,
}

/// What the stage decided, and the events to report (in order).
pub(crate) type Judged = (Result<(), TenancyError>, Vec<Said>);

impl PolicyStage {
    /// The question for `tenant`'s request: method, routed path, the principal's
    /// scopes, and the capabilities asked for by header (a bad one refuses).
    pub(crate) fn question(
        &self,
        head: &Parts,
        path: &str,
        tenant: &TenantContext,
    ) -> Result<PolicyRequest, TenancyError> {
        let mut question = PolicyRequest::new(&head.method, path);
        if let Some(route) = route(head) {
            question = question.with_route(route);
        }
        if let Some(p) = tenant.principal() {
            question = question.with_scopes(p.scopes().to_vec());
        }
        for (kind, name) in &self.capabilities {
            let values = head.headers.get_all(name).iter().map(|v| v.as_bytes());
            if let Some(asked) = asked_capability(kind, name.as_str(), values)? {
                question = question.with_capability(asked);
            }
        }
        Ok(question)
    }

    /// Where a decision for this request is remembered, if it may be: the evaluator
    /// gives an epoch (a panic there is "no"), and no capability header is present.
    #[inline]
    pub(crate) fn memo_probe<'r>(
        &self,
        head: &'r Parts,
        path: &'r str,
        tenant: &TenantContext,
    ) -> Option<(u64, Probe<'r>)> {
        if self
            .capabilities
            .iter()
            .any(|(_, name)| head.headers.contains_key(name))
        {
            return None;
        }
        let evaluator = &self.evaluator;
        let epoch = caught("policy memo epoch", || evaluator.memo_epoch())??;
        Probe::of(tenant.record_arc(), &head.method, path, route(head)).map(|p| (epoch, p))
    }

    /// The decision remembered for `probe`, if any.
    #[inline]
    pub(crate) fn remembered(&self, epoch: u64, probe: Probe<'_>) -> Option<Decision> {
        self.memo.get(epoch, probe)
    }

    /// Remembers `decision` for `probe` of `tenant`'s request.
    pub(crate) fn remember(
        &self,
        epoch: u64,
        probe: Probe<'_>,
        tenant: &TenantContext,
        decision: &Decision,
    ) {
        self.memo
            .remember(epoch, probe, tenant.record_arc(), decision);
    }

    /// Asks the evaluator without waiting: `None` when it must wait.
    pub(crate) fn evaluate_now(
        &self,
        tenant: &TenantContext,
        question: &PolicyRequest,
    ) -> Option<Result<Decision, PolicyError>> {
        let evaluator = &self.evaluator;
        caught("policy evaluator", || {
            evaluator.evaluate(tenant, question).now()
        })
        .unwrap_or_else(|| Some(Err(PolicyError::new("the evaluator panicked"))))
    }

    /// Asks the evaluator again and waits at most the timeout; a panic is caught.
    pub(crate) async fn evaluate_later(
        &self,
        tenant: &TenantContext,
        question: &PolicyRequest,
    ) -> Result<Decision, PolicyError> {
        let evaluator = &self.evaluator;
        let Some(answer) = caught("policy evaluator", || evaluator.evaluate(tenant, question))
        else {
            return Err(PolicyError::new("the evaluator panicked"));
        };
        let call = caught_async("policy evaluator", answer.into_future());
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Err(PolicyError::new("the evaluator panicked")),
            Err(_) => Err(PolicyError::new("the evaluator timed out")),
        }
    }

    /// The core's judgement of the answer, with what a shadow version would have
    /// decided of `question` (audited, never the answer; no question for a
    /// remembered decision, which is kept only while no shadow runs); `audit_pass` is
    /// whether a pass is reported.
    pub(crate) fn judged(
        &self,
        tenant: &TenantContext,
        question: Option<&PolicyRequest>,
        answer: Result<Decision, PolicyError>,
        audit_pass: bool,
    ) -> Judged {
        let mut said = Vec::new();
        let evaluator = &self.evaluator;
        let shadow = question.and_then(|q| caught("policy shadow", || evaluator.shadow(tenant, q)));
        if let Some(Some(d)) = shadow {
            let outcome = if d.allowed {
                Outcome::WouldAllow
            } else {
                Outcome::WouldDeny(ErrorCode::PolicyDenied)
            };
            said.push(Said {
                outcome,
                why: d.reason.to_string(),
                decision: Some(d),
            });
        }
        let kinds = self.capabilities.iter().map(|(kind, _)| kind);
        let verdict = judge(answer.as_ref(), kinds);
        match (&verdict, answer) {
            (Ok(()), Ok(d)) if audit_pass => said.push(Said {
                outcome: Outcome::Allowed,
                why: d.reason.to_string(),
                decision: Some(d),
            }),
            (Ok(()), _) => {}
            (Err(err), Ok(d)) => said.push(Said {
                outcome: Outcome::Rejected(err.code()),
                why: d.reason.to_string(),
                decision: Some(d),
            }),
            (Err(err), Err(_)) => said.push(Said {
                outcome: Outcome::Rejected(err.code()),
                why: err.reason().into_owned(),
                decision: None,
            }),
        }
        (verdict, said)
    }
}

/// The template axum's router matched (`MatchedPath`), when the layer runs inside the
/// router (`Router::layer`, `route_layer`): the route that really runs.
#[inline]
fn route(head: &Parts) -> Option<&str> {
    #[cfg(feature = "axum")]
    {
        head.extensions
            .get::<axum::extract::MatchedPath>()
            .map(axum::extract::MatchedPath::as_str)
    }
    #[cfg(not(feature = "axum"))]
    {
        let _ = head;
        None
    }
}

/// The evaluator as the stage asks it: axum answers a `HEAD` request with the `GET`
/// handler of its route when no `HEAD` handler is bound (actix's `web::get()` does
/// not), so a `HEAD` request is judged both as itself and as the `GET` it may run,
/// and goes on only when both are allowed: a rule that denies `GET` (or allows only
/// `GET`) means the same for `HEAD`, and one that denies `HEAD` is kept.
struct HeadAsGet(Arc<dyn PolicyEvaluator>);

/// `req` asked as a `GET`.
fn as_get(req: &PolicyRequest) -> PolicyRequest {
    let mut get = PolicyRequest::new(Method::GET, req.path()).with_scopes(req.scopes().to_vec());
    if let Some(route) = req.route() {
        get = get.with_route(route);
    }
    for capability in req.capabilities() {
        get = get.with_capability(capability.as_str());
    }
    get
}

/// The `HEAD` request's decision `head` (allowed), and the `GET` one: the first refusal.
fn both(head: Decision, get: Result<Decision, PolicyError>) -> Result<Decision, PolicyError> {
    match get {
        Ok(get) if get.allowed => Ok(head),
        other => other,
    }
}

impl PolicyEvaluator for HeadAsGet {
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        if *req.method() != Method::HEAD {
            return self.0.evaluate(tenant, req);
        }
        match self.0.evaluate(tenant, req) {
            Answer::Now(Ok(head)) if head.allowed => {
                let get = as_get(req);
                match self.0.evaluate(tenant, &get).now() {
                    Some(answer) => Answer::Now(both(head, answer)),
                    None => Answer::later(async move {
                        let answer = self.0.evaluate(tenant, &get).await;
                        both(head, answer)
                    }),
                }
            }
            Answer::Now(other) => Answer::Now(other),
            Answer::Later(wait) => Answer::later(async move {
                match wait.await {
                    Ok(head) if head.allowed => {
                        let get = as_get(req);
                        let answer = self.0.evaluate(tenant, &get).await;
                        both(head, answer)
                    }
                    other => other,
                }
            }),
        }
    }

    fn shadow(&self, tenant: &TenantContext, req: &PolicyRequest) -> Option<Decision> {
        self.0.shadow(tenant, req)
    }

    fn can(&self, tenant: &TenantContext, capability: &str) -> bool {
        self.0.can(tenant, capability)
    }

    fn version(&self) -> Option<u64> {
        self.0.version()
    }

    fn memo_epoch(&self) -> Option<u64> {
        self.0.memo_epoch()
    }
}
