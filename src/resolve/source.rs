use std::{borrow::Cow, fmt, sync::Arc};

use actix_web::{
    dev::ServiceRequest,
    http::header::{self, HeaderName, HeaderValue},
};
use futures_util::future::LocalBoxFuture;

use crate::core::{
    error::{ConfigError, TenancyError},
    InvalidTenantId, Principal, SourceKind, TenantIdRule,
};

/// The header [`Source::header`] reads.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// A custom source refused the request's input. The reason is for logs; the client
/// gets `400 tenant_invalid`.
#[derive(Debug, Clone)]
pub struct SourceError(Cow<'static, str>);

impl SourceError {
    /// A refusal with a reason for the logs.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self(reason.into())
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

/// What a custom source returns: an id, nothing, or a refusal.
pub type SourceResult = Result<Option<String>, SourceError>;

type SyncFn = Arc<dyn Fn(&ServiceRequest) -> SourceResult + Send + Sync>;
pub(crate) type AsyncFn =
    Arc<dyn Fn(&ServiceRequest) -> LocalBoxFuture<'static, SourceResult> + Send + Sync>;

/// One place the resolver looks for a tenant id.
///
/// | constructor | reads |
/// | --- | --- |
/// | [`Source::claim`] | the tenant of a verified [`Principal`]: the JWT stage's, or one in the request extensions |
/// | [`Source::header`] | `X-Tenant-ID` ([`Source::header_named`] for another) |
/// | [`Source::subdomain`] | `acme.example.com` → `acme`, for the configured base domains |
/// | [`Source::path_prefix`] | `/t/acme/...` → `acme` |
/// | [`Source::custom`] | your function over the request |
/// | [`Source::custom_async`] | your async function over the request |
/// | `Source::certificate` | the verified TLS client certificate (feature `tls`) |
///
/// Every source's answer is validated by the resolver's [`TenantIdRule`]; a source
/// whose input is present but malformed rejects the request (`400 tenant_invalid`),
/// whatever the other sources say.
#[derive(Clone)]
pub struct Source {
    pub(crate) kind: SourceKind,
    pub(crate) imp: Result<Imp, ConfigError>,
}

#[derive(Clone)]
pub(crate) enum Imp {
    Claim,
    Header(HeaderName),
    Host(Vec<String>),
    Path(String),
    Custom(SyncFn),
    CustomAsync(AsyncFn),
    #[cfg(feature = "tls")]
    Certificate(super::tls::RuleImp),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Source");
        d.field("kind", &self.kind);
        match &self.imp {
            Ok(Imp::Header(h)) => d.field("header", h),
            Ok(Imp::Host(bases)) => d.field("base_domains", bases),
            Ok(Imp::Path(p)) => d.field("prefix", p),
            #[cfg(feature = "tls")]
            Ok(Imp::Certificate(rule)) => {
                d.field("rule", &super::tls::CertificateRule(Ok(rule.clone())))
            }
            Err(e) => d.field("error", e),
            Ok(_) => &mut d,
        };
        d.finish()
    }
}

impl Source {
    /// The tenant claim of a verified [`Principal`]: the one the JWT stage of the same
    /// [`Tenancy`](crate::Tenancy) hands over, or one an earlier middleware attached to
    /// the request. Ranks above every unverified source.
    pub fn claim() -> Self {
        Self {
            kind: SourceKind::Claim,
            imp: Ok(Imp::Claim),
        }
    }

    /// The `X-Tenant-ID` header. More than one such header is a `400`.
    pub fn header() -> Self {
        Self::header_named(TENANT_HEADER)
    }

    /// Another header.
    pub fn header_named(name: &str) -> Self {
        Self {
            kind: SourceKind::Header,
            imp: HeaderName::try_from(name).map(Imp::Header).map_err(|_| {
                ConfigError::invalid("header name", name, "not a valid HTTP header name")
            }),
        }
    }

    /// The leftmost label of the host under one of `base_domains`:
    /// `acme.example.com` → `acme`.
    ///
    /// The `Host` header (or, without one, the URI's authority) is lower-cased and its
    /// port and one trailing dot are dropped. A host that is a base domain itself, an IP
    /// address or outside the base domains yields no tenant. A host with more than one
    /// label above a base domain (`a.b.example.com`) or several `Host` headers is a `400`.
    /// `X-Forwarded-Host` and `Forwarded` are never read: they are client-controlled
    /// unless a proxy you trust rewrites them, and a custom source can read them then.
    pub fn subdomain<I, S>(base_domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut bases = Vec::new();
        for b in base_domains {
            let b = b.as_ref().trim_end_matches('.').to_ascii_lowercase();
            if !valid_domain(&b) {
                return Self {
                    kind: SourceKind::Host,
                    imp: Err(ConfigError::invalid(
                        "base domain",
                        b,
                        "not a plain DNS name",
                    )),
                };
            }
            bases.push(b);
        }
        let imp = if bases.is_empty() {
            Err(ConfigError::invalid(
                "base domain",
                "",
                "at least one is needed",
            ))
        } else {
            // Most specific first: `eu.example.com` before `example.com`.
            bases.sort_by_key(|b| std::cmp::Reverse(b.len()));
            Ok(Imp::Host(bases))
        };
        Self {
            kind: SourceKind::Host,
            imp,
        }
    }

    /// The path segment after `prefix`: with `"/t/"`, `/t/acme/items` → `acme`.
    /// `prefix` must start and end with `/`. The path is the one actix routes on
    /// (percent-decoded except for reserved characters), so the tenant and the route
    /// can never be read from two spellings of one path.
    pub fn path_prefix(prefix: &str) -> Self {
        let ok = prefix.len() >= 2 && prefix.starts_with('/') && prefix.ends_with('/');
        Self {
            kind: SourceKind::Path,
            imp: if ok {
                Ok(Imp::Path(prefix.to_owned()))
            } else {
                Err(ConfigError::invalid(
                    "path prefix",
                    prefix,
                    "it must start and end with '/'",
                ))
            },
        }
    }

    /// A function over the request: `Ok(Some(id))`, `Ok(None)` when it finds nothing,
    /// `Err` to reject the request as malformed (`400`). The id it returns is validated
    /// like every other; a panic in it is a `500`.
    ///
    /// ```
    /// use actix_tenancy::resolve::{Source, SourceError};
    ///
    /// // The tenant from a query parameter `?tenant=acme`.
    /// let src = Source::custom(|req| {
    ///     let q = req.query_string();
    ///     match q.split('&').filter_map(|kv| kv.strip_prefix("tenant=")).collect::<Vec<_>>()[..] {
    ///         [] => Ok(None),
    ///         [one] => Ok(Some(one.to_owned())),
    ///         _ => Err(SourceError::new("several tenant parameters")),
    ///     }
    /// });
    /// ```
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&ServiceRequest) -> SourceResult + Send + Sync + 'static,
    {
        Self {
            kind: SourceKind::Custom,
            imp: Ok(Imp::Custom(Arc::new(f))),
        }
    }

    /// An async function over the request, for a source that must wait (a lookup
    /// of an API key, say). The function gets the request and returns a `'static`
    /// future: copy what the future needs out of the request first. It runs after the
    /// synchronous sources, only on requests that reach it, so a resolver without async
    /// sources pays nothing for the feature. It may take at most the resolver's
    /// `registry_timeout` (then `503 tenant_unavailable`); a panic in it is a `500`.
    ///
    /// ```
    /// use actix_tenancy::resolve::Source;
    ///
    /// let src = Source::custom_async(|req| {
    ///     let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    ///     Box::pin(async move {
    ///         // e.g. look the key up in a database
    ///         Ok(key.and_then(|k| k.strip_prefix("key-").map(str::to_owned)))
    ///     })
    /// });
    /// ```
    pub fn custom_async<F>(f: F) -> Self
    where
        F: Fn(&ServiceRequest) -> LocalBoxFuture<'static, SourceResult> + Send + Sync + 'static,
    {
        Self {
            kind: SourceKind::Custom,
            imp: Ok(Imp::CustomAsync(Arc::new(f))),
        }
    }

    /// The tenant from the client's verified TLS certificate, read by `rule`
    /// (feature `tls`; see the [`tls`](crate::tls) module for the server set-up). Ranks
    /// like [`Source::claim`]: it wins over every unverified source, and a claim naming
    /// another tenant is a `403 tenant_conflict`.
    ///
    /// A connection without a client certificate yields no tenant. A certificate the
    /// rule cannot read, or that names several tenants, is a `400 tenant_invalid`. A
    /// server without the [`capture_peer_certificate`](super::tls::capture_peer_certificate)
    /// hook fails closed: `500`, with the missing hook named in the audit log.
    ///
    /// ```
    /// use actix_tenancy::{tls::CertificateRule, Source};
    ///
    /// let by_spiffe_id = Source::certificate(CertificateRule::san_uri_prefix("spiffe://example.org/tenant/"));
    /// let by_common_name = Source::certificate(CertificateRule::subject_cn());
    /// ```
    #[cfg(feature = "tls")]
    pub fn certificate(rule: super::tls::CertificateRule) -> Self {
        Self {
            kind: SourceKind::Certificate,
            imp: rule.0.map(Imp::Certificate),
        }
    }

    /// The kind of this source.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }
}

/// A DNS name: labels of letters, digits and `-`; the last label is not all digits
/// (no top-level domain is, and this keeps IPv4 addresses from ever matching).
fn valid_domain(d: &str) -> bool {
    let numeric_tld = d
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    !numeric_tld
        && !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn invalid(kind: SourceKind, reason: impl Into<Cow<'static, str>>) -> TenancyError {
    TenancyError::TenantInvalid {
        source: kind,
        reason: reason.into(),
    }
}

/// Checks `raw` against the rule without allocating.
#[inline]
pub(crate) fn check<'a>(
    kind: SourceKind,
    rule: &TenantIdRule,
    raw: Cow<'a, str>,
) -> Result<Cow<'a, str>, TenancyError> {
    rule.check(&raw)
        .map_err(|e: InvalidTenantId| invalid(kind, e.to_string()))?;
    Ok(raw)
}

/// The one value of a header that must not repeat.
fn single_header<'a>(
    req: &'a ServiceRequest,
    name: &HeaderName,
    kind: SourceKind,
) -> Result<Option<&'a HeaderValue>, TenancyError> {
    let mut values = req.headers().get_all(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(invalid(kind, format!("more than one {name} header")));
    }
    Ok(first)
}

impl Imp {
    /// Runs a synchronous source. Async sources answer `Ok(None)` here; the resolver
    /// runs them separately.
    /// The id is validated, and borrowed from the request where it can be.
    /// `principal` is the request's verified principal, which the claim source reads.
    pub(crate) fn extract<'a>(
        &self,
        kind: SourceKind,
        req: &'a ServiceRequest,
        principal: Option<&'a Principal>,
        rule: &TenantIdRule,
    ) -> Result<Option<Cow<'a, str>>, TenancyError> {
        match self {
            Imp::Claim => {
                let Some(tenant) = principal.and_then(Principal::tenant) else {
                    return Ok(None);
                };
                check(kind, rule, Cow::Borrowed(tenant.as_str())).map(Some)
            }
            Imp::Header(name) => {
                let Some(value) = single_header(req, name, kind)? else {
                    return Ok(None);
                };
                let raw = value
                    .to_str()
                    .map_err(|_| invalid(kind, "header value is not visible ASCII"))?;
                check(kind, rule, Cow::Borrowed(raw)).map(Some)
            }
            Imp::Host(bases) => host_tenant(req, bases, kind, rule),
            Imp::Path(prefix) => {
                let path = req.match_info().as_str();
                let Some(rest) = path.strip_prefix(prefix.as_str()) else {
                    return Ok(None);
                };
                let segment = rest.split('/').next().unwrap_or_default();
                check(kind, rule, Cow::Borrowed(segment)).map(Some)
            }
            Imp::Custom(f) => match tenancy_core::caught("Source::custom", || f(req)) {
                Some(Ok(Some(raw))) => check(kind, rule, Cow::Owned(raw)).map(Some),
                Some(Ok(None)) => Ok(None),
                Some(Err(e)) => Err(invalid(kind, e.0)),
                None => Err(TenancyError::Panicked("a custom tenant source panicked")),
            },
            Imp::CustomAsync(_) => Ok(None),
            #[cfg(feature = "tls")]
            Imp::Certificate(cert_rule) => {
                let Some(cert) = req.conn_data::<super::tls::PeerCertificate>() else {
                    if req.conn_data::<super::tls::Captured>().is_none() {
                        return Err(TenancyError::Misconfigured(
                            "Source::certificate needs HttpServer::on_connect(capture_peer_certificate)",
                        ));
                    }
                    return Ok(None);
                };
                match cert_rule.tenant(cert) {
                    Ok(Some(raw)) => check(kind, rule, raw).map(Some),
                    Ok(None) => Ok(None),
                    Err(reason) => Err(invalid(kind, reason)),
                }
            }
        }
    }
}

fn host_tenant<'a>(
    req: &'a ServiceRequest,
    bases: &[String],
    kind: SourceKind,
    rule: &TenantIdRule,
) -> Result<Option<Cow<'a, str>>, TenancyError> {
    let host = match single_header(req, &header::HOST, kind)? {
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| invalid(kind, "host is not visible ASCII"))?;
            // An absolute-form target (`GET http://acme.example.com/ HTTP/1.1`) names a
            // host too; a proxy may route by one and the app read the other, so two
            // that disagree are refused, never settled by picking one.
            if let Some(a) = req.uri().authority() {
                if !a.as_str().eq_ignore_ascii_case(v) {
                    return Err(invalid(kind, "the target's authority and Host disagree"));
                }
            }
            v
        }
        None => match req.uri().authority() {
            Some(a) => a.host(),
            None => return Ok(None),
        },
    };
    if host.starts_with('[') {
        return Ok(None); // an IPv6 literal
    }
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return Err(invalid(kind, "malformed host")),
        None => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(None); // an IPv4 address names no tenant
    }
    for base in bases {
        let n = host.len();
        let b = base.len();
        if n == b && host.eq_ignore_ascii_case(base) {
            return Ok(None); // the apex: no tenant
        }
        if n > b + 1
            && host.as_bytes()[n - b - 1] == b'.'
            && host[n - b..].eq_ignore_ascii_case(base)
        {
            let label = &host[..n - b - 1];
            if label.contains('.') {
                return Err(invalid(kind, "more than one label above the base domain"));
            }
            let label = if label.bytes().any(|c| c.is_ascii_uppercase()) {
                Cow::Owned(label.to_ascii_lowercase())
            } else {
                Cow::Borrowed(label)
            };
            return check(kind, rule, label).map(Some);
        }
    }
    Ok(None)
}
