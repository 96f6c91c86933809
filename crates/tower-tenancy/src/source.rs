//! Where the layer looks for a tenant id.

use std::{borrow::Cow, fmt, sync::Arc};

use http::{header::HeaderName, request::Parts};
use tenancy_core::{
    caught,
    error::{ConfigError, TenancyError},
    resolve::{self, SourceResult, TENANT_HEADER},
    Principal, SourceKind, TenantIdRule,
};

type SyncFn = Arc<dyn Fn(&Parts) -> SourceResult + Send + Sync>;

/// One place the layer looks for a tenant id; the same sources, read the same way, as
/// actix-tenancy's `Source`.
///
/// | constructor | reads |
/// | --- | --- |
/// | [`Source::claim`] | the tenant of a verified [`Principal`] in the request extensions |
/// | [`Source::header`] | `X-Tenant-ID` ([`Source::header_named`] for another) |
/// | [`Source::subdomain`] | `acme.example.com` → `acme`, for the configured base domains |
/// | [`Source::path_prefix`] | `/t/acme/...` → `acme` |
/// | [`Source::custom`] | your function over the request's head |
/// | `Source::certificate` | the verified TLS client certificate (feature `tls`) |
///
/// Every source's answer is validated by the layer's [`TenantIdRule`]; a source whose
/// input is present but malformed rejects the request (`400 tenant_invalid`), whatever
/// the other sources say.
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
    #[cfg(feature = "tls")]
    Certificate(tenancy_core::resolve::CertificateRule),
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
    /// The tenant claim of a verified [`Principal`] that an authentication layer
    /// outside this one inserted into the request extensions. Ranks above every
    /// unverified source: a header naming another tenant is a `403 tenant_conflict`.
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
    /// `acme.example.com` → `acme`. The `Host` header (or, without one, the URI's
    /// authority, as HTTP/2 sends it) is read as
    /// [`resolve::host_tenant`](tenancy_core::resolve::host_tenant) says;
    /// `X-Forwarded-Host` and `Forwarded` never are.
    pub fn subdomain<I, S>(base_domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            kind: SourceKind::Host,
            imp: resolve::base_domains(base_domains).map(Imp::Host),
        }
    }

    /// The path segment after `prefix`: with `"/t/"`, `/t/acme/items` → `acme`.
    /// `prefix` must start and end with `/`. The path is read decoded as actix-web's
    /// router decodes it ([`resolve::routing_path`](tenancy_core::resolve::routing_path)),
    /// which is what axum's `Path` extractor hands the handler: `/t/ac%6De/` is
    /// `acme` for the layer and the handler alike.
    pub fn path_prefix(prefix: &str) -> Self {
        Self {
            kind: SourceKind::Path,
            imp: resolve::path_prefix(prefix).map(Imp::Path),
        }
    }

    /// A function over the request's head: `Ok(Some(id))`, `Ok(None)` when it finds
    /// nothing, `Err` to reject the request as malformed (`400`). The id it returns is
    /// validated like every other; a panic in it is a `500`.
    ///
    /// ```
    /// use tower_tenancy::{Source, SourceError};
    ///
    /// // The tenant from a query parameter `?tenant=acme`.
    /// let src = Source::custom(|head| {
    ///     let q = head.uri.query().unwrap_or_default();
    ///     match q.split('&').filter_map(|kv| kv.strip_prefix("tenant=")).collect::<Vec<_>>()[..] {
    ///         [] => Ok(None),
    ///         [one] => Ok(Some(one.to_owned())),
    ///         _ => Err(SourceError::new("several tenant parameters")),
    ///     }
    /// });
    /// ```
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&Parts) -> SourceResult + Send + Sync + 'static,
    {
        Self {
            kind: SourceKind::Custom,
            imp: Ok(Imp::Custom(Arc::new(f))),
        }
    }

    /// The tenant from the client's verified TLS certificate, read by `rule` (a SAN
    /// URI under a prefix, the subject common name, or your function; see
    /// [`CertificateRule`](crate::tls::CertificateRule)), as actix-tenancy's
    /// `Source::certificate` reads it. It ranks with [`Source::claim`]: a verified
    /// identity wins, and another source naming another tenant is a `403`.
    ///
    /// The certificate comes from [`attach_peer_certificate`](crate::tls::attach_peer_certificate),
    /// called for each request by the code that accepted the connection; a request it
    /// was not called for is a `500` (fail closed), one without a certificate yields no
    /// tenant.
    ///
    /// ```
    /// use tower_tenancy::{tls::CertificateRule, Source};
    ///
    /// let by_spiffe_id = Source::certificate(CertificateRule::san_uri_prefix("spiffe://example.org/tenant/"));
    /// let by_common_name = Source::certificate(CertificateRule::subject_cn());
    /// ```
    #[cfg(feature = "tls")]
    pub fn certificate(rule: tenancy_core::resolve::CertificateRule) -> Self {
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

impl Imp {
    /// What makes this source the one it is, for a source that may be configured
    /// only once; custom sources may repeat.
    pub(crate) fn key(&self, kind: SourceKind) -> Option<Cow<'static, str>> {
        match self {
            Imp::Claim | Imp::Host(_) | Imp::Path(_) => Some(Cow::Borrowed(kind.as_str())),
            Imp::Header(name) => Some(Cow::Owned(format!("header {name}"))),
            Imp::Custom(_) => None,
            // Each rule may read another part of the certificate.
            #[cfg(feature = "tls")]
            Imp::Certificate(_) => None,
        }
    }

    /// Reads this source from the request's head: the id (checked, borrowed where it
    /// can be), nothing, or a rejection. `path` is the routing path.
    pub(crate) fn extract<'a>(
        &self,
        kind: SourceKind,
        head: &'a Parts,
        path: &'a str,
        principal: Option<&'a Principal>,
        rule: &TenantIdRule,
    ) -> Result<Option<Cow<'a, str>>, TenancyError> {
        let values =
            |name: &HeaderName| head.headers.get_all(name).into_iter().map(|v| v.as_bytes());
        match self {
            Imp::Claim => resolve::claim_tenant(principal, kind, rule),
            Imp::Header(name) => resolve::header_tenant(values(name), name.as_str(), kind, rule),
            Imp::Host(bases) => {
                let authority = head.uri.authority().map(|a| resolve::Authority {
                    full: a.as_str(),
                    host: a.host(),
                });
                let hosts = values(&http::header::HOST);
                resolve::host_tenant(hosts, authority, bases, kind, rule)
            }
            Imp::Path(prefix) => resolve::path_tenant(path, prefix, kind, rule),
            Imp::Custom(f) => match caught("Source::custom", || f(head)) {
                Some(answer) => resolve::custom_tenant(kind, rule, answer),
                None => Err(TenancyError::Panicked("a custom tenant source panicked")),
            },
            #[cfg(feature = "tls")]
            Imp::Certificate(cert_rule) => {
                if head.extensions.get::<crate::tls::Attached>().is_none() {
                    return Err(TenancyError::Misconfigured(
                        "Source::certificate needs tls::attach_peer_certificate on every request",
                    ));
                }
                let cert = head
                    .extensions
                    .get::<tenancy_core::resolve::PeerCertificate>();
                resolve::certificate_tenant(cert, cert_rule, kind, rule)
            }
        }
    }
}
