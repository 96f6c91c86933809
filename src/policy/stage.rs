use std::{fmt, future::IntoFuture as _, rc::Rc, sync::Arc, time::Duration};

use actix_web::{
    dev::ServiceRequest,
    http::header::{HeaderMap, HeaderName},
};

use super::{
    memo::{Memo, Probe},
    Decision, PolicyError, PolicyEvaluator, PolicyRequest,
};
use tenancy_core::{
    caught, caught_async,
    policy::{asked_capability, check_capability_headers, judge, no_tenant},
};

use crate::{
    core::{
        error::{ConfigError, ErrorCode, TenancyError},
        observe::{AuditEvent, Outcome, Stage as StageName, Timer},
        Capabilities, TenantContext,
    },
    pipeline::{
        wait, Built, Decision as Next, Flow, RouteCache, RoutedPath, Settings, Stage, Step, Worker,
        WorkerCx,
    },
};

/// This stage's name in the audit events and metrics.
const STAGE: StageName = StageName::named("policy");

/// The policy stage. Give it to [`Tenancy::builder().policy(...)`](crate::TenancyBuilder::policy);
/// it runs after resolution and before quota. [`new`](Self::new) takes the defaults;
/// [`builder`](Self::builder) the rest.
#[derive(Clone)]
pub struct TenantPolicy(Built<PolicyStage>);

impl TenantPolicy {
    /// The stage for `evaluator` with the defaults: a 100 ms timeout, and no
    /// capability read from a header (name them with
    /// [`capability_header`](TenantPolicyBuilder::capability_header)).
    pub fn new(evaluator: impl PolicyEvaluator) -> Self {
        Self::builder(evaluator).assemble()
    }

    /// A builder for the stage of `evaluator`.
    pub fn builder(evaluator: impl PolicyEvaluator) -> TenantPolicyBuilder {
        TenantPolicyBuilder {
            evaluator: Arc::new(evaluator),
            timeout: Duration::from_millis(100),
            capabilities: Vec::new(),
        }
    }
}

/// Builds a [`TenantPolicy`].
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
    /// How long the evaluator may take before the request fails closed with
    /// `503 policy_unavailable` (default 100 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reads the capability `kind` from the header `name`: a request carrying
    /// `name: <value>` asks for `kind:<value>` (see
    /// [`PolicyRequest::capabilities`]), and a refusal of it answers
    /// `403 policy_denied` naming `kind`. The stage reads no header it is not told to;
    /// at most eight. A value must be one field of 1 to 128 visible ASCII characters: a
    /// repeated, empty or malformed header is refused before the evaluator is asked.
    ///
    /// ```
    /// use actix_tenancy::policy::{Decision, TenantPolicy};
    /// use actix_web::http::header::HeaderName;
    ///
    /// let policy = TenantPolicy::builder(|_: &_, _: &_| Ok(Decision::allow("default")))
    ///     .capability_header("model", HeaderName::from_static("x-model"))
    ///     .capability_header("tool", HeaderName::from_static("x-tool"))
    ///     .build()
    ///     .unwrap();
    /// # let _ = policy;
    /// ```
    pub fn capability_header(mut self, kind: &'static str, name: HeaderName) -> Self {
        self.capabilities.push((kind, name));
        self
    }

    /// Checks the configuration and builds the stage.
    pub fn build(self) -> Result<TenantPolicy, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::zero_duration("policy timeout"));
        }
        check_capabilities(&self.capabilities)?;
        Ok(self.assemble())
    }

    fn assemble(self) -> TenantPolicy {
        let stage = PolicyStage {
            evaluator: self.evaluator,
            timeout: self.timeout,
            every_capability: (1u16 << self.capabilities.len()).wrapping_sub(1) as Present,
            capabilities: self.capabilities,
        };
        TenantPolicy(Built::new(stage))
    }
}

pub(crate) struct PolicyStage {
    evaluator: Arc<dyn PolicyEvaluator>,
    timeout: Duration,
    /// The capability headers, each with the kind it names (at most
    /// [`MAX_CAPABILITY_HEADERS`](tenancy_core::policy::MAX_CAPABILITY_HEADERS)).
    capabilities: Vec<(&'static str, HeaderName)>,
    /// A bit for each capability header: what a request with many fields may carry.
    every_capability: Present,
}

/// Which capability headers a request may carry, a bit per header in the stage's
/// order.
type Present = u8;

/// A kind is a short lowercase name (`model`, `tool`); each kind and each header once:
/// the core's check.
fn check_capabilities(list: &[(&'static str, HeaderName)]) -> Result<(), ConfigError> {
    check_capability_headers(list.iter().map(|(kind, name)| (*kind, name.as_str())))
}

impl fmt::Debug for PolicyStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantPolicy")
            .field("timeout", &self.timeout)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl Stage for PolicyStage {
    fn worker(self: Arc<Self>, cx: &WorkerCx) -> Box<dyn Worker> {
        Box::new(PolicyWorker {
            stage: self,
            settings: Arc::clone(&cx.settings),
            routes: Rc::clone(&cx.routes),
            memo: Memo::default(),
        })
    }

    fn capabilities(self: Arc<Self>) -> Option<Arc<dyn Capabilities>> {
        Some(self)
    }
}

impl Capabilities for PolicyStage {
    /// Whether `tenant` has `capability`; a panicking evaluator grants nothing.
    fn can(&self, tenant: &TenantContext, capability: &str) -> bool {
        let evaluator = &self.evaluator;
        caught("policy capability", || evaluator.can(tenant, capability)).unwrap_or(false)
    }
}

/// The policy stage on one worker, with its route patterns and remembered decisions.
struct PolicyWorker {
    stage: Arc<PolicyStage>,
    settings: Arc<Settings>,
    routes: Rc<RouteCache>,
    memo: Memo,
}

impl Worker for PolicyWorker {
    fn prepare(&self, req: &ServiceRequest, flow: &mut Flow) -> Step {
        match flow.tenant() {
            Ok(tenant) => self.stage.prepare(req, tenant, flow.exempt, self),
            Err(err) => err.into(),
        }
    }
}

/// Up to this many distinct field names, the capability headers are found by one pass
/// over the names rather than by a hashed lookup each.
const SCAN_MAX_FIELDS: usize = 8;

impl PolicyStage {
    /// Builds the question and answers it without waiting when the evaluator can.
    fn prepare(
        self: &Arc<Self>,
        req: &ServiceRequest,
        tenant: Option<&Arc<TenantContext>>,
        exempt: bool,
        worker: &PolicyWorker,
    ) -> Step {
        let settings = &worker.settings;
        if exempt {
            return Step::Pass;
        }
        let Some(tenant) = tenant else {
            let err = no_tenant();
            self.report(
                settings,
                req,
                None,
                Outcome::Rejected(err.code()),
                &err.reason(),
                None,
            );
            return err.into();
        };
        let present = self.capability_headers_present(req.headers());
        let table = req.request().resource_map();
        let memo = self.memo_probe(req, tenant, present);
        if let Some((epoch, probe)) = memo {
            let timer = Timer::start();
            let remembered = worker.memo.with(epoch, table, probe, |d| {
                self.judge(settings, req, tenant, Ok(d))
            });
            if let Some(next) = remembered {
                timer.stop(STAGE);
                return next.into();
            }
        }
        // The path and pattern the router uses (decoded), so `/%72eports` cannot
        // dodge a rule written for `/reports`.
        let routed = worker.routes.lookup(req);
        let path = memo.map(|_| Arc::clone(&routed.path));
        let question = self.question(tenant, req, routed);
        let question = match self.ask_capabilities(req, question, present) {
            Ok(question) => question,
            Err(err) => {
                self.report(
                    settings,
                    req,
                    Some(tenant),
                    Outcome::Rejected(err.code()),
                    &err.reason(),
                    None,
                );
                return err.into();
            }
        };
        let evaluator = &self.evaluator;
        let timer = Timer::start();
        let answer = match caught("policy evaluator", || {
            evaluator.evaluate(tenant, &question).now()
        }) {
            Some(Some(answer)) => {
                if let (Some((epoch, probe)), Some(path), Ok(d)) = (memo, &path, &answer) {
                    let record = tenant.record_arc();
                    worker.memo.remember(epoch, table, probe, record, path, d);
                }
                answer
            }
            // An evaluator that must wait is asked again, and waited for once.
            Some(None) => {
                let (me, settings) = (Arc::clone(self), Arc::clone(settings));
                let tenant = Arc::clone(tenant);
                return wait(move |req, _flow| {
                    Box::pin(async move { me.evaluate(&settings, req, &tenant, &question).await })
                });
            }
            None => Err(PolicyError::new("the evaluator panicked")),
        };
        let step = self
            .decided(settings, req, tenant, &question, answer)
            .into();
        timer.stop(STAGE);
        step
    }

    /// Asks the evaluator, waiting at most the timeout; a panic is caught.
    async fn evaluate(
        &self,
        settings: &Settings,
        req: &ServiceRequest,
        tenant: &Arc<TenantContext>,
        question: &PolicyRequest,
    ) -> Next {
        let timer = Timer::start();
        let evaluator = &self.evaluator;
        let answer = match caught("policy evaluator", || evaluator.evaluate(tenant, question)) {
            Some(answer) => {
                let call = caught_async("policy evaluator", answer.into_future());
                match tokio::time::timeout(self.timeout, call).await {
                    Ok(Some(answer)) => answer,
                    Ok(None) => Err(PolicyError::new("the evaluator panicked")),
                    Err(_) => Err(PolicyError::new("the evaluator timed out")),
                }
            }
            None => Err(PolicyError::new("the evaluator panicked")),
        };
        let step = self.decided(settings, req, tenant, question, answer);
        timer.stop(STAGE);
        step
    }

    /// Audits what a shadow version would have decided; never changes the answer.
    fn shadow(
        &self,
        settings: &Settings,
        req: &ServiceRequest,
        tenant: &TenantContext,
        question: &PolicyRequest,
    ) {
        let evaluator = &self.evaluator;
        let shadow = caught("policy shadow", || evaluator.shadow(tenant, question));
        if let Some(Some(d)) = shadow {
            let outcome = if d.allowed {
                Outcome::WouldAllow
            } else {
                Outcome::WouldDeny(ErrorCode::PolicyDenied)
            };
            self.report(settings, req, Some(tenant), outcome, &d.reason, Some(&d));
        }
    }

    /// Where a decision for this request is remembered, if it may be: the evaluator
    /// gives an epoch (a panic there is "no"), and no capability is asked for. The
    /// path is the one the router uses, as the route cache's.
    #[inline]
    fn memo_probe<'r>(
        &self,
        req: &'r ServiceRequest,
        tenant: &TenantContext,
        present: Present,
    ) -> Option<(u64, Probe<'r>)> {
        if present != 0 {
            return None;
        }
        let evaluator = &self.evaluator;
        let epoch = caught("policy memo epoch", || evaluator.memo_epoch())??;
        let path = req.match_info().as_str();
        Probe::of(tenant.record_arc(), req.method(), path).map(|probe| (epoch, probe))
    }

    /// The question without the capabilities asked for (built in place, filled by
    /// [`ask_capabilities`](Self::ask_capabilities)).
    fn question(
        &self,
        tenant: &TenantContext,
        req: &ServiceRequest,
        routed: RoutedPath,
    ) -> PolicyRequest {
        let RoutedPath { path, route } = routed;
        let mut question = PolicyRequest::new(req.method(), path);
        if let Some(route) = route {
            question = question.with_route(route);
        }
        if let Some(p) = tenant.principal() {
            question = question.with_scopes(p.scopes().to_vec());
        }
        question
    }

    /// Adds the capabilities the request asks for by header to `question`; a repeated
    /// or malformed capability header is refused. `present` is
    /// [`capability_headers_present`](Self::capability_headers_present)'s answer.
    fn ask_capabilities(
        &self,
        req: &ServiceRequest,
        mut question: PolicyRequest,
        present: Present,
    ) -> Result<PolicyRequest, TenancyError> {
        for (i, (kind, name)) in self.capabilities.iter().enumerate() {
            if present & (1 << i) == 0 {
                continue;
            }
            let values = req.headers().get_all(name).map(|v| v.as_bytes());
            if let Some(asked) = asked_capability(kind, name.as_str(), values)? {
                question = question.with_capability(asked);
            }
        }
        Ok(question)
    }

    fn decided(
        &self,
        settings: &Settings,
        req: &ServiceRequest,
        tenant: &TenantContext,
        question: &PolicyRequest,
        answer: Result<Decision, PolicyError>,
    ) -> Next {
        self.shadow(settings, req, tenant, question);
        self.judge(settings, req, tenant, answer.as_ref())
    }

    /// The response to the evaluator's answer, reported.
    fn judge(
        &self,
        settings: &Settings,
        req: &ServiceRequest,
        tenant: &TenantContext,
        answer: Result<&Decision, &PolicyError>,
    ) -> Next {
        let kinds = self.capabilities.iter().map(|(kind, _)| kind);
        match (judge(answer, kinds), answer) {
            (Ok(()), Ok(d)) => {
                if !settings.silent_pass() {
                    let outcome = Outcome::Allowed;
                    self.report(settings, req, Some(tenant), outcome, &d.reason, Some(d));
                }
                Next::Pass
            }
            (Err(err), Ok(d)) => {
                let outcome = Outcome::Rejected(err.code());
                self.report(settings, req, Some(tenant), outcome, &d.reason, Some(d));
                err.into()
            }
            (Err(err), Err(_)) => {
                let outcome = Outcome::Rejected(err.code());
                self.report(settings, req, Some(tenant), outcome, &err.reason(), None);
                err.into()
            }
            // An evaluator's error is never a pass.
            (Ok(()), Err(_)) => unreachable!("judge refuses every error"),
        }
    }

    /// Which capability headers the request may carry, a bit each: clear only when it
    /// certainly does not. A request with few fields is read in one pass over its
    /// names (a comparison each, no hashing), which costs less than a hashed lookup per
    /// capability header; with many fields every bit is set and the headers are
    /// looked up. Every value of a header that is there is then read and checked, so a
    /// repeated or malformed capability header is refused as before.
    fn capability_headers_present(&self, headers: &HeaderMap) -> Present {
        let all = self.every_capability;
        if all == 0 {
            return 0;
        }
        if headers.len_keys() > SCAN_MAX_FIELDS {
            return all;
        }
        let mut present = 0;
        for name in headers.keys() {
            if let Some(i) = self.capabilities.iter().position(|(_, n)| n == name) {
                present |= 1 << i;
            }
        }
        present
    }

    fn report(
        &self,
        settings: &Settings,
        req: &ServiceRequest,
        tenant: Option<&TenantContext>,
        outcome: Outcome,
        why: &str,
        decision: Option<&Decision>,
    ) {
        let (method, path) = (req.method().as_str(), req.match_info().as_str());
        settings.report(
            &AuditEvent::new(STAGE, outcome, method, path, why)
                .tenant(
                    tenant.map(TenantContext::id),
                    tenant.map(TenantContext::tier),
                    tenant.map(TenantContext::source),
                )
                .rule(
                    decision.and_then(|d| d.rule.as_deref()),
                    decision.map(|d| d.version),
                ),
        );
    }
}

crate::pipeline::built_stage!(
    /// Standalone, `TenantPolicy` reads the tenant a [`TenantResolver`](crate::TenantResolver)
    /// wrapped outside it settled; with no resolver, it answers `500 internal_error` and
    /// logs the misconfiguration. Never a pass.
    TenantPolicy
);
