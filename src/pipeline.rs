//! The one middleware service every stage runs in. [`TenantResolver`] and
//! [`Tenancy`] both produce it, so a request passes through the stages in one future,
//! in the only correct order, whatever the `.wrap()` order of the app.
//!
//! [`TenantResolver`]: crate::resolve::TenantResolver
//! [`Tenancy`]: crate::Tenancy

use std::{fmt, rc::Rc, sync::Arc};

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{forward_ready, Service, ServiceRequest, ServiceResponse},
    HttpMessage as _,
};
use futures_util::future::LocalBoxFuture;
use tracing::Instrument as _;

use crate::{
    error::{ErrorResponder, TenancyError},
    resolve::ResolveStage,
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

impl<S, B> Service<ServiceRequest> for PipelineService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let pipeline = Arc::clone(&self.pipeline);
        Box::pin(async move {
            let mut span = None;
            if let Some(stage) = &pipeline.resolve {
                match stage.run(&req).await {
                    Ok(tenant) => {
                        if let Some(ctx) = &tenant {
                            span = tenant_span(ctx);
                        }
                        req.extensions_mut().insert(Resolution {
                            tenant,
                            responder: Arc::clone(&pipeline.responder),
                        });
                    }
                    Err(err) => return Ok(reject(req, &err, &*pipeline.responder)),
                }
            }
            let res = match span {
                Some(span) => service.call(req).instrument(span).await?,
                None => service.call(req).await?,
            };
            Ok(res.map_into_left_body())
        })
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
