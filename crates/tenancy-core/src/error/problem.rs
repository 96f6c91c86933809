//! The default body of a rejection, `application/problem+json` (RFC 9457), as data.

use std::{borrow::Cow, time::Duration};

use super::TenancyError;

/// Where the default problem `type` URIs point: the table of codes on actix-tenancy's
/// `error` page on docs.rs, which has an anchor per code (`…#tenant_missing`).
pub const DEFAULT_TYPE_BASE: &str =
    "https://docs.rs/actix-tenancy/latest/actix_tenancy/error/index.html#";

/// The default body of a rejection: RFC 9457 `application/problem+json`, ending in a
/// newline. [`problem`](Self::problem) builds it, as data, for any web framework.
///
/// ```json
/// {"type":"https://docs.rs/actix-tenancy/latest/actix_tenancy/error/index.html#tenant_missing","title":"Tenant required","status":401,"code":"tenant_missing"}
/// ```
///
/// - `type` names the problem: by default the row of actix-tenancy's table of codes for
///   the code, so a client or an operator who follows it reads what the code means;
///   with [`type_base`](Self::type_base), your own base followed by the code. With
///   [`about_blank`](Self::about_blank), `about:blank` and, as RFC 9457 asks of that
///   type, the status's phrase as the `title` (`"Unauthorized"`).
/// - `title` is the code's fixed short text ([`ErrorCode::title`](super::ErrorCode::title)).
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
    /// The request header `instance` is taken from, in lowercase.
    instance: Option<String>,
}

impl Default for ProblemJson {
    fn default() -> Self {
        Self {
            type_base: Some(DEFAULT_TYPE_BASE.to_owned()),
            instance: Some("x-request-id".to_owned()),
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

    /// Takes `instance` from this request header instead of `X-Request-Id` (a header
    /// name, in any case: `HeaderName::from_static("x-correlation-id")` or
    /// `"X-Correlation-Id"`).
    #[must_use]
    pub fn instance_header(mut self, name: impl AsRef<str>) -> Self {
        self.instance = Some(name.as_ref().to_ascii_lowercase());
        self
    }

    /// The request header `instance` is taken from (lowercase), if any: what an adapter
    /// reads to pass [`problem`](Self::problem) its `request_id`.
    pub fn instance_header_name(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// Never sends `instance`.
    #[must_use]
    pub fn no_instance(mut self) -> Self {
        self.instance = None;
        self
    }

    /// `err` as data: the status, headers and body of the answer, for any web
    /// framework. `request_id` is the request's id as it came (the value of the
    /// [`instance_header`](Self::instance_header)); it becomes `instance` only when it
    /// is 1 to 128 URI-unreserved characters.
    ///
    /// ```
    /// use tenancy_core::error::{ProblemJson, TenancyError};
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
                code.phrase()
            }
        };
        let _ = write!(
            body,
            r#","title":"{title}","status":{},"code":"{}""#,
            status,
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
            status,
            retry_after: err.retry_after().map(retry_after_secs),
            challenge: err.challenge(),
            body,
        }
    }
}

/// A rejection as data, from [`ProblemJson::problem`]: the status, the headers and the
/// body of the answer, which an adapter for any web framework turns into its response
/// (in actix-tenancy, `HttpResponse::from(problem)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    pub(crate) challenge: Option<&'static str>,
    pub(crate) body: String,
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

/// 1 to 128 URI-unreserved characters: safe to echo as a JSON string and a relative
/// URI reference.
fn is_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whole seconds, rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}
