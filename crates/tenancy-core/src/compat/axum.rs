//! axum 0.8's traits for the core's types (feature `axum-core-0_5`, which only
//! tower-tenancy's `axum` feature turns on). Rust lets only the crate that owns a type
//! implement another crate's trait for it, so these few impls live here; each only
//! converts, and the decisions stay in the neutral code.

use axum_core::{
    body::Body,
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{header::HeaderName, request::Parts, HeaderValue, StatusCode};

use crate::{
    error::{Problem, ProblemJson, TenancyError},
    Principal,
};

/// The response for a [`Problem`]: its status, its [headers](Problem::headers) and
/// its body.
impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = Response::new(Body::empty());
        *res.status_mut() = status;
        for (name, value) in self.headers() {
            // Fixed lowercase names; fixed words, and a number of seconds.
            if let Ok(value) = HeaderValue::try_from(value.as_ref()) {
                res.headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
        }
        *res.body_mut() = Body::from(self.body);
        res
    }
}

/// A rejection a handler returns (`Result<_, TenancyError>`), answered in the default
/// problem body.
impl IntoResponse for TenancyError {
    fn into_response(self) -> Response {
        ProblemJson::default().problem(&self, None).into_response()
    }
}

/// The verified principal, as a handler argument: the one an authentication layer put
/// in the request extensions; `401 unauthenticated` (with a `WWW-Authenticate: Bearer`
/// challenge) when there is none. Take `Option<Principal>` where it is optional.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = TenancyError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(TenancyError::CredentialMissing)
    }
}

/// The verified principal if there is one.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}
