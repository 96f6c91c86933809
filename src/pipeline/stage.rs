//! The stage protocol: what every stage implements, and what it may touch.
//!
//! A stage is built once ([`Stage`], shared by every worker) and made into a
//! [`Worker`] once per worker, which may hold per-worker caches without a lock. For
//! each request the pipeline calls the workers in order with the request and the
//! request's [`Flow`]; each answers with a [`Step`]:
//!
//! - [`Step::Pass`]: decided without waiting, go on to the next stage;
//! - [`Step::Refuse`]: decided without waiting, answer with this rejection;
//! - [`Step::Wait`]: a future that decides. Its output is a [`Decision`], which has no
//!   "wait" arm, so a stage can wait at most once per request, by its type.
//!
//! Only a stage that waits costs a boxed future; a request whose stages all decide at
//! once runs no boxed future at all. The response side is part of the same
//! protocol: a stage that charged the request leaves an [`After`] in the flow, which
//! the pipeline applies to the inner service's response (or drops, if the client went
//! away first).

use std::{
    fmt,
    rc::Rc,
    sync::{Arc, OnceLock},
};

use actix_web::{
    dev::ServiceRequest,
    http::{header::HeaderMap, StatusCode},
    HttpMessage as _, HttpRequest,
};
use futures_util::future::LocalBoxFuture;

use super::routes::RouteCache;
use crate::core::{
    error::{ErrorResponder, ProblemJson, TenancyError},
    observe::{emit, AuditEvent, AuditSink, TracingAudit},
    Capabilities, Charge, Resolution, TenantContext,
};
pub(crate) use tenancy_core::Exempt;

/// A stage as configured: built once, shared by every worker.
pub(crate) trait Stage: Send + Sync + 'static {
    /// This stage's half on one worker.
    fn worker(self: Arc<Self>, cx: &WorkerCx) -> Box<dyn Worker>;

    /// Whether this stage settles the request's tenant (the resolver). A pipeline
    /// without one reads the tenant an outer resolver settled, or fails closed.
    fn resolves(&self) -> bool {
        false
    }

    /// Whether this stage must run before any resolution (authentication: the
    /// resolver must see the verified principal). A pipeline with such a stage that
    /// finds a tenant already settled by an outer resolver fails closed.
    fn precedes_resolution(&self) -> bool {
        false
    }

    /// The paths this stage declares free of tenancy (the resolver's exempt paths).
    fn exempt(&self) -> Option<&Exempt> {
        None
    }

    /// Who answers capability questions for handlers and guards (the policy stage).
    fn capabilities(self: Arc<Self>) -> Option<Arc<dyn Capabilities>> {
        None
    }
}

/// A stage on one worker.
pub(crate) trait Worker {
    /// Decides on `req`, or says what to wait for.
    fn prepare(&self, req: &ServiceRequest, flow: &mut Flow) -> Step;
}

/// What a stage's worker is made with: the pipeline's shared settings, and this
/// worker's route cache.
pub(crate) struct WorkerCx {
    pub(crate) settings: Arc<Settings>,
    pub(crate) routes: Rc<RouteCache>,
}

/// A stage's answer for one request.
pub(crate) enum Step {
    /// Go on.
    Pass,
    /// Answer with this rejection.
    Refuse(Refusal),
    /// Wait for this future; it decides.
    Wait(Waiting),
}

/// What a waiting stage ends in: never another wait.
pub(crate) enum Decision {
    /// Go on.
    Pass,
    /// Answer with this rejection.
    Refuse(Refusal),
}

impl From<Decision> for Step {
    #[inline]
    fn from(d: Decision) -> Self {
        match d {
            Decision::Pass => Step::Pass,
            Decision::Refuse(r) => Step::Refuse(r),
        }
    }
}

/// The future of a waiting stage, given the request and its flow back when it runs.
pub(crate) type Waiting =
    Box<dyn for<'a> FnOnce(&'a ServiceRequest, &'a mut Flow) -> LocalBoxFuture<'a, Decision>>;

/// A [`Step::Wait`] for `f`.
pub(crate) fn wait<F>(f: F) -> Step
where
    F: for<'a> FnOnce(&'a ServiceRequest, &'a mut Flow) -> LocalBoxFuture<'a, Decision> + 'static,
{
    Step::Wait(Box::new(f))
}

/// A rejection, and the header fields it carries beyond the responder's.
pub(crate) struct Refusal {
    pub(crate) err: TenancyError,
    pub(crate) fields: Option<Box<dyn Fields>>,
}

impl From<TenancyError> for Refusal {
    #[inline]
    fn from(err: TenancyError) -> Self {
        Self { err, fields: None }
    }
}

impl From<TenancyError> for Step {
    #[inline]
    fn from(err: TenancyError) -> Self {
        Step::Refuse(err.into())
    }
}

impl From<TenancyError> for Decision {
    #[inline]
    fn from(err: TenancyError) -> Self {
        Decision::Refuse(err.into())
    }
}

/// Header fields a stage adds to a response (the quota fields).
pub(crate) trait Fields {
    /// Writes the fields into `map`, replacing any the responder set.
    fn write(self: Box<Self>, map: &mut HeaderMap);
}

/// The response-side work of a stage that charged the request: its header fields,
/// written on the response's head; and its settlement, once the response's body has
/// been sent to the end (or failed, or was dropped mid-way), or at once when the
/// inner service answered with an error or without a body. Dropped unapplied (the
/// client went away first), it settles the charge as abandoned.
pub(crate) struct After {
    /// The stage that charged; taken when the charge is settled.
    pub(crate) by: Option<Arc<dyn Settle>>,
    pub(crate) tenant: Arc<TenantContext>,
    /// What the stage charged.
    pub(crate) charge: Charge,
    pub(crate) fields: Option<Box<dyn Fields>>,
}

/// How a charged request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Answered with this status, its body (if any) sent to the end; a body that
    /// failed mid-way counts as a `500`.
    Answered(StatusCode),
    /// Dropped before the response was complete: the client went away (before the
    /// head, or mid-body).
    Abandoned,
}

/// Settles a charge once the response (or its absence) is known.
pub(crate) trait Settle: Send + Sync + 'static {
    /// The request ended as `ended`. `req` is the request as the response carries it
    /// (where the handler, or a streamed body before its end, records its
    /// `ActualCost`); `None` when there is no response to carry it (the client went
    /// away before the head, or the inner service answered with an error).
    fn settle(
        self: Arc<Self>,
        tenant: &Arc<TenantContext>,
        charge: Charge,
        req: Option<&HttpRequest>,
        ended: Ended,
    );
}

impl After {
    fn end(&mut self, req: Option<&HttpRequest>, ended: Ended) {
        if let Some(by) = self.by.take() {
            by.settle(&self.tenant, self.charge, req, ended);
        }
    }

    /// Adds the fields to the response's head; settles at once when there is no body
    /// to send, and otherwise hands the settlement to the body.
    pub(crate) fn apply<B: actix_web::body::MessageBody>(
        mut self,
        res: &mut actix_web::dev::ServiceResponse<B>,
    ) -> Option<Settling> {
        if let Some(fields) = self.fields.take() {
            fields.write(res.headers_mut());
        }
        self.by.as_ref()?;
        let status = res.status();
        let size = res.response().body().size();
        use actix_web::body::BodySize;
        let head = res.request().method() == actix_web::http::Method::HEAD;
        if head || matches!(size, BodySize::None | BodySize::Sized(0)) {
            // actix sends no body for these (nor for a `HEAD`), and never polls one: a
            // body dropped unpolled would otherwise look like a client gone mid-body.
            self.end(Some(res.request()), Ended::Answered(status));
            return None;
        }
        // A handle on the request, taken after routing (before it, actix needs the
        // request to itself); the last handle dropped returns it to actix's pool.
        Some(Settling {
            req: res.request().clone(),
            after: self,
            status,
        })
    }

    /// The inner service answered with an error, which actix turns into the response.
    pub(crate) fn errored(mut self, err: &actix_web::Error) {
        let status = err.as_response_error().status_code();
        self.end(None, Ended::Answered(status));
    }
}

impl Drop for After {
    fn drop(&mut self) {
        self.end(None, Ended::Abandoned);
    }
}

/// A settlement the response's body owes: made when the body ends, or as abandoned
/// when it is dropped first.
pub(crate) struct Settling {
    after: After,
    status: StatusCode,
    req: HttpRequest,
}

impl Settling {
    /// The body was sent to its end.
    pub(crate) fn finished(mut self) {
        let status = self.status;
        self.after.end(Some(&self.req), Ended::Answered(status));
    }

    /// The body failed mid-way.
    pub(crate) fn failed(mut self) {
        let failed = Ended::Answered(StatusCode::INTERNAL_SERVER_ERROR);
        self.after.end(Some(&self.req), failed);
    }
}

impl Drop for Settling {
    /// Dropped before the body's end: the client went away mid-body.
    fn drop(&mut self) {
        self.after.end(Some(&self.req), Ended::Abandoned);
    }
}

/// What one request carries from stage to stage.
pub(crate) struct Flow {
    /// The path is exempt from tenancy: later stages skip it.
    pub(crate) exempt: bool,
    tenant: Settled,
    pub(crate) span: Option<tracing::Span>,
    /// The response-side work, of the one stage that charges (the quota stage);
    /// replacing it would settle the first as abandoned.
    pub(crate) after: Option<After>,
    /// The request's time, read once by the first stage that asks.
    now: Option<std::time::Instant>,
    /// The tenant an outer resolver already settled, when this pipeline resolves too:
    /// its resolver must agree with it, or the request fails closed.
    pub(crate) outer: Option<Arc<TenantContext>>,
}

enum Settled {
    /// No resolver has run yet.
    No,
    /// Settled: a tenant, or none (an exempt path, or missing allowed).
    Yes(Option<Arc<TenantContext>>),
}

impl Flow {
    pub(crate) fn new(exempt: bool) -> Self {
        Self {
            exempt,
            tenant: Settled::No,
            span: None,
            after: None,
            now: None,
            outer: None,
        }
    }

    /// The flow, leaving an empty one in its place: for the slow path, which owns it.
    pub(crate) fn take(&mut self) -> Self {
        std::mem::replace(self, Flow::new(self.exempt))
    }

    /// The request's monotonic time: read by the first stage that asks, then shared,
    /// so one clock read serves the registry cache and the quota.
    #[inline]
    pub(crate) fn now(&mut self) -> std::time::Instant {
        *self.now.get_or_insert_with(std::time::Instant::now)
    }

    /// Settles the request's tenant (the resolver, once): stores the [`Resolution`]
    /// the extractors and guards read, and opens the `tenant` span.
    pub(crate) fn settle(
        &mut self,
        req: &ServiceRequest,
        settings: &Settings,
        tenant: Option<Arc<TenantContext>>,
    ) {
        self.span = tenant.as_deref().and_then(super::tenant_span);
        req.extensions_mut().insert(Resolution {
            tenant: tenant.clone(),
            exempt: self.exempt,
            responder: Arc::clone(&settings.responder),
            capabilities: settings.capabilities.clone(),
        });
        self.tenant = Settled::Yes(tenant);
    }

    /// Takes the tenant an outer resolver settled.
    pub(crate) fn settled_outside(&mut self, tenant: Option<Arc<TenantContext>>, exempt: bool) {
        self.exempt = exempt;
        self.tenant = Settled::Yes(tenant);
    }

    /// The request's tenant, `None` when it goes on without one. A stage that needs the
    /// tenant and runs where no resolver settled it is misconfigured: it fails closed.
    #[inline]
    pub(crate) fn tenant(&self) -> Result<Option<&Arc<TenantContext>>, TenancyError> {
        match &self.tenant {
            Settled::Yes(tenant) => Ok(tenant.as_ref()),
            Settled::No => Err(unresolved()),
        }
    }
}

/// A stage that needs the tenant ran where no resolver settled it.
#[cold]
fn unresolved() -> TenancyError {
    tracing::error!(
        target: "actix_tenancy",
        "a tenancy stage ran with no tenant resolution: wrap it inside a resolving \
         stage, or compose both in one Tenancy"
    );
    TenancyError::Misconfigured("no tenant resolution before this stage")
}

/// What every stage of one pipeline shares: how rejections are answered, where
/// decisions are reported, and what the pipeline learned from its stages.
pub(crate) struct Settings {
    pub(crate) responder: Arc<dyn ErrorResponder>,
    audit: Arc<dyn AuditSink>,
    /// The sink is the default `TracingAudit` (no sink was given).
    default_audit: bool,
    per_tenant_metrics: bool,
    /// One `INFO` line per request on `actix_tenancy::access`.
    pub(crate) access_log: bool,
    /// The tenants whose requests are counted and timed by name (feature `metrics`).
    pub(crate) watched: Option<Arc<Watched>>,
    pub(crate) exempt: Exempt,
    pub(crate) capabilities: Option<Arc<dyn Capabilities>>,
}

impl Settings {
    /// Whether a pass would reach nobody: the default sink writes passes at `DEBUG`,
    /// which no subscriber (nor `log`) wants now, and there are no metrics to count
    /// it in. A stage then skips building the event at all.
    #[inline]
    pub(crate) fn silent_pass(&self) -> bool {
        !crate::core::observe::COUNTING
            && self.default_audit
            && !crate::core::observe::wanted(tracing::Level::DEBUG)
    }

    /// Reports one decision to the audit sink and the metrics.
    #[inline]
    pub(crate) fn report(&self, event: &AuditEvent<'_>) {
        emit(&*self.audit, self.per_tenant_metrics, event);
    }

    /// Counts a decision in the metrics only (feature `metrics`), not audited: the
    /// authentication stage's passes.
    #[cfg(all(feature = "metrics", feature = "jwt"))]
    #[inline]
    pub(crate) fn count(&self, event: &AuditEvent<'_>) {
        crate::core::observe::count(self.per_tenant_metrics, event);
    }
}

/// The shared settings as a builder takes them: each one unset until given.
#[derive(Clone, Default)]
pub(crate) struct Common {
    pub(crate) responder: Option<Arc<dyn ErrorResponder>>,
    pub(crate) audit: Option<Arc<dyn AuditSink>>,
    pub(crate) per_tenant_metrics: Option<bool>,
    pub(crate) access_log: Option<bool>,
    pub(crate) watched: Option<Arc<Watched>>,
}

/// The tenants an operator named for per-tenant request metrics, each id kept as the
/// shared label value it is recorded under (no allocation per request).
#[derive(Debug)]
pub(crate) struct Watched(
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>,
);

impl Watched {
    pub(crate) fn new<I, S>(ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self(ids.into_iter().map(|s| s.as_ref().into()).collect())
    }

    /// The `tenant` label for `id`: the id when it was named, `other` when not, `none`
    /// without a tenant. Never more series than the names given, plus two.
    #[cfg(feature = "metrics")]
    pub(crate) fn label(&self, id: Option<&str>) -> metrics::SharedString {
        match id {
            None => metrics::SharedString::const_str("none"),
            Some(id) => match self.0.get(id) {
                Some(named) => metrics::SharedString::from(Arc::clone(named)),
                None => metrics::SharedString::const_str("other"),
            },
        }
    }
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Common")
            .field("responder", &self.responder.is_some())
            .field("audit", &self.audit.is_some())
            .field("per_tenant_metrics", &self.per_tenant_metrics)
            .field("access_log", &self.access_log)
            .field("watched", &self.watched)
            .finish()
    }
}

/// The setters of [`Common`], the settings every stage of a pipeline shares, on
/// `Tenancy`'s builder.
macro_rules! common_setters {
    () => {
        /// How rejections are answered (default: [`ProblemJson`](crate::error::ProblemJson)).
        pub fn responder(mut self, responder: impl crate::core::error::ErrorResponder) -> Self {
            self.common.responder = Some(std::sync::Arc::new(responder));
            self
        }

        /// Where every stage's decisions are reported (default:
        /// [`TracingAudit`](crate::observe::TracingAudit)).
        pub fn audit(mut self, sink: impl crate::core::observe::AuditSink) -> Self {
            self.common.audit = Some(std::sync::Arc::new(sink));
            self
        }

        /// Adds a `tenant` label to every stage's decision counter (feature
        /// `metrics`). Off by default: one time series per tenant can overwhelm a
        /// metrics backend.
        pub fn per_tenant_metrics(mut self, on: bool) -> Self {
            self.common.per_tenant_metrics = Some(on);
            self
        }

        /// Counts and times every request of the tenants named here (feature
        /// `metrics`): `tenancy_tenant_requests_total{tenant, status}` (the status's
        /// class, `2xx` to `5xx`) and the histogram
        /// `tenancy_tenant_request_duration_seconds{tenant}` (until the response's head
        /// is ready), so "which tenant is slow, which hits errors" has an answer. Any
        /// other tenant is labelled `other` and a request without one `none`: the
        /// series are bounded by the list. A request dropped before its answer is
        /// counted too, as `none` with the status `dropped` (or `5xx` for a panic).
        pub fn metrics_for_tenants<I, S>(mut self, tenants: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: AsRef<str>,
        {
            self.common.watched = Some(std::sync::Arc::new(crate::pipeline::Watched::new(tenants)));
            self
        }

        /// Writes one `INFO` line per request on the target `actix_tenancy::access`:
        /// method, path, status, tenant, tier, source, the refusal's code (or `none`)
        /// and the time taken; a request dropped before its answer gets one too
        /// (`dropped`, status 499, or `panicked`, 500, without its tenant). Off by
        /// default: most services log access elsewhere, and success is otherwise
        /// silent.
        pub fn access_log(mut self, on: bool) -> Self {
            self.common.access_log = Some(on);
            self
        }
    };
}
pub(crate) use common_setters;

/// The default responder, shared by every pipeline that sets none.
fn default_responder() -> Arc<dyn ErrorResponder> {
    static DEFAULT: OnceLock<Arc<dyn ErrorResponder>> = OnceLock::new();
    Arc::clone(DEFAULT.get_or_init(|| Arc::new(ProblemJson::default())))
}

/// The stages of one pipeline, in order, with the settings they share.
pub(crate) struct Pipeline {
    pub(crate) stages: Vec<Arc<dyn Stage>>,
    pub(crate) settings: Arc<Settings>,
    /// A stage here settles the tenant.
    pub(crate) resolves: bool,
    /// A stage here must see the request before any resolver.
    pub(crate) precedes_resolution: bool,
}

impl Pipeline {
    /// `stages` in the order they run, sharing `common`.
    pub(crate) fn new(stages: Vec<Arc<dyn Stage>>, common: Common) -> Self {
        let exempt = stages
            .iter()
            .find_map(|s| s.exempt().cloned())
            .unwrap_or_default();
        let settings = Settings {
            responder: common.responder.unwrap_or_else(default_responder),
            default_audit: common.audit.is_none(),
            audit: common
                .audit
                .unwrap_or_else(|| Arc::new(TracingAudit::new())),
            per_tenant_metrics: common.per_tenant_metrics.unwrap_or(false),
            access_log: common.access_log.unwrap_or(false),
            watched: common.watched,
            exempt,
            capabilities: stages.iter().find_map(|s| Arc::clone(s).capabilities()),
        };
        Self {
            resolves: stages.iter().any(|s| s.resolves()),
            precedes_resolution: stages.iter().any(|s| s.precedes_resolution()),
            stages,
            settings: Arc::new(settings),
        }
    }

    /// Whether the request's routed path is exempt; the path is not even read when no
    /// path is.
    #[inline]
    pub(crate) fn is_exempt(&self, req: &ServiceRequest) -> bool {
        !self.settings.exempt.is_empty() && self.settings.exempt.matches(req.match_info().as_str())
    }
}

/// Something that is middleware by running one [`Pipeline`]: every stage's public
/// type, and `Tenancy`.
pub(crate) trait Composed {
    /// The pipeline a worker's service runs.
    fn pipeline(&self) -> Arc<Pipeline>;
}

/// A stage as its public type holds it: the stage, and the pipeline it runs standalone
/// (with the default shared settings; a `Tenancy` carries any others), built once.
pub(crate) struct Built<T> {
    pub(crate) stage: Arc<T>,
    pipeline: Arc<Pipeline>,
}

impl<T: Stage> Built<T> {
    pub(crate) fn new(stage: T) -> Self {
        let stage = Arc::new(stage);
        let alone: Arc<dyn Stage> = Arc::clone(&stage) as Arc<dyn Stage>;
        Self {
            pipeline: Arc::new(Pipeline::new(vec![alone], Common::default())),
            stage,
        }
    }

    /// The stage as the pipeline runs it.
    pub(crate) fn into_stage(self) -> Arc<dyn Stage> {
        self.stage
    }
}

impl<T> Clone for Built<T> {
    fn clone(&self) -> Self {
        Self {
            stage: Arc::clone(&self.stage),
            pipeline: Arc::clone(&self.pipeline),
        }
    }
}

impl<T> Composed for Built<T> {
    fn pipeline(&self) -> Arc<Pipeline> {
        Arc::clone(&self.pipeline)
    }
}
