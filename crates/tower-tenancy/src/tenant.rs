//! The resolved tenant in a handler: [`Tenant`], and with the `axum` feature its
//! extractors.

use std::{fmt, ops::Deref, sync::Arc};

use http::request::Parts;
use tenancy_core::{
    error::{Problem, ProblemJson, TenancyError},
    TenantContext,
};

/// The request's resolved tenant: its id, record and principal
/// ([`TenantContext`]). The layer puts it in the request extensions; with the `axum`
/// feature it is a handler argument (`Tenant`, or `Option<Tenant>` where the layer
/// lets requests without a tenant through).
#[derive(Clone)]
pub struct Tenant(pub(crate) Arc<TenantContext>);

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tenant").field(&self.0.id()).finish()
    }
}

impl Tenant {
    /// The tenant resolved for a request, from its extensions: `None` when the layer
    /// let it through without a tenant, or did not run.
    pub fn of(extensions: &http::Extensions) -> Option<Tenant> {
        extensions
            .get::<Resolution>()
            .and_then(|r| r.tenant.clone())
    }

    /// The shared context.
    pub fn context(&self) -> &Arc<TenantContext> {
        &self.0
    }

    /// The shared context, taken.
    pub fn into_inner(self) -> Arc<TenantContext> {
        self.0
    }
}

impl Deref for Tenant {
    type Target = TenantContext;

    fn deref(&self) -> &TenantContext {
        &self.0
    }
}

/// The answer to `err` in `responder`'s problem body, its `instance` taken from the
/// request header the responder names: the layer's rejections and the extractors'.
pub(crate) fn problem(responder: &ProblemJson, err: &TenancyError, head: &Parts) -> Problem {
    let request_id = responder
        .instance_header_name()
        .and_then(|name| head.headers.get(name))
        .map(|v| v.as_bytes());
    responder.problem(err, request_id)
}

/// What the layer settled for a request, in its extensions: the tenant (if any), and
/// how rejections are written for the extractors.
#[derive(Clone)]
pub(crate) struct Resolution {
    pub(crate) tenant: Option<Tenant>,
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) responder: Arc<ProblemJson>,
}

#[cfg(feature = "axum")]
mod axum_impls {
    use axum_core::{
        extract::{FromRequestParts, OptionalFromRequestParts},
        response::{IntoResponse, Response},
    };
    use http::request::Parts;
    use tenancy_core::error::{Problem, ProblemJson, TenancyError};

    use super::{Resolution, Tenant};

    /// Why a [`Tenant`] (or a `TenantTx`) argument could not be had: `401
    /// tenant_missing` (the layer let the request through without a tenant), `500`
    /// (no layer ran), or for a `TenantTx` `503 tenant_unavailable`. Answered in the
    /// layer's problem body.
    #[derive(Debug)]
    pub struct TenantRejection(Problem);

    impl IntoResponse for TenantRejection {
        fn into_response(self) -> Response {
            self.0.into_response()
        }
    }

    pub(crate) fn reject(
        err: &TenancyError,
        responder: &ProblemJson,
        parts: &Parts,
    ) -> TenantRejection {
        TenantRejection(super::problem(responder, err, parts))
    }

    fn missing_layer(parts: &Parts) -> TenantRejection {
        let err = TenancyError::Misconfigured("TenancyLayer missing");
        reject(&err, &ProblemJson::default(), parts)
    }

    impl<S: Send + Sync> FromRequestParts<S> for Tenant {
        type Rejection = TenantRejection;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            match parts.extensions.get::<Resolution>() {
                Some(Resolution {
                    tenant: Some(t), ..
                }) => Ok(t.clone()),
                Some(Resolution { responder, .. }) => {
                    Err(reject(&TenancyError::TenantMissing, responder, parts))
                }
                None => Err(missing_layer(parts)),
            }
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Tenant {
        type Rejection = TenantRejection;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            match parts.extensions.get::<Resolution>() {
                Some(r) => Ok(r.tenant.clone()),
                None => Err(missing_layer(parts)),
            }
        }
    }
}

#[cfg(all(feature = "axum", feature = "postgres"))]
pub(crate) use axum_impls::reject;
#[cfg(feature = "axum")]
pub use axum_impls::TenantRejection;
