use std::{borrow::Cow, fmt, sync::Arc};

use tenancy_core::resolve;

use actix_web::{
    dev::ServiceRequest,
    http::header::{self, HeaderName, HeaderValue},
};
use futures_util::future::LocalBoxFuture;

use crate::core::{
    error::{ConfigError, TenancyError},
    Principal, SourceKind, TenantIdRule,
};

pub use tenancy_core::resolve::{SourceError, SourceResult, TENANT_HEADER};

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
    Certificate(super::tls::CertificateRule),
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
            Ok(Imp::Certificate(rule)) => d.field("rule", rule),
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
        let imp = resolve::base_domains(base_domains).map(Imp::Host);
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
        Self {
            kind: SourceKind::Path,
            imp: resolve::path_prefix(prefix).map(Imp::Path),
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
            imp: rule.checked().map(Imp::Certificate),
        }
    }

    /// The kind of this source.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }
}

/// The values of a header, as bytes.
#[inline]
fn values<'a>(req: &'a ServiceRequest, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    req.headers().get_all(name).map(HeaderValue::as_bytes)
}

impl Imp {
    /// What makes this source the one it is, for a source that may be configured
    /// only once; custom sources and certificate rules (a SAN URI and the CN may check
    /// each other) may repeat.
    pub(crate) fn key(&self, kind: SourceKind) -> Option<Cow<'static, str>> {
        match self {
            Imp::Claim | Imp::Host(_) | Imp::Path(_) => Some(Cow::Borrowed(kind.as_str())),
            Imp::Header(name) => Some(Cow::Owned(format!("header {name}"))),
            Imp::Custom(_) | Imp::CustomAsync(_) => None,
            #[cfg(feature = "tls")]
            Imp::Certificate(_) => None,
        }
    }

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
            Imp::Claim => resolve::claim_tenant(principal, kind, rule),
            Imp::Header(name) => {
                resolve::header_tenant(values(req, name), name.as_str(), kind, rule)
            }
            Imp::Host(bases) => {
                let authority = req.uri().authority().map(|a| resolve::Authority {
                    full: a.as_str(),
                    host: a.host(),
                });
                resolve::host_tenant(values(req, &header::HOST), authority, bases, kind, rule)
            }
            Imp::Path(prefix) => {
                resolve::path_tenant(req.match_info().as_str(), prefix, kind, rule)
            }
            Imp::Custom(f) => match tenancy_core::caught("Source::custom", || f(req)) {
                Some(answer) => resolve::custom_tenant(kind, rule, answer),
                None => Err(TenancyError::Panicked("a custom tenant source panicked")),
            },
            Imp::CustomAsync(_) => Ok(None),
            #[cfg(feature = "tls")]
            Imp::Certificate(cert_rule) => {
                if req.conn_data::<super::tls::Captured>().is_none() {
                    return Err(TenancyError::Misconfigured(
                        "Source::certificate needs HttpServer::on_connect(capture_peer_certificate)",
                    ));
                }
                let cert = req.conn_data::<super::tls::PeerCertificate>();
                resolve::certificate_tenant(cert, cert_rule, kind, rule)
            }
        }
    }
}
