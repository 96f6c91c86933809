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
    dev::{forward_ready, Service, ServiceRequest, ServiceResponse},
    HttpMessage as _,
};
use futures_util::future::LocalBoxFuture;
use tracing::Instrument as _;

use crate::{
    error::{ErrorResponder, TenancyError},
    resolve::{ResolveStage, Resolved},
    tenant::{Resolution, TenantContext},
};

/// The stages of one configured pipeline.
pub(crate) struct Pipeline {
    pub(crate) resolve: Option<Arc<ResolveStage>>,
    pub(crate) responder: Arc<dyn ErrorResponder>,
}

/// The middleware service produced by [`TenantResolver`](crate::resolve::TenantResolver)
/// and [`Tenancy`](crate::Tenancy).
pub struct PipelineService<S> {
    service: Rc<S>,
    pipeline: Arc<Pipeline>,
}

impl<S> fmt::Debug for PipelineService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineService").finish_non_exhaustive()
    }
}

impl<S> PipelineService<S> {
    pub(crate) fn new(service: S, pipeline: Arc<Pipeline>) -> Self {
        Self {
            service: Rc::new(service),
            pipeline,
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
        // Every stage decided without waiting: the inner service's own future.
        Inner { #[pin] fut: F },
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
            StateProj::Inner { fut } => fut
                .poll(cx)
                .map(|res| res.map(ServiceResponse::map_into_left_body)),
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
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = PipelineFuture<S::Future, B>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let state = match self.pipeline.resolve.as_deref().map(|s| s.run_now(&req)) {
            // No resolution stage, or it decided without waiting.
            None => self.proceed(req, Ok(None)),
            Some(Some(resolved)) => self.proceed(req, resolved),
            Some(None) => self.slow(req),
        };
        PipelineFuture { state }
    }
}

impl<S, B> PipelineService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    /// Stores the resolution and calls the inner service, or answers the rejection.
    fn proceed(&self, req: ServiceRequest, resolved: Resolved) -> State<S::Future, B> {
        match settle(&self.pipeline, &req, resolved) {
            Err(err) => State::Rejected {
                res: Some(reject(req, &err, &*self.pipeline.responder)),
            },
            Ok(None) => State::Inner {
                fut: self.service.call(req),
            },
            Ok(Some(span)) => {
                let fut = self.service.call(req).instrument(span);
                State::Boxed {
                    fut: Box::pin(async move { Ok(fut.await?.map_into_left_body()) }),
                }
            }
        }
    }

    /// The path for a request a stage must wait for.
    fn slow(&self, req: ServiceRequest) -> State<S::Future, B> {
        let service = Rc::clone(&self.service);
        let pipeline = Arc::clone(&self.pipeline);
        State::Boxed {
            fut: Box::pin(async move {
                let resolved = match &pipeline.resolve {
                    Some(stage) => stage.run(&req).await,
                    None => Ok(None),
                };
                match settle(&pipeline, &req, resolved) {
                    Err(err) => Ok(reject(req, &err, &*pipeline.responder)),
                    Ok(None) => Ok(service.call(req).await?.map_into_left_body()),
                    Ok(Some(span)) => Ok(service
                        .call(req)
                        .instrument(span)
                        .await?
                        .map_into_left_body()),
                }
            }),
        }
    }
}

/// Puts the resolution into the request (for the `Tenant` extractor) and returns the
/// span to run the rest of the request in; or the rejection to answer with.
fn settle(
    pipeline: &Pipeline,
    req: &ServiceRequest,
    resolved: Resolved,
) -> Result<Option<tracing::Span>, TenancyError> {
    match resolved {
        Ok(tenant) => {
            let span = tenant.as_deref().and_then(tenant_span);
            if pipeline.resolve.is_some() {
                req.extensions_mut().insert(Resolution {
                    tenant,
                    responder: Arc::clone(&pipeline.responder),
                });
            }
            Ok(span)
        }
        Err(err) => Err(err),
    }
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

fn reject<B>(
    req: ServiceRequest,
    err: &TenancyError,
    responder: &dyn ErrorResponder,
) -> ServiceResponse<EitherBody<B>> {
    let (http_req, _payload) = req.into_parts();
    let res = responder.respond(err, &http_req);
    ServiceResponse::new(http_req, res).map_into_right_body()
}
