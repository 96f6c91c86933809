//! The quota stage: [`TenantQuota`] charges each request to its tenant's plan, and
//! settles the charge once the response is known.

use std::{fmt, future::IntoFuture as _, rc::Rc, sync::Arc};

use actix_web::{dev::ServiceRequest, HttpMessage as _, HttpRequest};

use super::{
    cost::{CostEstimator, CostRequest},
    headers::headers,
    ActualCost, Charge, QuotaDecision, QuotaError, QuotaManager,
};
use tenancy_core::quota::{correction, judge, Judgement};
use tenancy_core::{caught, caught_async};

use crate::{
    core::{
        error::{ConfigError, TenancyError},
        observe::{AuditEvent, Outcome, Stage as StageName, Timer},
        Moment, TenantContext,
    },
    pipeline::{
        wait, After, Built, Decision, Ended, Fields, Flow, Refusal, RouteCache, Settings, Settle,
        Stage, Step, Worker, WorkerCx,
    },
};

/// This stage's name in the audit events and metrics.
const STAGE: StageName = StageName::named("quota");

/// The quota stage. Give it to [`Tenancy::builder().quota(...)`](crate::TenancyBuilder::quota);
/// it runs after resolution (and policy), on every request that has a tenant.
///
/// A request with no tenant (an exempt path, or `allow_missing`) is not charged.
/// `TenantQuota` is also an actix `Transform` of its own: wrapped *inside* a
/// [`TenantResolver`](crate::TenantResolver) (registered before it with `.wrap()`), it
/// reads the tenant the resolver settled. Wrapped where no resolver ran, it answers
/// every request with `500 internal_error` and logs the misconfiguration: it never
/// lets a request through uncounted. Standalone, it answers rejections with
/// [`ProblemJson`](crate::error::ProblemJson); [`Tenancy`](crate::Tenancy) shares one
/// responder across stages.
#[derive(Clone)]
pub struct TenantQuota(Built<QuotaStage>);

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
            estimator: Arc::new(|_: &ServiceRequest| 1),
            headers_on_success: true,
            refund_server_errors: false,
            min_cost: 1,
        }
    }
}

/// Builds a [`TenantQuota`].
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
    /// client names (a header, a query parameter) of 0 would otherwise pass an
    /// exhausted budget and take nothing from the rate. Set 0 only knowingly, for
    /// requests that are free; to keep them rated, give their plans
    /// [`rate_counts_requests`](super::QuotaPlan::rate_counts_requests), which takes
    /// one unit from the rate per request whatever it costs.
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
    /// handler answers with a 5xx, the response's body fails mid-way, or the client
    /// goes away before the response's body has been sent to its end. Budgets get
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
        let stage = QuotaStage {
            manager: self.manager,
            estimator: self.estimator,
            headers_on_success: self.headers_on_success,
            refund_server_errors: self.refund_server_errors,
            min_cost: self.min_cost,
        };
        TenantQuota(Built::new(stage))
    }
}

pub(crate) struct QuotaStage {
    manager: Arc<dyn QuotaManager>,
    estimator: Arc<dyn CostEstimator>,
    headers_on_success: bool,
    refund_server_errors: bool,
    /// The least a request costs.
    min_cost: u32,
}

impl fmt::Debug for QuotaStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantQuota")
            .field("headers_on_success", &self.headers_on_success)
            .field("refund_server_errors", &self.refund_server_errors)
            .finish_non_exhaustive()
    }
}

impl Stage for QuotaStage {
    fn worker(self: Arc<Self>, cx: &WorkerCx) -> Box<dyn Worker> {
        Box::new(QuotaWorker {
            stage: self,
            settings: Arc::clone(&cx.settings),
            routes: Rc::clone(&cx.routes),
        })
    }
}

/// The quota stage on one worker.
struct QuotaWorker {
    stage: Arc<QuotaStage>,
    settings: Arc<Settings>,
    /// This worker's route patterns, for estimators that charge by route.
    routes: Rc<RouteCache>,
}

impl Worker for QuotaWorker {
    fn prepare(&self, req: &ServiceRequest, flow: &mut Flow) -> Step {
        // A request without a tenant (exempt, or allowed missing) is not charged.
        match flow.tenant() {
            Ok(Some(tenant)) => {
                let tenant = Arc::clone(tenant);
                let cost = CostRequest::with_routes(req, &self.routes);
                self.stage.prepare(&self.settings, &cost, tenant, flow)
            }
            Ok(None) => Step::Pass,
            Err(err) => err.into(),
        }
    }
}

impl QuotaStage {
    /// Estimates the cost and checks without waiting when the manager can.
    fn prepare(
        self: &Arc<Self>,
        settings: &Arc<Settings>,
        cost: &CostRequest<'_>,
        tenant: Arc<TenantContext>,
        flow: &mut Flow,
    ) -> Step {
        let timer = Timer::start();
        let req = cost.request();
        let estimated = caught("CostEstimator::estimate", || self.estimator.estimate(cost))
            .unwrap_or(Err(TenancyError::Panicked("the cost estimator panicked")));
        let cost = match estimated {
            Ok(cost) => cost.max(self.min_cost),
            Err(err) => return self.refuse(settings, req, &tenant, err).into(),
        };
        let now = flow.now();
        let asked = caught("QuotaManager::check", || {
            self.manager
                .check(&tenant, cost, &mut Moment::at(now))
                .now()
        })
        .unwrap_or_else(|| Some(Err(QuotaError::new("the quota manager panicked"))));
        match asked {
            Some(answer) => {
                let step = self.decided(settings, req, tenant, cost, answer, flow);
                timer.stop(STAGE);
                step.into()
            }
            // A manager that must wait is asked again here, and waited for once (its
            // first answer, a future not yet polled, was dropped above).
            None => {
                let (me, settings) = (Arc::clone(self), Arc::clone(settings));
                wait(move |req, flow| {
                    Box::pin(async move {
                        let timer = Timer::start();
                        let answer = me.wait_check(&tenant, cost, now).await;
                        let step = me.decided(&settings, req, tenant, cost, answer, flow);
                        timer.stop(STAGE);
                        step
                    })
                })
            }
        }
    }

    /// Asks the manager again and waits for its answer; a panic, when asked or while
    /// answering, is an unavailable manager.
    async fn wait_check(
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

    #[inline(always)]
    fn decided(
        self: &Arc<Self>,
        settings: &Settings,
        req: &ServiceRequest,
        tenant: Arc<TenantContext>,
        cost: u32,
        answer: Result<QuotaDecision, QuotaError>,
        flow: &mut Flow,
    ) -> Decision {
        let (charge, fields) = match judge(answer, cost, self.headers_on_success) {
            Judgement::Refuse { err, fields, why } => {
                self.report(settings, req, &tenant, Outcome::Rejected(err.code()), &why);
                let fields = fields.map(|f| Box::new(headers(f)) as Box<dyn Fields>);
                return Decision::Refuse(Refusal { err, fields });
            }
            Judgement::Admit {
                charge,
                fields,
                outcome,
                why,
            } => {
                if outcome != Outcome::Allowed || !settings.silent_pass() {
                    self.report(settings, req, &tenant, outcome, why);
                }
                (charge, fields)
            }
        };
        let fields = fields.map(|f| Box::new(headers(f)) as Box<dyn Fields>);
        flow.after = Some(After {
            by: Some(Arc::clone(self) as Arc<dyn Settle>),
            tenant,
            charge,
            fields,
        });
        Decision::Pass
    }

    /// Reports the rejection, and refuses with it.
    fn refuse(
        &self,
        settings: &Settings,
        req: &ServiceRequest,
        tenant: &TenantContext,
        err: TenancyError,
    ) -> Decision {
        self.report(
            settings,
            req,
            tenant,
            Outcome::Rejected(err.code()),
            &err.reason(),
        );
        err.into()
    }

    fn report(
        &self,
        settings: &Settings,
        req: &ServiceRequest,
        tenant: &TenantContext,
        outcome: Outcome,
        why: &str,
    ) {
        let (method, path) = (req.method().as_str(), req.match_info().as_str());
        settings.report(&AuditEvent::new(STAGE, outcome, method, path, why).tenant(
            Some(tenant.id()),
            Some(tenant.tier()),
            Some(tenant.source()),
        ));
    }
}

impl Settle for QuotaStage {
    /// Corrects the charge once the request ended: a refund (to zero) for a `5xx`, a
    /// body that failed mid-way or a client gone before the end, when refunds are on;
    /// otherwise to the [`ActualCost`] recorded by then (by the handler, or by a
    /// streamed body before its end), if any.
    fn settle(
        self: Arc<Self>,
        tenant: &Arc<TenantContext>,
        charge: Charge,
        req: Option<&HttpRequest>,
        ended: Ended,
    ) {
        let served = match ended {
            Ended::Answered(status) => !status.is_server_error(),
            Ended::Abandoned => false,
        };
        let refund = self.refund_server_errors && !served;
        if refund && std::thread::panicking() {
            // Dropped while a panic unwinds (the handler's): a panic in the manager now
            // would abort the process, whatever catches it. The refund is made later,
            // on this worker's task queue (an actix system runs here); never here.
            if actix_web::rt::System::try_current().is_some() {
                let tenant = Arc::clone(tenant);
                actix_web::rt::spawn(async move { correct(self, &tenant, charge, 0) });
            } else {
                tracing::warn!(target: "actix_tenancy::quota",
                    "request abandoned by a panic outside an actix system: not refunded");
            }
            return;
        }
        if refund && ended == Ended::Abandoned {
            tracing::debug!(target: "actix_tenancy::quota", "request abandoned: refunding");
        }
        // While a panic unwinds, reading the extensions is safe, but the correction to
        // the actual cost would run user code.
        let actual = (!refund && !std::thread::panicking())
            .then(|| req.and_then(|req| req.extensions().get::<ActualCost>().map(|c| c.0)))
            .flatten();
        if let Some(units) = correction(charge, self.refund_server_errors, served, actual) {
            correct(self, tenant, charge, units);
        }
    }
}

/// Corrects a charge, without waiting when the manager can; a manager that panics
/// loses that one correction (logged), never the response or the worker.
fn correct(stage: Arc<QuotaStage>, tenant: &Arc<TenantContext>, charge: Charge, actual: u32) {
    let now = caught("QuotaManager::settle", || {
        stage.manager.settle(tenant, charge, actual).now()
    });
    match now {
        Some(Some(Err(err))) => {
            tracing::warn!(target: "actix_tenancy::quota", error = %err, "quota correction failed");
            return;
        }
        Some(Some(Ok(()))) | None => return,
        // Asked again on a task of its own, and waited for there.
        Some(None) => {}
    }
    let tenant = Arc::clone(tenant);
    actix_web::rt::spawn(async move {
        let Some(settle) = caught("QuotaManager::settle", || {
            stage.manager.settle(&tenant, charge, actual)
        }) else {
            return;
        };
        if let Some(Err(err)) = caught_async("QuotaManager::settle", settle.into_future()).await {
            tracing::warn!(target: "actix_tenancy::quota", error = %err, "quota correction failed");
        }
    });
}

crate::pipeline::built_stage!(TenantQuota);
