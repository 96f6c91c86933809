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

use std::{borrow::Cow, fmt, time::Duration};

use actix_web::{
    http::{
        header::{self, HeaderValue},
        StatusCode,
    },
    HttpRequest, HttpResponse, ResponseError,
};

use super::source::SourceKind;

/// The stable, public code of a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `tenant_missing`, 401.
    TenantMissing,
    /// `tenant_invalid`, 400.
    TenantInvalid,
    /// `tenant_conflict`, 403.
    TenantConflict,
    /// `tenant_forbidden`, 403.
    TenantForbidden,
    /// `tenant_misdirected`, 421.
    TenantMisdirected,
    /// `tenant_unavailable`, 503.
    TenantUnavailable,
    /// `tenant_read_only`, 403.
    TenantReadOnly,
    /// `unauthenticated`, 401.
    Unauthenticated,
    /// `auth_unavailable`, 503.
    AuthUnavailable,
    /// `policy_denied`, 403.
    PolicyDenied,
    /// `policy_unavailable`, 503.
    PolicyUnavailable,
    /// `quota_exceeded`, 429.
    QuotaExceeded,
    /// `quota_unavailable`, 503.
    QuotaUnavailable,
    /// `cost_invalid`, 400.
    CostInvalid,
    /// `invalid_request`, 400.
    InvalidRequest,
    /// `internal_error`, 500.
    Internal,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 16] = [
        Self::TenantMissing,
        Self::TenantInvalid,
        Self::TenantConflict,
        Self::TenantForbidden,
        Self::TenantMisdirected,
        Self::TenantUnavailable,
        Self::TenantReadOnly,
        Self::Unauthenticated,
        Self::AuthUnavailable,
        Self::PolicyDenied,
        Self::PolicyUnavailable,
        Self::QuotaExceeded,
        Self::QuotaUnavailable,
        Self::CostInvalid,
        Self::InvalidRequest,
        Self::Internal,
    ];

    /// The code as it appears in bodies, logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TenantMissing => "tenant_missing",
            Self::TenantInvalid => "tenant_invalid",
            Self::TenantConflict => "tenant_conflict",
            Self::TenantForbidden => "tenant_forbidden",
            Self::TenantMisdirected => "tenant_misdirected",
            Self::TenantUnavailable => "tenant_unavailable",
            Self::TenantReadOnly => "tenant_read_only",
            Self::Unauthenticated => "unauthenticated",
            Self::AuthUnavailable => "auth_unavailable",
            Self::PolicyDenied => "policy_denied",
            Self::PolicyUnavailable => "policy_unavailable",
            Self::QuotaExceeded => "quota_exceeded",
            Self::QuotaUnavailable => "quota_unavailable",
            Self::CostInvalid => "cost_invalid",
            Self::InvalidRequest => "invalid_request",
            Self::Internal => "internal_error",
        }
    }

    /// The HTTP status.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::TenantMissing | Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::TenantInvalid | Self::CostInvalid | Self::InvalidRequest => {
                StatusCode::BAD_REQUEST
            }
            Self::TenantConflict
            | Self::TenantForbidden
            | Self::TenantReadOnly
            | Self::PolicyDenied => StatusCode::FORBIDDEN,
            Self::TenantMisdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::TenantUnavailable
            | Self::AuthUnavailable
            | Self::PolicyUnavailable
            | Self::QuotaUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, fixed, human-readable title. It never contains request data.
    pub const fn title(self) -> &'static str {
        match self {
            Self::TenantMissing => "Tenant required",
            Self::TenantInvalid => "Invalid tenant identifier",
            Self::TenantConflict => "Conflicting tenant identifiers",
            Self::TenantForbidden => "Tenant not allowed",
            Self::TenantMisdirected => "Tenant served by another region",
            Self::TenantUnavailable => "Tenant temporarily unavailable",
            Self::TenantReadOnly => "Tenant is read-only",
            Self::Unauthenticated => "Authentication required",
            Self::AuthUnavailable => "Authentication temporarily unavailable",
            Self::PolicyDenied => "Denied by tenant policy",
            Self::PolicyUnavailable => "Policy temporarily unavailable",
            Self::QuotaExceeded => "Quota exceeded",
            Self::QuotaUnavailable => "Quota temporarily unavailable",
            Self::CostInvalid => "Invalid request cost",
            Self::InvalidRequest => "Invalid request",
            Self::Internal => "Internal server error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejection: one variant per failure in the table of the [module docs](self).
///
/// The fields are for logs, metrics and the audit sink; [`ProblemJson`] shows none of
/// them to the client except `Retry-After`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TenancyError {
    /// No source yielded a tenant, and missing is not allowed.
    TenantMissing,
    /// A source yielded an id that failed validation, or input it could not read.
    TenantInvalid {
        /// The source whose input was bad.
        source: SourceKind,
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// Two sources named different tenants.
    TenantConflict {
        /// The source that won the ranking.
        first: SourceKind,
        /// The source that disagreed.
        second: SourceKind,
    },
    /// The tenant is unknown, suspended or deleted. Deliberately one variant with one
    /// body: outsiders cannot tell which.
    TenantForbidden {
        /// Why, for logs (`unknown`, `suspended`, ...).
        reason: Cow<'static, str>,
    },
    /// The tenant's record names another region than this deployment's.
    TenantMisdirected,
    /// The registry could not answer, or the tenant is provisioning / in maintenance.
    TenantUnavailable {
        /// Sent as `Retry-After`, in whole seconds, when set.
        retry_after: Option<Duration>,
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// A write to a tenant whose status allows reads only.
    TenantReadOnly,
    /// The request carried no credential where one is required. Answered like
    /// [`Unauthenticated`](Self::Unauthenticated) (`401 unauthenticated`), with a
    /// challenge that names no error (RFC 6750, section 3.1).
    CredentialMissing,
    /// An invalid, expired or revoked credential.
    Unauthenticated {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The credential could not be checked (the revocation store failed): fail closed.
    AuthUnavailable {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The policy evaluator denied the request.
    PolicyDenied {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The policy refused a capability the request asked for (a model, a tool): a
    /// `403 policy_denied` whose body names the kind of capability (`"capability":
    /// "model"`), never the value asked for or the rules.
    CapabilityDenied {
        /// The kind of capability refused (`model`, `tool`).
        capability: &'static str,
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The policy evaluator failed, timed out or panicked.
    PolicyUnavailable {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The quota is used up.
    QuotaExceeded {
        /// Sent as `Retry-After`, in whole seconds rounded up, at least 1.
        retry_after: Option<Duration>,
        /// The limit that refused, by its name in the `RateLimit` fields (`rate`,
        /// `hour`, `day`, `month`): sent as the problem body's `limit` member, so a
        /// client knows whether to wait a second or a day.
        limit: Option<&'static str>,
    },
    /// The quota backend failed and the mode is fail-closed.
    QuotaUnavailable {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The request's declared cost is malformed (negative, not a number, too large).
    CostInvalid {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// A handler refused a malformed request (a body it cannot read): for
    /// applications that answer every rejection in the crate's shape.
    InvalidRequest {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The application is wired wrongly: a stage ran without its prerequisite.
    Misconfigured(&'static str),
    /// Application code the crate called panicked (a cost estimator, a custom
    /// source): `500`, never a reset connection. Names the callback, for logs.
    Panicked(&'static str),
}

impl TenancyError {
    /// The stable public code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TenantMissing => ErrorCode::TenantMissing,
            Self::TenantInvalid { .. } => ErrorCode::TenantInvalid,
            Self::TenantConflict { .. } => ErrorCode::TenantConflict,
            Self::TenantForbidden { .. } => ErrorCode::TenantForbidden,
            Self::TenantMisdirected => ErrorCode::TenantMisdirected,
            Self::TenantUnavailable { .. } => ErrorCode::TenantUnavailable,
            Self::TenantReadOnly => ErrorCode::TenantReadOnly,
            Self::CredentialMissing | Self::Unauthenticated { .. } => ErrorCode::Unauthenticated,
            Self::AuthUnavailable { .. } => ErrorCode::AuthUnavailable,
            Self::PolicyDenied { .. } | Self::CapabilityDenied { .. } => ErrorCode::PolicyDenied,
            Self::PolicyUnavailable { .. } => ErrorCode::PolicyUnavailable,
            Self::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            Self::QuotaUnavailable { .. } => ErrorCode::QuotaUnavailable,
            Self::CostInvalid { .. } => ErrorCode::CostInvalid,
            Self::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            Self::Misconfigured(_) | Self::Panicked(_) => ErrorCode::Internal,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code().status()
    }

    /// How long the client should wait before retrying, when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TenantUnavailable { retry_after, .. }
            | Self::QuotaExceeded { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A fixed public explanation, for the few rejections where the title alone would
    /// mislead the client. Never contains request data.
    pub fn detail(&self) -> Option<&'static str> {
        match self {
            Self::QuotaExceeded {
                retry_after: None, ..
            } => Some("This request can never be admitted by the quota; retrying will not help."),
            _ => None,
        }
    }

    /// The quota limit that refused (`rate`, `hour`, `day`, `month`), for
    /// [`QuotaExceeded`](Self::QuotaExceeded). Public: it names the client's own limit,
    /// as the `RateLimit` fields do.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Self::QuotaExceeded { limit, .. } => *limit,
            _ => None,
        }
    }

    /// The kind of capability refused (`model`, `tool`), for
    /// [`CapabilityDenied`](Self::CapabilityDenied). Public: it names what the client
    /// asked for, not the rules.
    pub fn capability(&self) -> Option<&'static str> {
        match self {
            Self::CapabilityDenied { capability, .. } => Some(capability),
            _ => None,
        }
    }

    /// The internal reason, for logs and audit. Never send it to clients.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            Self::TenantInvalid { source, reason } => {
                Cow::Owned(format!("{}: {reason}", source.as_str()))
            }
            Self::TenantConflict { first, second } => Cow::Owned(format!(
                "{} and {} name different tenants",
                first.as_str(),
                second.as_str()
            )),
            Self::TenantForbidden { reason }
            | Self::TenantUnavailable { reason, .. }
            | Self::Unauthenticated { reason }
            | Self::AuthUnavailable { reason }
            | Self::PolicyDenied { reason }
            | Self::CapabilityDenied { reason, .. }
            | Self::PolicyUnavailable { reason }
            | Self::QuotaUnavailable { reason }
            | Self::CostInvalid { reason }
            | Self::InvalidRequest { reason } => reason.clone(),
            Self::Misconfigured(what) => Cow::Borrowed(what),
            Self::Panicked(what) => Cow::Borrowed(what),
            Self::CredentialMissing => Cow::Borrowed("no bearer token"),
            other => Cow::Borrowed(other.code().title()),
        }
    }
}

impl fmt::Display for TenancyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.reason())
    }
}

impl std::error::Error for TenancyError {}

/// Adds the `WWW-Authenticate` challenge of an authentication rejection, unless the
/// responder set one: `Bearer` when no credential came, `Bearer error="invalid_token"`
/// when one came and failed.
pub(crate) fn add_challenge(err: &TenancyError, res: &mut HttpResponse) {
    use actix_web::http::header::{HeaderValue, WWW_AUTHENTICATE};
    let value = match err {
        TenancyError::CredentialMissing => HeaderValue::from_static("Bearer"),
        TenancyError::Unauthenticated { .. } => {
            HeaderValue::from_static("Bearer error=\"invalid_token\"")
        }
        _ => return,
    };
    if !res.headers().contains_key(WWW_AUTHENTICATE) {
        res.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
}

/// `responder`'s answer to `err`; the default body when the responder panicked (it
/// is the application's code: the client still gets an answer of the right status).
pub(crate) fn respond(
    responder: &dyn ErrorResponder,
    err: &TenancyError,
    req: &HttpRequest,
) -> HttpResponse {
    super::caught::caught("ErrorResponder::respond", || responder.respond(err, req))
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
/// use actix_tenancy::{ErrorResponder, TenancyError};
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
/// - `type` names the problem: by default the row of the [module](self)'s table for
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
    type_base: Option<String>,
    instance: Option<header::HeaderName>,
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
        self.build(err, None)
    }

    /// The response for `err` to `req`.
    pub fn body_for(&self, err: &TenancyError, req: &HttpRequest) -> HttpResponse {
        let id = self
            .instance
            .as_ref()
            .and_then(|name| req.headers().get(name))
            .map(HeaderValue::as_bytes)
            .filter(|id| is_request_id(id));
        // Checked above: unreserved ASCII only, so it needs no JSON escaping.
        self.build(err, id.and_then(|id| std::str::from_utf8(id).ok()))
    }

    fn build(&self, err: &TenancyError, instance: Option<&str>) -> HttpResponse {
        use std::fmt::Write as _;
        let code = err.code();
        let status = code.status();
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
        let mut res = HttpResponse::build(status);
        res.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Some(after) = err.retry_after() {
            res.insert_header((header::RETRY_AFTER, retry_after_secs(after)));
        }
        res.body(body)
    }
}

/// 1 to 128 URI-unreserved characters: safe to echo as a JSON string and a relative
/// URI reference.
fn is_request_id(id: &[u8]) -> bool {
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

/// A configuration mistake, reported when the middleware is built, never at request
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The resolver has no source to read a tenant from.
    NoSources,
    /// A header name is not a valid HTTP header name.
    InvalidHeaderName(String),
    /// A base domain for the host source is empty or not a plain DNS name.
    InvalidBaseDomain(String),
    /// A path prefix must start and end with `/`, e.g. `/t/`.
    InvalidPathPrefix(String),
    /// A certificate rule's SAN URI prefix must be visible ASCII, contain `:` and end
    /// with `/`, e.g. `spiffe://example.org/tenant/`.
    InvalidCertificateRule(String),
    /// An exempt path must start with `/`.
    InvalidExemptPath(String),
    /// Two sources of the same kind and configuration were added.
    DuplicateSource(&'static str),
    /// A required part was not configured.
    Missing(&'static str),
    /// A setting every stage of a pipeline shares (the responder, the audit sink,
    /// per-tenant metrics) was given on more than one stage, or on a stage and on
    /// `Tenancy`.
    SettingTwice(&'static str),
    /// An authentication stage was composed with a resolver that does not read the
    /// token's tenant ([`Source::claim`](crate::Source::claim)).
    AuthWithoutClaim,
    /// A duration that must be longer than zero is zero (a timeout that would refuse
    /// every request).
    ZeroDuration(&'static str),
    /// Two settings name the same header, so one request value would answer both.
    SameHeader {
        /// The first setting.
        first: &'static str,
        /// The second setting.
        second: &'static str,
    },
    /// A JSON or TOML document (`of`: `registry` or `policy`) could not be parsed;
    /// `reason` is the parser's message, which names the line and column.
    InvalidDocument {
        /// What the document describes.
        of: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A file could not be read.
    UnreadableFile {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's message.
        reason: String,
    },
    /// One document names the same tenant twice.
    DuplicateTenant(String),
    /// A policy rule is malformed; `at` names the level at fault (`tier:free`,
    /// `tenant:acme`, `default`).
    InvalidRule {
        /// The level.
        at: String,
        /// What is wrong with the rule.
        reason: String,
    },
    /// A policy set's version is not newer than the newest already loaded.
    StalePolicyVersion {
        /// The version given.
        version: u64,
        /// The newest version loaded.
        newest: u64,
    },
    /// Every policy version number has been given out.
    PolicyVersionsExhausted,
    /// A rollback names a version that is not kept (`None`: no version is kept
    /// before the active one).
    PolicyVersionNotKept(Option<u64>),
    /// `promote_shadow` with no shadow version loaded.
    NoShadowPolicy,
    /// A quota plan is invalid; `plan` says which (`for tier "pro"`).
    InvalidPlan {
        /// Which plan.
        plan: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A backend's URL could not be parsed, or its client could not be set up.
    InvalidBackendUrl {
        /// The backend (`Redis`).
        backend: &'static str,
        /// The client's message.
        reason: String,
    },
    /// A PostgreSQL name (a role, a `NOTIFY` channel) is not 1 to 63 bytes of
    /// `[a-z0-9_]` starting with a letter or `_`.
    InvalidSqlName {
        /// What the name is for.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A reconnect backoff whose minimum is zero or above its maximum.
    InvalidBackoff,
    /// A route pattern for a cost estimator does not start with `/`.
    InvalidRoutePattern(String),
    /// The same method and route pattern was given two cost estimators.
    DuplicateRoute(String),
    /// An issuer pattern must hold `{tenant}` once, e.g.
    /// `https://sso.example.com/realms/{tenant}`.
    InvalidIssuerPattern(String),
    /// A remote key set found by discovery belongs to another issuer than the one
    /// tokens are checked for.
    IssuerMismatch {
        /// The configuration's issuer.
        configured: String,
        /// The key set's issuer.
        keys: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSources => f.write_str("the resolver has no tenant source"),
            Self::InvalidHeaderName(h) => write!(f, "invalid header name {h:?}"),
            Self::InvalidBaseDomain(d) => write!(f, "invalid base domain {d:?}"),
            Self::InvalidPathPrefix(p) => {
                write!(
                    f,
                    "invalid path prefix {p:?}: it must start and end with '/'"
                )
            }
            Self::InvalidCertificateRule(p) => write!(
                f,
                "invalid SAN URI prefix {p:?}: it must contain ':' and end with '/'"
            ),
            Self::InvalidExemptPath(p) => {
                write!(f, "invalid exempt path {p:?}: it must start with '/'")
            }
            Self::DuplicateSource(s) => write!(f, "the source {s} was added twice"),
            Self::Missing(what) => write!(f, "{what} is required"),
            Self::ZeroDuration(what) => write!(f, "{what} must be longer than zero"),
            Self::SameHeader { first, second } => write!(
                f,
                "the {first} header and the {second} header are the same header"
            ),
            Self::AuthWithoutClaim => f.write_str(
                "an authentication stage needs Source::claim() in the resolver, so that the \
                 token's tenant wins over every other source",
            ),
            Self::SettingTwice(what) => write!(
                f,
                "the setting {what} is given twice: set it once, on Tenancy::builder() or on one stage"
            ),
            Self::IssuerMismatch { configured, keys } => write!(
                f,
                "the key set is the issuer {keys:?}'s, but tokens are checked for {configured:?}"
            ),
            Self::InvalidIssuerPattern(p) => write!(
                f,
                "invalid issuer pattern {p:?}: it must hold {{tenant}} exactly once"
            ),
            Self::InvalidDocument { of, reason } => {
                write!(f, "the {of} document could not be read: {reason}")
            }
            Self::UnreadableFile { path, reason } => {
                write!(f, "the file {} could not be read: {reason}", path.display())
            }
            Self::DuplicateTenant(id) => write!(f, "the tenant {id:?} is listed twice"),
            Self::InvalidRule { at, reason } => write!(f, "a rule of {at} is invalid: {reason}"),
            Self::StalePolicyVersion { version, newest } => write!(
                f,
                "policy version {version} is not newer than version {newest}, already loaded"
            ),
            Self::PolicyVersionsExhausted => f.write_str("no policy version number is left"),
            Self::PolicyVersionNotKept(Some(v)) => {
                write!(f, "policy version {v} is not kept, so it cannot be made active")
            }
            Self::PolicyVersionNotKept(None) => {
                f.write_str("no policy version before the active one is kept to roll back to")
            }
            Self::NoShadowPolicy => f.write_str("no shadow policy version is loaded to promote"),
            Self::InvalidPlan { plan, reason } => write!(f, "the quota plan {plan} is invalid: {reason}"),
            Self::InvalidBackendUrl { backend, reason } => {
                write!(f, "the {backend} URL is invalid: {reason}")
            }
            Self::InvalidSqlName { what, name } => write!(
                f,
                "the {what} {name:?} is not 1 to 63 bytes of [a-z0-9_] starting with a letter or '_'"
            ),
            Self::InvalidRoutePattern(p) => {
                write!(f, "the route pattern {p:?} must start with '/'")
            }
            Self::DuplicateRoute(r) => write!(f, "the route {r} is given two cost estimators"),
            Self::InvalidBackoff => f.write_str(
                "the reconnect backoff's minimum must be longer than zero and at most its maximum",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()));
            assert!(code
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(!code.status().is_success());
        }
    }

    #[test]
    fn every_problem_body_is_valid_json_in_rfc_order() {
        use actix_web::body::MessageBody as _;
        let with_base = ProblemJson::default().type_base("https://e.example/\"x\\/");
        let blank = ProblemJson::default().about_blank();
        let docs = include_str!("error.rs");
        for code in ErrorCode::ALL {
            let err = sample(code);
            assert_eq!(err.code(), code);
            for responder in [&ProblemJson::default(), &with_base, &blank] {
                let res = responder.body(&err);
                let body = res.into_body().try_into_bytes().ok().unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["status"], err.status().as_u16());
                assert_eq!(v["code"], err.code().as_str());
                let text = std::str::from_utf8(&body).unwrap();
                assert!(text.starts_with("{\"type\":"), "{text}");
                assert!(
                    text.ends_with("}\n"),
                    "one line, ending in a newline: {text}"
                );
                assert!(!text.contains("internal detail"), "{text}");
            }
            let v = |r: &ProblemJson| -> serde_json::Value {
                let body = r.body(&err).into_body().try_into_bytes().ok().unwrap();
                serde_json::from_slice(&body).unwrap()
            };
            // Each code its own type, documented under its anchor.
            assert_eq!(
                v(&ProblemJson::default())["type"],
                format!("{DEFAULT_TYPE_BASE}{code}")
            );
            assert!(
                docs.contains(&format!("<a id=\"{code}\"></a>`{code}`")),
                "the module's table has no anchor for {code}"
            );
            assert_eq!(
                v(&with_base)["type"],
                format!("https://e.example/\"x\\/{code}")
            );
            assert_eq!(v(&with_base)["title"], code.title());
            // about:blank: the status's phrase, as RFC 9457 asks.
            let b = v(&blank);
            assert_eq!(b["type"], "about:blank");
            assert_eq!(b["title"], code.status().canonical_reason().unwrap());
        }
    }

    fn sample(code: ErrorCode) -> TenancyError {
        let reason = || Cow::Borrowed("internal detail");
        match code {
            ErrorCode::TenantMissing => TenancyError::TenantMissing,
            ErrorCode::TenantInvalid => TenancyError::TenantInvalid {
                source: SourceKind::Header,
                reason: reason(),
            },
            ErrorCode::TenantConflict => TenancyError::TenantConflict {
                first: SourceKind::Claim,
                second: SourceKind::Header,
            },
            ErrorCode::TenantForbidden => TenancyError::TenantForbidden { reason: reason() },
            ErrorCode::TenantMisdirected => TenancyError::TenantMisdirected,
            ErrorCode::TenantUnavailable => TenancyError::TenantUnavailable {
                retry_after: Some(Duration::from_millis(1500)),
                reason: reason(),
            },
            ErrorCode::TenantReadOnly => TenancyError::TenantReadOnly,
            ErrorCode::Unauthenticated => TenancyError::Unauthenticated { reason: reason() },
            ErrorCode::AuthUnavailable => TenancyError::AuthUnavailable { reason: reason() },
            ErrorCode::PolicyDenied => TenancyError::PolicyDenied { reason: reason() },
            ErrorCode::PolicyUnavailable => TenancyError::PolicyUnavailable { reason: reason() },
            ErrorCode::QuotaExceeded => TenancyError::QuotaExceeded {
                retry_after: None,
                limit: Some("day"),
            },
            ErrorCode::QuotaUnavailable => TenancyError::QuotaUnavailable { reason: reason() },
            ErrorCode::CostInvalid => TenancyError::CostInvalid { reason: reason() },
            ErrorCode::InvalidRequest => TenancyError::InvalidRequest { reason: reason() },
            ErrorCode::Internal => TenancyError::Misconfigured("internal detail"),
        }
    }

    #[test]
    fn problem_body_reveals_no_reason() {
        let err = TenancyError::TenantForbidden {
            reason: "suspended since 2026-01-01 (secret-internal)".into(),
        };
        let res = ProblemJson::default().body(&err);
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        use actix_web::body::MessageBody as _;
        let body = match res.into_body().try_into_bytes() {
            Ok(b) => b,
            Err(_) => panic!("body is not in memory"),
        };
        let text = std::str::from_utf8(&body).unwrap();
        assert!(!text.contains("secret"));
        assert!(text.contains("\"code\":\"tenant_forbidden\""));
    }

    #[test]
    fn instance_is_the_request_id_when_it_is_a_safe_one() {
        use actix_web::body::MessageBody as _;
        let err = TenancyError::TenantMissing;
        let instance = |r: &ProblemJson, id: Option<&[u8]>| -> serde_json::Value {
            let mut req = actix_web::test::TestRequest::default();
            if let Some(id) = id {
                req = req.insert_header(("x-request-id", HeaderValue::from_bytes(id).unwrap()));
            }
            let res = r.respond(&err, &req.to_http_request());
            let body = res.into_body().try_into_bytes().ok().unwrap();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["instance"].clone()
        };
        let p = ProblemJson::default();
        assert_eq!(
            instance(&p, Some(b"4bf92f3577b34da6a3ce929d0e0e4736")),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(instance(&p, Some(b"req-1.a_b~c")), "req-1.a_b~c");
        assert!(instance(&p, None).is_null());
        // Hostile or odd ids are left out, never escaped into the body.
        for id in [
            &b"a\"b"[..],
            b"a\\b",
            b"a b",
            b"/etc/passwd",
            b"x:y",
            b"%2e%2e",
            b"\xff\xfe",
            &[b'a'; 129],
        ] {
            assert!(instance(&p, Some(id)).is_null(), "{id:?}");
        }
        assert!(instance(&p.clone().no_instance(), Some(b"abc")).is_null());
        let other = p.instance_header(header::HeaderName::from_static("x-correlation-id"));
        assert!(
            instance(&other, Some(b"abc")).is_null(),
            "another header is read"
        );
    }
}
