//! How a rejection is answered: the `ErrorResponder` trait, the default `ProblemJson` body, the challenge and `Retry-After`.

use super::*;

/// Adds the `WWW-Authenticate` challenge of an authentication rejection, unless the
/// responder set one: `Bearer` when no credential came, `Bearer error="invalid_token"`
/// when one came and failed.
pub(crate) fn add_challenge(err: &TenancyError, res: &mut HttpResponse) {
    use actix_web::http::header::WWW_AUTHENTICATE;
    if let Some(value) = challenge(err) {
        if !res.headers().contains_key(WWW_AUTHENTICATE) {
            let value = HeaderValue::from_static(value);
            res.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
    }
}

/// The `WWW-Authenticate` challenge of an authentication rejection.
fn challenge(err: &TenancyError) -> Option<&'static str> {
    match err {
        TenancyError::CredentialMissing => Some("Bearer"),
        TenancyError::Unauthenticated { .. } => Some("Bearer error=\"invalid_token\""),
        _ => None,
    }
}

/// `responder`'s answer to `err`; the default body when the responder panicked (it
/// is the application's code: the client still gets an answer of the right status).
pub(crate) fn respond(
    responder: &dyn ErrorResponder,
    err: &TenancyError,
    req: &HttpRequest,
) -> HttpResponse {
    crate::core::caught::caught("ErrorResponder::respond", || responder.respond(err, req))
        .unwrap_or_else(|| ProblemJson::default().body(err))
}

/// The error an extractor returns: `err` answered by `responder`, with its challenge.
pub(crate) fn respond_err(
    err: TenancyError,
    responder: &dyn ErrorResponder,
    req: &HttpRequest,
) -> actix_web::Error {
    let mut res = respond(responder, &err, req);
    add_challenge(&err, &mut res);
    actix_web::error::InternalError::from_response(err, res).into()
}

impl ResponseError for TenancyError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = ProblemJson::default().body(self);
        add_challenge(self, &mut res);
        res
    }
}

/// Turns a rejection into the response the client sees.
///
/// The default is [`ProblemJson`]. A closure `Fn(&TenancyError, &HttpRequest) ->
/// HttpResponse` is a responder too:
///
/// ```
/// use actix_tenancy::error::{ErrorResponder, TenancyError};
/// use actix_web::{HttpRequest, HttpResponse};
///
/// let mine = |err: &TenancyError, _req: &HttpRequest| {
///     HttpResponse::build(err.status())
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

/// Where the default problem `type` URIs point: this module's table of codes on
/// docs.rs, which has an anchor per code (`…#tenant_missing`).
pub const DEFAULT_TYPE_BASE: &str =
    "https://docs.rs/actix-tenancy/latest/actix_tenancy/error/index.html#";

/// The default responder: an RFC 9457 `application/problem+json` body, ending in a
/// newline.
///
/// ```json
/// {"type":"https://docs.rs/actix-tenancy/latest/actix_tenancy/error/index.html#tenant_missing","title":"Tenant required","status":401,"code":"tenant_missing"}
/// ```
///
/// - `type` names the problem: by default the row of the [module](super)'s table for
///   the code, so a client or an operator who follows it reads what the code means;
///   with [`type_base`](Self::type_base), your own base followed by the code. With
///   [`about_blank`](Self::about_blank), `about:blank` and, as RFC 9457 asks of that
///   type, the status's phrase as the `title` (`"Unauthorized"`).
/// - `title` is the code's fixed short text ([`ErrorCode::title`]).
/// - `code` is an extension member carrying the stable code, for clients to match on;
///   `limit` and `capability` say which quota limit or capability kind refused.
/// - `instance` is the request's id, when the request carries one in `X-Request-Id`
///   (set by a proxy or a request-id middleware; another header with
///   [`instance_header`](Self::instance_header), none with
///   [`no_instance`](Self::no_instance)). Only an id of 1 to 128 URI-unreserved
///   characters (`A-Z a-z 0-9 - . _ ~`) is echoed, as a relative URI reference; any
///   other is left out.
///
/// `Retry-After` is set when the rejection knows it, and `Cache-Control: no-store`
/// always.
#[derive(Debug, Clone)]
pub struct ProblemJson {
    /// The JSON-escaped type base, without quotes; `None` for `about:blank`.
    pub(super) type_base: Option<String>,
    pub(super) instance: Option<header::HeaderName>,
}

impl Default for ProblemJson {
    fn default() -> Self {
        Self {
            type_base: Some(DEFAULT_TYPE_BASE.to_owned()),
            instance: Some(header::HeaderName::from_static("x-request-id")),
        }
    }
}

impl ProblemJson {
    /// Problem types become `{base}{code}`, e.g. `https://errors.example.com/tenant_missing`.
    #[must_use]
    pub fn type_base(mut self, base: impl Into<String>) -> Self {
        let quoted = serde_json::Value::String(base.into()).to_string();
        self.type_base = Some(quoted[1..quoted.len() - 1].to_owned());
        self
    }

    /// Every problem's type is `about:blank`, and its title the status's phrase
    /// (`"Forbidden"`), as RFC 9457 asks of that type; `code` still tells them apart.
    #[must_use]
    pub fn about_blank(mut self) -> Self {
        self.type_base = None;
        self
    }

    /// Takes `instance` from this request header instead of `X-Request-Id`.
    #[must_use]
    pub fn instance_header(mut self, name: header::HeaderName) -> Self {
        self.instance = Some(name);
        self
    }

    /// Never sends `instance`.
    #[must_use]
    pub fn no_instance(mut self) -> Self {
        self.instance = None;
        self
    }

    /// The response for `err`, without `instance` (there is no request to take it
    /// from).
    pub fn body(&self, err: &TenancyError) -> HttpResponse {
        self.problem(err, None).into()
    }

    /// The response for `err` to `req`.
    pub fn body_for(&self, err: &TenancyError, req: &HttpRequest) -> HttpResponse {
        let id = self
            .instance
            .as_ref()
            .and_then(|name| req.headers().get(name))
            .map(HeaderValue::as_bytes);
        self.problem(err, id).into()
    }

    /// `err` as data: the status, headers and body of the answer, for any web
    /// framework. `request_id` is the request's id as it came (the value of the
    /// [`instance_header`](Self::instance_header)); it becomes `instance` only when it
    /// is 1 to 128 URI-unreserved characters.
    ///
    /// ```
    /// use actix_tenancy::error::{ProblemJson, TenancyError};
    ///
    /// let problem = ProblemJson::default().problem(&TenancyError::CredentialMissing, Some(b"r-1"));
    /// assert_eq!(problem.status(), 401);
    /// assert!(problem.body().ends_with("\"instance\":\"r-1\"}\n"));
    /// assert!(problem.headers().any(|(name, value)| name == "www-authenticate" && value == "Bearer"));
    /// ```
    pub fn problem(&self, err: &TenancyError, request_id: Option<&[u8]>) -> Problem {
        use std::fmt::Write as _;
        let code = err.code();
        let status = code.status();
        // Checked here: unreserved ASCII only, so it needs no JSON escaping.
        let instance = request_id
            .filter(|id| is_request_id(id))
            .and_then(|id| std::str::from_utf8(id).ok());
        // Titles, codes and phrases are fixed ASCII without quotes or backslashes; the
        // user-configured type base was escaped when it was set.
        let mut body = String::with_capacity(160);
        let title = match &self.type_base {
            Some(base) => {
                let _ = write!(body, r#"{{"type":"{base}{}""#, code.as_str());
                code.title()
            }
            None => {
                body.push_str(r#"{"type":"about:blank""#);
                status.canonical_reason().unwrap_or("Error")
            }
        };
        let _ = write!(
            body,
            r#","title":"{title}","status":{},"code":"{}""#,
            status.as_u16(),
            code.as_str()
        );
        if let Some(d) = err.detail() {
            let _ = write!(body, r#","detail":"{d}""#);
        }
        // Limit names and capability kinds are fixed words of the crate's own; anything
        // else is left out rather than escaped.
        let word = |w: &&str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase());
        if let Some(limit) = err.limit().filter(word) {
            let _ = write!(body, r#","limit":"{limit}""#);
        }
        if let Some(kind) = err.capability().filter(word) {
            let _ = write!(body, r#","capability":"{kind}""#);
        }
        if let Some(id) = instance {
            let _ = write!(body, r#","instance":"{id}""#);
        }
        body.push_str("}\n");
        Problem {
            status: status.as_u16(),
            retry_after: err.retry_after().map(retry_after_secs),
            challenge: challenge(err),
            body,
        }
    }
}

/// A rejection as data, from [`ProblemJson::problem`]: the status, the headers and the
/// body of the answer, which an adapter for any web framework turns into its response
/// (`HttpResponse::from` here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    status: u16,
    retry_after: Option<u64>,
    challenge: Option<&'static str>,
    body: String,
}

impl Problem {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers, names in lowercase: `content-type`, `cache-control`, and
    /// `retry-after` and `www-authenticate` where the rejection has them.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, Cow<'static, str>)> + '_ {
        [
            Some(("content-type", Cow::Borrowed("application/problem+json"))),
            Some(("cache-control", Cow::Borrowed("no-store"))),
            self.retry_after
                .map(|s| ("retry-after", Cow::Owned(s.to_string()))),
            self.challenge
                .map(|c| ("www-authenticate", Cow::Borrowed(c))),
        ]
        .into_iter()
        .flatten()
    }

    /// The `application/problem+json` body, ending in a newline.
    pub fn body(&self) -> &str {
        &self.body
    }
}

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

/// 1 to 128 URI-unreserved characters: safe to echo as a JSON string and a relative
/// URI reference.
pub(super) fn is_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

impl ErrorResponder for ProblemJson {
    fn respond(&self, err: &TenancyError, req: &HttpRequest) -> HttpResponse {
        self.body_for(err, req)
    }
}

/// Whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}
