//! actix-web 4's traits for the core's types (feature `actix-web-4`, which only
//! actix-tenancy turns on). Rust lets only the crate that owns a type implement
//! another crate's trait for it, so these few impls live here; each only converts, and
//! the decisions stay in the neutral code.

use actix_web::{
    http::{
        header::{self, HeaderValue},
        StatusCode,
    },
    HttpResponse, ResponseError,
};

use crate::error::{Problem, ProblemJson, TenancyError};

/// A rejection a handler returns (`Result<_, TenancyError>`), answered in the default
/// body; the middleware's own rejections go through the application's responder.
impl ResponseError for TenancyError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        ProblemJson::default().problem(self, None).into()
    }
}

/// The response the crate sends for a [`Problem`].
impl From<Problem> for HttpResponse {
    fn from(p: Problem) -> Self {
        let mut res = HttpResponse::build(
            StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        );
        res.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Some(after) = p.retry_after {
            res.insert_header((header::RETRY_AFTER, after));
        }
        if let Some(c) = p.challenge {
            res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static(c)));
        }
        res.body(p.body)
    }
}
