//! actix-web 4's traits for the core's types (feature `actix-web-4`, which only
//! actix-tenancy turns on). Rust lets only the crate that owns a type implement
//! another crate's trait for it, so these few impls live here; each only converts, and
//! the decisions stay in the neutral code.

use std::borrow::Cow;

use actix_web::{
    dev::Payload,
    http::{header::HeaderName, StatusCode},
    FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError,
};

pub(crate) use actix_web::http::header::HeaderValue;

use crate::{
    error::{Problem, ProblemJson, TenancyError},
    Principal,
};

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

/// The response the crate sends for a [`Problem`]: its status, its
/// [headers](Problem::headers) and its body.
impl From<Problem> for HttpResponse {
    fn from(p: Problem) -> Self {
        let mut res = HttpResponse::build(
            StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        );
        for (name, value) in p.headers() {
            // Fixed lowercase names; fixed words, and a number of seconds.
            let value = match value {
                Cow::Borrowed(v) => HeaderValue::from_static(v),
                Cow::Owned(v) => match HeaderValue::try_from(v) {
                    Ok(v) => v,
                    Err(_) => continue, // never: digits are a header value
                },
            };
            res.insert_header((HeaderName::from_static(name), value));
        }
        res.body(p.body)
    }
}

/// Where an actix request keeps its principal: the request extensions.
impl Principal {
    /// Puts this principal into the request extensions, its one home, for the resolver
    /// and every later reader. Call it only after the credential has been verified.
    pub fn attach(self, req: &impl HttpMessage) {
        req.extensions_mut().insert(self);
    }

    /// The verified principal of the request, if any: the one an authentication stage
    /// attached to the request extensions. A resolved tenant's context carries the
    /// same principal: the resolver read it there.
    pub fn of(req: &impl HttpMessage) -> Option<Principal> {
        req.extensions().get::<Principal>().cloned()
    }
}

/// The verified principal, as a handler argument: `401 unauthenticated` (with a
/// `WWW-Authenticate: Bearer` challenge) when no authentication stage attached one,
/// answered by the application's responder inside actix-tenancy's middleware. Take
/// `Option<Principal>` where a principal is optional.
impl FromRequest for Principal {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let principal = Principal::of(req).ok_or(TenancyError::CredentialMissing);
        std::future::ready(principal.map_err(actix_web::Error::from))
    }
}

/// A header value as actix-web's.
pub(crate) fn header(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

impl crate::quota::QuotaPlan {
    /// [`policy`](Self::policy) as actix-web's header value, computed once when the
    /// plans were built (feature `actix-web-4`).
    pub fn policy_header(&self) -> Option<&HeaderValue> {
        self.policy_header.actix.as_ref()
    }
}

impl From<&actix_web::http::Method> for crate::policy::Method {
    fn from(m: &actix_web::http::Method) -> Self {
        use crate::policy::Method as M;
        use actix_web::http::Method as A;
        match *m {
            A::GET => M::GET,
            A::HEAD => M::HEAD,
            A::POST => M::POST,
            A::PUT => M::PUT,
            A::DELETE => M::DELETE,
            A::PATCH => M::PATCH,
            A::OPTIONS => M::OPTIONS,
            A::CONNECT => M::CONNECT,
            A::TRACE => M::TRACE,
            // An extension method actix parsed: never one a rule names.
            ref other => M::extension(other.as_str()),
        }
    }
}

impl From<actix_web::http::Method> for crate::policy::Method {
    fn from(m: actix_web::http::Method) -> Self {
        Self::from(&m)
    }
}

impl PartialEq<actix_web::http::Method> for crate::policy::Method {
    fn eq(&self, other: &actix_web::http::Method) -> bool {
        self.as_str() == other.as_str()
    }
}
