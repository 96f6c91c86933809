//! The one middleware service every stage runs in. [`TenantResolver`] and
//! [`Tenancy`] both produce it, so a request passes through the stages in one service,
//! in the only correct order, whatever the `.wrap()` order of the app.
//!
//! Each stage first tries to decide without waiting (a warm cache, an in-memory
//! registry). When every stage can, the request goes straight to the inner service and
//! no future is boxed; only a stage that must wait (a registry miss, an async source)
//! moves the request onto the boxed slow path.
//!
//! [`TenantResolver`]: crate::resolve::TenantResolver
//! [`Tenancy`]: crate::Tenancy

use std::{
    fmt,
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
};

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{Service, ServiceRequest, ServiceResponse},
    HttpMessage as _,
};
use futures_util::future::LocalBoxFuture;
use tracing::Instrument as _;

use crate::{
    error::{ErrorResponder, TenancyError},
    policy::{PolicyStage, PolicyStep},
    quota::{ActualCost, QuotaAfter, QuotaHeaders, QuotaStage, QuotaStep},
    resolve::{ContextCache, ResolveStage, Resolved},
    routes::RouteCache,
    tenant::{Resolution, TenantContext},
};

/// The stages of one configured pipeline.
pub(crate) struct Pipeline {
    /// Authentication, ahead of everything (feature `jwt`).
    #[cfg(feature = "jwt")]
    pub(crate) auth: Option<Arc<crate::session::AuthStage>>,
    #[cfg(not(feature = "jwt"))]
    #[allow(dead_code)]
    pub(crate) auth: Option<std::convert::Infallible>,
    pub(crate) resolve: Option<Arc<ResolveStage>>,
    pub(crate) policy: Option<Arc<PolicyStage>>,
    pub(crate) quota: Option<Arc<QuotaStage>>,
    pub(crate) responder: Arc<dyn ErrorResponder>,
}

impl Pipeline {
    /// No stage, and the default responder: the base of a standalone stage's pipeline.
    pub(crate) fn standalone() -> Self {
        Self {
            auth: None,
            resolve: None,
            policy: None,
            quota: None,
            responder: Arc::new(crate::ProblemJson::default()),
        }
    }
}

/// Implements actix's `Transform` for a stage that is middleware of its own: every
/// worker's service runs the pipeline that `$pipeline` (an `Arc<Pipeline>`) gives.
macro_rules! transform {
    ($(#[$doc:meta])* $ty:ty => |$this:ident| $pipeline:expr) => {
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
            type Response = actix_web::dev::ServiceResponse<actix_web::body::EitherBody<B>>;
            type Error = actix_web::Error;
            type Transform = crate::pipeline::PipelineService<S>;
            type InitError = ();
            type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

            fn new_transform(&self, service: S) -> Self::Future {
                let $this = self;
                std::future::ready(Ok(crate::pipeline::PipelineService::new(
                    service, $pipeline,
                )))
            }
        }
    };
}
pub(crate) use transform;

/// The middleware service produced by [`TenantResolver`](crate::resolve::TenantResolver)
/// and [`Tenancy`](crate::Tenancy).
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
        Self {
            chain: Chain {
                service: Rc::new(service),
                pipeline,
                routes: Rc::default(),
                contexts: Rc::default(),
            },
        }
    }
}

type Output<B> = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

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
        // what the quota stage does with its response.
        Inner { #[pin] fut: F, after: Option<QuotaAfter> },
        // Rejected without waiting.
        Rejected { res: Option<ServiceResponse<EitherBody<B>>> },
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
{
    type Output = Output<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { fut, after } => match fut.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(res) => Poll::Ready(res.map(|mut res| {
                    if let Some(after) = after.take() {
                        finish(&mut res, after);
                    }
                    res.map_into_left_body()
                })),
            },
            StateProj::Rejected { res } => Poll::Ready(res.take().ok_or_else(|| {
                actix_web::error::ErrorInternalServerError("response future polled twice")
            })),
            StateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}

/// Applies the quota stage's after-step: headers, and the cost correction.
fn finish<B>(res: &mut ServiceResponse<B>, after: QuotaAfter) {
    let actual = res.request().extensions().get::<ActualCost>().map(|c| c.0);
    after.apply(res.response_mut(), actual);
}

impl<S, B> Service<ServiceRequest> for PipelineService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
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

/// The inner service and the stages; cloned only onto the slow path.
struct Chain<S> {
    service: Rc<S>,
    pipeline: Arc<Pipeline>,
    /// This worker's route patterns, for the policy stage.
    routes: Rc<RouteCache>,
    /// This worker's tenant contexts, for the resolution stage.
    contexts: Rc<ContextCache>,
}

impl<S> Clone for Chain<S> {
    fn clone(&self) -> Self {
        Self {
            service: Rc::clone(&self.service),
            pipeline: Arc::clone(&self.pipeline),
            routes: Rc::clone(&self.routes),
            contexts: Rc::clone(&self.contexts),
        }
    }
}

impl<S, B> Chain<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    /// Authentication, when configured, then resolution.
    #[cfg(feature = "jwt")]
    fn start(&self, req: ServiceRequest) -> State<S::Future, B> {
        use crate::session::AuthStep;
        let Some(auth) = &self.pipeline.auth else {
            return self.resolve(req);
        };
        // Paths the resolver exempts (health checks, a login route) need no token.
        let path = req.match_info().as_str();
        if self
            .pipeline
            .resolve
            .as_ref()
            .is_some_and(|r| r.is_exempt(path))
        {
            return self.resolve(req);
        }
        match auth.prepare(&req) {
            AuthStep::Pass(principal) => self.authenticated(req, principal),
            AuthStep::Refuse(err) => self.rejected(req, &err, None),
            AuthStep::Wait(verified) => {
                let (me, auth) = (self.clone(), Arc::clone(auth));
                boxed(async move {
                    let state = match auth.finish(&req, verified).await {
                        AuthStep::Pass(principal) => me.authenticated(req, principal),
                        AuthStep::Refuse(err) => me.rejected(req, &err, None),
                        AuthStep::Wait(_) => {
                            let err = TenancyError::Misconfigured("authentication waited twice");
                            me.rejected(req, &err, None)
                        }
                    };
                    PipelineFuture { state }.await
                })
            }
        }
    }

    #[cfg(feature = "jwt")]
    fn authenticated(
        &self,
        req: ServiceRequest,
        principal: Option<crate::session::Principal>,
    ) -> State<S::Future, B> {
        let p = &self.pipeline;
        if p.resolve.is_none() && p.policy.is_none() && p.quota.is_none() {
            // A standalone `JwtAuth`: a resolver must run after it, never before, or
            // the resolver decided without the token's tenant (a token for tenant A
            // served as tenant B because a header said so). Fail closed.
            if req.extensions().contains::<Resolution>() {
                tracing::error!(
                    target: "actix_tenancy",
                    "JwtAuth ran after the TenantResolver: wrap it outside the resolver \
                     (register it with .wrap() after), or use Tenancy::builder().auth()"
                );
                let err = TenancyError::Misconfigured("JwtAuth wrapped inside the resolver");
                return self.rejected(req, &err, None);
            }
            if let Some(p) = principal {
                p.attach(&req);
            }
            return self.inner(req, None, None);
        }
        if let Some(p) = principal {
            p.attach(&req);
        }
        self.resolve(req)
    }

    #[cfg(not(feature = "jwt"))]
    fn start(&self, req: ServiceRequest) -> State<S::Future, B> {
        self.resolve(req)
    }

    /// Resolution: here, or (for a pipeline of later stages only) the one an outer
    /// resolver stored.
    fn resolve(&self, req: ServiceRequest) -> State<S::Future, B> {
        let Some(stage) = &self.pipeline.resolve else {
            let outer = req.extensions_mut().get_mut::<Resolution>().map(|r| {
                // Capability checks downstream ask this pipeline's policy.
                if let Some(policy) = &self.pipeline.policy {
                    r.policy = Some(Arc::clone(policy));
                }
                (r.tenant.clone(), r.exempt)
            });
            return match outer {
                Some((tenant, exempt)) => self.authorize(req, tenant, exempt, None),
                None => {
                    tracing::error!(
                        target: "actix_tenancy",
                        "a tenancy stage ran with no tenant resolution: wrap it inside a \
                         TenantResolver, or use Tenancy::builder()"
                    );
                    let err = TenancyError::Misconfigured("TenantResolver middleware missing");
                    self.rejected(req, &err, None)
                }
            };
        };
        match stage.run_now(&req, &self.contexts) {
            Some(resolved) => self.resolved(req, resolved),
            None => {
                let (me, stage) = (self.clone(), Arc::clone(stage));
                boxed(async move {
                    let resolved = stage.run(&req, &me.contexts).await;
                    PipelineFuture {
                        state: me.resolved(req, resolved),
                    }
                    .await
                })
            }
        }
    }

    /// Stores the resolution for the `Tenant` extractor, then goes on.
    fn resolved(&self, req: ServiceRequest, resolved: Resolved) -> State<S::Future, B> {
        let tenant = match resolved {
            Ok(tenant) => tenant,
            Err(err) => return self.rejected(req, &err, None),
        };
        let span = tenant.as_deref().and_then(tenant_span);
        let exempt = tenant.is_none()
            && self
                .pipeline
                .resolve
                .as_ref()
                .is_some_and(|r| r.is_exempt(req.match_info().as_str()));
        req.extensions_mut().insert(Resolution {
            tenant: tenant.clone(),
            exempt,
            responder: Arc::clone(&self.pipeline.responder),
            policy: self.pipeline.policy.clone(),
        });
        self.authorize(req, tenant, exempt, span)
    }

    /// The policy stage.
    fn authorize(
        &self,
        req: ServiceRequest,
        tenant: Option<Arc<TenantContext>>,
        exempt: bool,
        span: Option<tracing::Span>,
    ) -> State<S::Future, B> {
        let Some(policy) = &self.pipeline.policy else {
            return self.charge(req, tenant, span);
        };
        match policy.prepare(&req, tenant.as_ref(), exempt, &self.routes) {
            PolicyStep::Pass => self.charge(req, tenant, span),
            PolicyStep::Refuse(err) => self.rejected(req, &err, None),
            PolicyStep::Wait(question) => {
                let (me, policy) = (self.clone(), Arc::clone(policy));
                let Some(ctx) = tenant.clone() else {
                    let err = TenancyError::Misconfigured("policy waited without a tenant");
                    return self.rejected(req, &err, None);
                };
                boxed(async move {
                    let step = policy.evaluate(&req, &ctx, &question).await;
                    let state = match step {
                        PolicyStep::Pass => me.charge(req, tenant, span),
                        PolicyStep::Refuse(err) => me.rejected(req, &err, None),
                        PolicyStep::Wait(_) => {
                            let err =
                                TenancyError::Misconfigured("the evaluator asked to wait twice");
                            me.rejected(req, &err, None)
                        }
                    };
                    PipelineFuture { state }.await
                })
            }
        }
    }

    /// The quota stage, for requests that have a tenant.
    fn charge(
        &self,
        req: ServiceRequest,
        tenant: Option<Arc<TenantContext>>,
        span: Option<tracing::Span>,
    ) -> State<S::Future, B> {
        // A request without a tenant (exempt, or allowed missing) is not charged.
        let (Some(quota), Some(tenant)) = (&self.pipeline.quota, tenant) else {
            return self.inner(req, span, None);
        };
        match quota.prepare(&req, &tenant) {
            QuotaStep::Wait(cost) => {
                let (me, quota) = (self.clone(), Arc::clone(quota));
                boxed(async move {
                    let step = quota.check(&req, &tenant, cost).await;
                    PipelineFuture {
                        state: me.charged(req, span, step),
                    }
                    .await
                })
            }
            step => self.charged(req, span, step),
        }
    }

    fn charged(
        &self,
        req: ServiceRequest,
        span: Option<tracing::Span>,
        step: QuotaStep,
    ) -> State<S::Future, B> {
        match step {
            QuotaStep::Pass(after) => self.inner(req, span, after),
            QuotaStep::Refuse(err, headers) => self.rejected(req, &err, headers),
            QuotaStep::Wait(_) => {
                let err = TenancyError::Misconfigured("the quota manager asked to wait twice");
                self.rejected(req, &err, None)
            }
        }
    }

    /// Every stage passed: the inner service.
    fn inner(
        &self,
        req: ServiceRequest,
        span: Option<tracing::Span>,
        after: Option<QuotaAfter>,
    ) -> State<S::Future, B> {
        match span {
            None => State::Inner {
                fut: self.service.call(req),
                after,
            },
            Some(span) => {
                let fut = self.service.call(req).instrument(span);
                boxed(async move {
                    let mut res = fut.await?;
                    if let Some(after) = after {
                        finish(&mut res, after);
                    }
                    Ok(res.map_into_left_body())
                })
            }
        }
    }

    fn rejected(
        &self,
        req: ServiceRequest,
        err: &TenancyError,
        headers: Option<QuotaHeaders>,
    ) -> State<S::Future, B> {
        let (http_req, _payload) = req.into_parts();
        let mut res = self.pipeline.responder.respond(err, &http_req);
        crate::error::add_challenge(err, &mut res);
        if let Some(headers) = headers {
            headers.write(res.headers_mut());
        }
        State::Rejected {
            res: Some(ServiceResponse::new(http_req, res).map_into_right_body()),
        }
    }
}

fn boxed<F, B>(fut: impl Future<Output = Output<B>> + 'static) -> State<F, B> {
    State::Boxed { fut: Box::pin(fut) }
}

/// The `tenant` span the rest of the request runs in, with `tenant.id` and
/// `tenant.tier`; also fills those fields of an outer request span that declares them
/// (e.g. a tracing-actix-web root span). Nothing is created unless a subscriber listens
/// at `INFO`: actix enables tracing's `log` feature, which makes even disabled spans
/// cost work on every poll.
fn tenant_span(ctx: &TenantContext) -> Option<tracing::Span> {
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
