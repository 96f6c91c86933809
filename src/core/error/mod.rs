//! Every rejection the crate makes, its HTTP status, its stable code and the response
//! body clients see.
//!
//! | code | status | when |
//! | --- | --- | --- |
//! | <a id="tenant_missing"></a>`tenant_missing` | 401 | no source yielded a tenant and missing is not allowed |
//! | <a id="tenant_invalid"></a>`tenant_invalid` | 400 | an id failed validation, or a source's input was malformed |
//! | <a id="tenant_conflict"></a>`tenant_conflict` | 403 | two sources named different tenants |
//! | <a id="tenant_forbidden"></a>`tenant_forbidden` | 403 | unknown or inactive tenant (the same bytes for both) |
//! | <a id="tenant_misdirected"></a>`tenant_misdirected` | 421 | the tenant lives in another region than this deployment |
//! | <a id="tenant_unavailable"></a>`tenant_unavailable` | 503 | the registry could not answer, or the tenant is provisioning / in maintenance |
//! | <a id="tenant_read_only"></a>`tenant_read_only` | 403 | a write to a tenant whose status allows reads only |
//! | <a id="unauthenticated"></a>`unauthenticated` | 401 | missing, invalid, expired or revoked credential |
//! | <a id="auth_unavailable"></a>`auth_unavailable` | 503 | the revocation store failed, or an identity provider's keys could not be had |
//! | <a id="policy_denied"></a>`policy_denied` | 403 | the policy evaluator said no |
//! | <a id="policy_unavailable"></a>`policy_unavailable` | 503 | the evaluator failed, timed out or panicked |
//! | <a id="quota_exceeded"></a>`quota_exceeded` | 429 | the tenant's quota is used up |
//! | <a id="quota_unavailable"></a>`quota_unavailable` | 503 | the quota backend failed and the mode is fail-closed |
//! | <a id="cost_invalid"></a>`cost_invalid` | 400 | the request's declared cost (e.g. `X-Token-Count`) is malformed |
//! | <a id="invalid_request"></a>`invalid_request` | 400 | a handler refused a malformed request (for apps that answer everything in this shape) |
//! | <a id="internal_error"></a>`internal_error` | 500 | the application is misconfigured (a stage's prerequisite is missing) |
//!
//! Clients get the code, the status and a fixed short text, as an RFC 9457
//! `application/problem+json` body ([`ProblemJson`]), whose `type` is by default this
//! table's row for the code on docs.rs ([`DEFAULT_TYPE_BASE`] followed by the code). What caused the rejection (which
//! source, which status, which backend error) goes to logs and the audit sink only.
//! Swap the body shape with your own [`ErrorResponder`].

use actix_web::{
    http::header::{HeaderValue, WWW_AUTHENTICATE},
    HttpRequest, HttpResponse,
};

// The rejections as data, framework-neutral (`tenancy-core`), where the crate has always
// had them; what follows is how actix answers them.
pub use tenancy_core::error::{
    ConfigError, ErrorCode, Problem, ProblemJson, TenancyError, DEFAULT_TYPE_BASE,
};

#[cfg(test)]
mod tests;

/// Adds the `WWW-Authenticate` challenge of an authentication rejection
/// ([`TenancyError::challenge`]), unless the responder set one.
fn add_challenge(err: &TenancyError, res: &mut HttpResponse) {
    if let Some(value) = err.challenge() {
        if !res.headers().contains_key(WWW_AUTHENTICATE) {
            let value = HeaderValue::from_static(value);
            res.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
    }
}

/// `responder`'s answer to `err`, with its challenge; the default body when the
/// responder panicked (it is the application's code: the client still gets an answer
/// of the right status).
pub(crate) fn respond(
    responder: &dyn ErrorResponder,
    err: &TenancyError,
    req: &HttpRequest,
) -> HttpResponse {
    let mut res = tenancy_core::caught("ErrorResponder::respond", || responder.respond(err, req))
        .unwrap_or_else(|| ProblemJson::default().problem(err, None).into());
    add_challenge(err, &mut res);
    res
}

/// The error an extractor returns: `err` answered by `responder`, with its challenge.
pub(crate) fn respond_err(
    err: TenancyError,
    responder: &dyn ErrorResponder,
    req: &HttpRequest,
) -> actix_web::Error {
    let res = respond(responder, &err, req);
    actix_web::error::InternalError::from_response(err, res).into()
}

/// Turns a rejection into the response the client sees.
///
/// The default is [`ProblemJson`]. A closure `Fn(&TenancyError, &HttpRequest) ->
/// HttpResponse` is a responder too:
///
/// ```
/// use actix_tenancy::error::{ErrorResponder, TenancyError};
/// use actix_web::{http::StatusCode, HttpRequest, HttpResponse};
///
/// let mine = |err: &TenancyError, _req: &HttpRequest| {
///     HttpResponse::build(StatusCode::from_u16(err.status()).unwrap())
///         .json(serde_json::json!({ "error": { "code": err.code().as_str() } }))
/// };
/// fn takes(_: impl ErrorResponder) {}
/// takes(mine);
/// ```
///
/// To keep the default body and add to it, start from [`ProblemJson::problem`], the
/// rejection as data:
///
/// ```
/// use actix_tenancy::error::{ProblemJson, TenancyError};
/// use actix_web::{HttpRequest, HttpResponse};
///
/// let problems = ProblemJson::default();
/// let mine = move |err: &TenancyError, req: &HttpRequest| {
///     let id = req.headers().get("x-request-id").map(|v| v.as_bytes());
///     let mut res = HttpResponse::from(problems.problem(err, id));
///     res.headers_mut().insert(
///         actix_web::http::header::HeaderName::from_static("x-served-by"),
///         actix_web::http::header::HeaderValue::from_static("api-eu-1"),
///     );
///     res
/// };
/// # fn takes(_: impl actix_tenancy::error::ErrorResponder) {}
/// # takes(mine);
/// ```
///
/// A responder must not put [`TenancyError::reason`] in the body: it is for logs.
pub trait ErrorResponder: Send + Sync + 'static {
    /// The response for `err`.
    fn respond(&self, err: &TenancyError, req: &HttpRequest) -> HttpResponse;
}

impl<F> ErrorResponder for F
where
    F: Fn(&TenancyError, &HttpRequest) -> HttpResponse + Send + Sync + 'static,
{
    fn respond(&self, err: &TenancyError, req: &HttpRequest) -> HttpResponse {
        self(err, req)
    }
}

/// The default body, with `instance` from the request's id header.
impl ErrorResponder for ProblemJson {
    fn respond(&self, err: &TenancyError, req: &HttpRequest) -> HttpResponse {
        // Compared by name: a `&str` key would be parsed (and a custom name copied)
        // into a `HeaderName` on every rejection.
        let id = self.instance_header_name().and_then(|name| {
            req.headers()
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v.as_bytes())
        });
        self.problem(err, id).into()
    }
}
