//! What resolution leaves in the request extensions, read by the extractors and guards.

use std::sync::Arc;

use actix_web::{HttpMessage as _, HttpRequest};

use super::{error::ErrorResponder, TenantContext};

/// Answers "may this tenant use this capability?" for handlers and guards
/// ([`Tenant::can`](crate::Tenant::can), [`guard::capability`](crate::guard::capability)).
/// The policy stage implements it; the core only holds it.
pub(crate) trait Capabilities: Send + Sync + 'static {
    /// Whether `tenant` has `capability`; an answer that cannot be had grants nothing.
    fn can(&self, tenant: &TenantContext, capability: &str) -> bool;
}

/// What the resolver leaves in the request extensions: proof that it ran, and its answer.
///
/// `tenant` is `None` when the resolver ran but no tenant applies (an exempt path, or
/// `allow_missing`). The responder travels with it so that the [`Tenant`](crate::Tenant) extractor
/// answers in the same shape as the middleware.
#[derive(Clone)]
pub(crate) struct Resolution {
    pub(crate) tenant: Option<Arc<TenantContext>>,
    /// The path is exempt: later stages skip it too.
    pub(crate) exempt: bool,
    pub(crate) responder: Arc<dyn ErrorResponder>,
    /// Whoever answers capability questions for this request (the policy stage).
    pub(crate) capabilities: Option<Arc<dyn Capabilities>>,
}

impl Resolution {
    pub(crate) fn of(req: &HttpRequest) -> Option<Self> {
        req.extensions().get::<Resolution>().cloned()
    }
}
