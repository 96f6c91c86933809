//! The one middleware service every stage runs in, and the [`Stage`] protocol it runs.
//!
//! Every stage's public type and [`Tenancy`] produce a [`PipelineService`], so a
//! request passes through the stages in one service, in the only correct order,
//! whatever the `.wrap()` order of the app.
//!
//! Each stage first tries to decide without waiting (a warm cache, an in-memory
//! registry). When every stage can, the request goes straight to the inner service and
//! no future is boxed; only a stage that must wait (a registry miss, an async source)
//! moves the request onto the boxed slow path.
//!
//! This module imports only [`core`](crate::core): it knows stages through the
//! protocol, never by name. The composition root, `tenancy.rs`, names them.
//!
//! [`Tenancy`]: crate::Tenancy

mod body;
mod routes;
mod stage;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
};

use actix_web::{
    body::{BoxBody, EitherBody, MessageBody},
    dev::{Service, ServiceRequest, ServiceResponse},
    HttpMessage as _,
};
use futures_util::future::LocalBoxFuture;
use tracing::Instrument as _;

pub use body::SettlingBody;
pub(crate) use routes::{RouteCache, RoutedPath, MAX_PATH_LEN};
pub(crate) use stage::{
    common_setters, wait, After, Built, Common, Composed, Decision, Ended, Exempt, Fields, Flow,
    Pipeline, Refusal, Settings, Settle, Stage, Step, Watched, Worker, WorkerCx,
};

use crate::core::{
    error::{respond, ErrorResponder, TenancyError},
    Resolution, TenantContext,
};

/// Implements actix's `Transform` for types that are middleware by running their
/// [`Pipeline`] (they implement [`Composed`]). `new_transform` runs once per worker: it
/// makes each stage's worker half there.
macro_rules! transform {
    ($(#[$doc:meta])* $ty:ty) => {
        $(#[$doc])*
        impl<S, B> actix_web::dev::Transform<S, actix_web::dev::ServiceRequest> for $ty
        where
            S: actix_web::dev::Service<
                    actix_web::dev::ServiceRequest,
                    Response = actix_web::dev::ServiceResponse<B>,
                    Error = actix_web::Error,
                > + 'static,
            S::Future: 'static,
            B: actix_web::body::MessageBody + 'static,
        {
            type Response = actix_web::dev::ServiceResponse<
                actix_web::body::EitherBody<crate::pipeline::SettlingBody<B>>,
            >;
            type Error = actix_web::Error;
            type Transform = crate::pipeline::PipelineService<S>;
            type InitError = ();
            type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

            fn new_transform(&self, service: S) -> Self::Future {
                let pipeline = crate::pipeline::Composed::pipeline(self);
                std::future::ready(Ok(crate::pipeline::PipelineService::new(
                    service, pipeline,
                )))
            }
        }
    };
}
pub(crate) use transform;

/// For a stage's public type, a newtype over [`Built`]: its `Debug` (the stage's),
/// [`Composed`], `into_parts` for the composition root, and actix's `Transform`.
macro_rules! built_stage {
    ($(#[$doc:meta])* $ty:ident) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&*self.0.stage, f)
            }
        }

        impl crate::pipeline::Composed for $ty {
            fn pipeline(&self) -> std::sync::Arc<crate::pipeline::Pipeline> {
                self.0.pipeline()
            }
        }

        impl $ty {
            /// The stage, to compose with others in one pipeline.
            pub(crate) fn into_stage(self) -> std::sync::Arc<dyn crate::pipeline::Stage> {
                self.0.into_stage()
            }
        }

        crate::pipeline::transform!($(#[$doc])* $ty);
    };
}
pub(crate) use built_stage;

/// The middleware service of every stage and of [`Tenancy`](crate::Tenancy).
pub struct PipelineService<S> {
    chain: Chain<S>,
}

impl<S> fmt::Debug for PipelineService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineService").finish_non_exhaustive()
    }
}

impl<S> PipelineService<S> {
    pub(crate) fn new(service: S, pipeline: Arc<Pipeline>) -> Self {
        let cx = WorkerCx {
            settings: Arc::clone(&pipeline.settings),
            routes: Rc::default(),
        };
        let workers = pipeline
            .stages
            .iter()
            .map(|s| Arc::clone(s).worker(&cx))
            .collect();
        Self {
            chain: Chain {
                service: Rc::new(service),
                pipeline,
                workers: Rc::new(workers),
            },
        }
    }
}

type Output<B> = Result<ServiceResponse<EitherBody<SettlingBody<B>>>, actix_web::Error>;

pin_project_lite::pin_project! {
    /// The response future of [`PipelineService`].
    pub struct PipelineFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // Every stage decided without waiting: the inner service's own future, and
        // what a stage left for its response.
        Inner { #[pin] fut: F, after: Option<After> },
        // Rejected without waiting.
        Rejected { res: Option<ServiceResponse<EitherBody<SettlingBody<B>>>> },
        // A stage had to wait.
        Boxed { fut: LocalBoxFuture<'static, Output<B>> },
    }
}

impl<F, B> fmt::Debug for PipelineFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineFuture").finish_non_exhaustive()
    }
}

impl<F, B> Future for PipelineFuture<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
    B: MessageBody,
{
    type Output = Output<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { fut, after } => match fut.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(res) => Poll::Ready(answered(res, after.take())),
            },
            StateProj::Rejected { res } => Poll::Ready(res.take().ok_or_else(|| {
                actix_web::error::ErrorInternalServerError("response future polled twice")
            })),
            StateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}

impl<S, B> Service<ServiceRequest> for PipelineService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<SettlingBody<B>>>;
    type Error = actix_web::Error;
    type Future = PipelineFuture<S::Future, B>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.chain.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        PipelineFuture {
            state: self.chain.start(req),
        }
    }
}

/// The inner service and this worker's stages; cloned only onto the slow path.
struct Chain<S> {
    service: Rc<S>,
    pipeline: Arc<Pipeline>,
    workers: Rc<Box<[Box<dyn Worker>]>>,
}

impl<S> Clone for Chain<S> {
    fn clone(&self) -> Self {
        Self {
            service: Rc::clone(&self.service),
            pipeline: Arc::clone(&self.pipeline),
            workers: Rc::clone(&self.workers),
        }
    }
}

impl<S, B> Chain<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    /// The request, with its access line and its tenant's request metrics when those
    /// are on.
    fn start(&self, req: ServiceRequest) -> State<S::Future, B> {
        let settings = &self.pipeline.settings;
        if !settings.access_log && settings.watched.is_none() {
            return self.begin(req);
        }
        let started = std::time::Instant::now();
        let access = settings
            .access_log
            .then(|| (req.method().clone(), req.path().to_owned()));
        let watched = settings.watched.clone();
        let state = self.begin(req);
        boxed(async move {
            // Written when the request ends, however it ends: answered, or dropped
            // before an answer (the client went away, or a panic unwinds through it).
            let mut observed = Observed {
                access,
                watched,
                started,
            };
            let out = PipelineFuture { state }.await;
            if let Some((method, path)) = observed.access.take() {
                access_line(&method, &path, &out, started);
            }
            if let Some(watched) = observed.watched.take() {
                tenant_metrics(&watched, &out, started);
            }
            out
        })
    }

    /// The request's flow, then every stage from the first.
    fn begin(&self, req: ServiceRequest) -> State<S::Future, B> {
        let p = &*self.pipeline;
        let mut flow = Flow::new(p.is_exempt(&req));
        if let Err(err) = self.outer(&req, &mut flow) {
            return self.rejected(req, err.into());
        }
        self.run(req, &mut flow, 0)
    }

    /// What an outer pipeline's resolver settled, if one ran.
    ///
    /// - For a pipeline of later stages only (policy, quota): the tenant to work on.
    /// - For a pipeline with its own resolver: a settled tenant that resolver must
    ///   agree with (it never re-resolves a request to another tenant); an outer
    ///   resolution with no tenant (an exempt path, or missing allowed) settled nothing,
    ///   and this pipeline resolves on its own.
    /// - For a pipeline with an authentication stage: a tenant settled before the token
    ///   was read is a misordering, and fails closed.
    fn outer(&self, req: &ServiceRequest, flow: &mut Flow) -> Result<(), TenancyError> {
        let p = &*self.pipeline;
        let mut ext = req.extensions_mut();
        let Some(r) = ext.get_mut::<Resolution>() else {
            return Ok(());
        };
        if p.resolves || p.precedes_resolution {
            let Some(tenant) = &r.tenant else {
                return Ok(());
            };
            if p.precedes_resolution {
                // An authentication stage behind a resolver that settled a tenant: the
                // resolver decided without this token's tenant (a token for tenant A
                // served as tenant B because a header said so). Fail closed.
                tracing::error!(
                    target: "actix_tenancy",
                    tenant = tenant.id().as_str(),
                    "an authentication stage ran after a resolving stage had settled the \
                     request's tenant: wrap the authentication outside the resolution \
                     (register it with .wrap() after), compose both in one Tenancy, or \
                     exempt this scope's paths in the outer resolution"
                );
                return Err(TenancyError::Misconfigured(
                    "authentication wrapped inside the resolution",
                ));
            }
            flow.outer = Some(Arc::clone(tenant));
            return Ok(());
        }
        // Capability checks downstream ask this pipeline's policy.
        if let Some(c) = &p.settings.capabilities {
            r.capabilities = Some(Arc::clone(c));
        }
        flow.settled_outside(r.tenant.clone(), r.exempt);
        Ok(())
    }

    /// Runs the stages from `from` on, then the inner service. The flow stays in the
    /// caller's frame (it is moved only onto the slow path).
    fn run(&self, req: ServiceRequest, flow: &mut Flow, from: usize) -> State<S::Future, B> {
        for (i, worker) in self.workers.iter().enumerate().skip(from) {
            match worker.prepare(&req, flow) {
                Step::Pass => {}
                Step::Refuse(refusal) => return self.rejected(req, refusal),
                Step::Wait(waiting) => {
                    let me = self.clone();
                    let mut flow = flow.take();
                    return boxed(async move {
                        let state = match waiting(&req, &mut flow).await {
                            Decision::Pass => me.run(req, &mut flow, i + 1),
                            Decision::Refuse(refusal) => me.rejected(req, refusal),
                        };
                        PipelineFuture { state }.await
                    });
                }
            }
        }
        self.inner(req, flow)
    }

    /// Every stage passed: the inner service.
    fn inner(&self, req: ServiceRequest, flow: &mut Flow) -> State<S::Future, B> {
        let after = flow.after.take();
        match flow.span.take() {
            None => State::Inner {
                fut: self.service.call(req),
                after,
            },
            Some(span) => {
                let fut = self.service.call(req).instrument(span);
                boxed(async move { answered(fut.await, after) })
            }
        }
    }

    fn rejected(&self, req: ServiceRequest, refusal: Refusal) -> State<S::Future, B> {
        let (http_req, _payload) = req.into_parts();
        if self.pipeline.settings.access_log {
            http_req
                .extensions_mut()
                .insert(Refused(refusal.err.code()));
        }
        let mut res = respond(&*self.pipeline.settings.responder, &refusal.err, &http_req);
        if let Some(fields) = refusal.fields {
            fields.write(res.headers_mut());
        }
        State::Rejected {
            res: Some(ServiceResponse::new(http_req, res).map_into_right_body()),
        }
    }
}

/// The inner service's answer, with what the stage that charged left for it: its
/// fields on the head, and its settlement handed to the body (or made now, for an
/// error or a response without a body).
#[inline]
fn answered<B: MessageBody>(
    res: Result<ServiceResponse<B>, actix_web::Error>,
    after: Option<After>,
) -> Output<B> {
    match res {
        Ok(mut res) => {
            if let Some((err, responder)) = returned_rejection(&res) {
                // A handler's or an extractor's `TenancyError`, in the default body
                // (its `ResponseError`): answered as the middleware answers its own.
                let (req, _) = res.into_parts();
                let answer = respond(&*responder, &err, &req);
                let mut res = ServiceResponse::new(req, answer);
                let settling = after.and_then(|after| after.apply(&mut res));
                return Ok(res
                    .map_body(|_, body| BoxBody::new(SettlingBody::new(body, settling)))
                    .map_into_right_body());
            }
            let settling = after.and_then(|after| after.apply(&mut res));
            Ok(res
                .map_body(|_, body| SettlingBody::new(body, settling))
                .map_into_left_body())
        }
        Err(err) => {
            if let Some(after) = after {
                after.errored(&err);
            }
            Err(err)
        }
    }
}

/// The `TenancyError` the inner service answered with, if it returned one as its error
/// (`Err(TenancyError)` from a handler, or an extractor's), and the responder of the
/// resolution that should answer it instead of the default body. Not one the crate
/// already answered with a responder (those are wrapped, and their body is the
/// responder's); without a resolution the default body stands.
#[inline]
fn returned_rejection<B>(
    res: &ServiceResponse<B>,
) -> Option<(TenancyError, Arc<dyn ErrorResponder>)> {
    let err = res.response().error()?.as_error::<TenancyError>()?;
    let ext = res.request().extensions();
    let responder = Arc::clone(&ext.get::<Resolution>()?.responder);
    Some((err.clone(), responder))
}

/// The access line and the request metrics a request owes until it is answered.
struct Observed {
    access: Option<(actix_web::http::Method, String)>,
    watched: Option<Arc<Watched>>,
    started: std::time::Instant,
}

impl Drop for Observed {
    /// Dropped before an answer: the client went away, or a panic unwinds (`500`).
    /// Its tenant is unknown here: the request went with the future.
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let (status, what) = if panicking {
            (500, "panicked")
        } else {
            (499, "dropped")
        };
        if let Some((method, path)) = self.access.take() {
            let elapsed_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let path = crate::core::observe::escaped(&path);
            tracing::info!(target: "actix_tenancy::access", %method, path = %path, status, elapsed_us, "{what}");
        }
        #[cfg(feature = "metrics")]
        if let Some(watched) = self.watched.take() {
            use crate::core::observe::{TENANT_DURATION_METRIC, TENANT_REQUESTS_METRIC};
            crate::core::observe::describe_once();
            let tenant = watched.label(None);
            let class = if panicking { "5xx" } else { "dropped" };
            metrics::counter!(TENANT_REQUESTS_METRIC, "tenant" => tenant.clone(), "status" => class)
                .increment(1);
            metrics::histogram!(TENANT_DURATION_METRIC, "tenant" => tenant)
                .record(self.started.elapsed().as_secs_f64());
        }
    }
}

/// The code a request was refused with, for its access line.
#[derive(Clone, Copy)]
struct Refused(crate::core::error::ErrorCode);

/// One line per request (`access_log`): what was asked, what was answered, as whom.
fn access_line<B>(
    method: &actix_web::http::Method,
    path: &str,
    out: &Output<B>,
    started: std::time::Instant,
) {
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let path = crate::core::observe::escaped(path);
    let Ok(res) = out else {
        tracing::info!(target: "actix_tenancy::access", %method, path = %path, status = 500, elapsed_us, "error");
        return;
    };
    let ext = res.request().extensions();
    let ctx = ext.get::<Resolution>().and_then(|r| r.tenant.clone());
    let refused = ext.get::<Refused>().map_or("none", |r| r.0.as_str());
    tracing::info!(
        target: "actix_tenancy::access",
        %method,
        path = %path,
        status = res.status().as_u16(),
        tenant = ctx.as_ref().map_or("none", |c| c.id().as_str()),
        tier = ctx.as_ref().map_or("none", |c| c.tier()),
        source = ctx.as_ref().map_or("none", |c| c.source().as_str()),
        refused,
        elapsed_us,
        "access"
    );
}

/// Counts and times one request of a watched tenant (feature `metrics`).
fn tenant_metrics<B>(watched: &Watched, out: &Output<B>, started: std::time::Instant) {
    #[cfg(feature = "metrics")]
    {
        use crate::core::observe::{TENANT_DURATION_METRIC, TENANT_REQUESTS_METRIC};
        let (ctx, status) = match out {
            Ok(res) => (
                res.request()
                    .extensions()
                    .get::<Resolution>()
                    .and_then(|r| r.tenant.clone()),
                res.status().as_u16(),
            ),
            Err(_) => (None, 500),
        };
        let tenant = watched.label(ctx.as_ref().map(|c| c.id().as_str()));
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        crate::core::observe::describe_once();
        metrics::counter!(TENANT_REQUESTS_METRIC, "tenant" => tenant.clone(), "status" => class)
            .increment(1);
        metrics::histogram!(TENANT_DURATION_METRIC, "tenant" => tenant)
            .record(started.elapsed().as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (watched, out, started);
}

fn boxed<F, B>(fut: impl Future<Output = Output<B>> + 'static) -> State<F, B> {
    State::Boxed { fut: Box::pin(fut) }
}

/// The `tenant` span the rest of the request runs in, with `tenant.id` and
/// `tenant.tier`; also fills those fields of an outer request span that declares them
/// (e.g. a tracing-actix-web root span). Nothing is created unless a subscriber listens
/// at `INFO`: actix enables tracing's `log` feature, which makes even disabled spans
/// cost work on every poll.
pub(crate) fn tenant_span(ctx: &TenantContext) -> Option<tracing::Span> {
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return None;
    }
    let outer = tracing::Span::current();
    outer.record("tenant.id", ctx.id().as_str());
    outer.record("tenant.tier", ctx.tier());
    Some(tracing::info_span!(
        target: "actix_tenancy",
        "tenant",
        tenant.id = ctx.id().as_str(),
        tenant.tier = ctx.tier(),
    ))
}
