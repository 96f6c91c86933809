//! The decisions of tenant resolution that every adapter shares: reading each built-in
//! source from the parts of a request, folding the sources into the one tenant they
//! name (or their first conflict), and judging the registry's answer.
//!
//! An adapter reads its framework's request (headers by name, the host, the path its
//! router routes on, the verified principal) and hands the parts to these functions;
//! everything that decides (what counts as malformed, which source wins, when two
//! disagree, what an unknown or suspended tenant is answered) is here, once, so
//! actix-tenancy and tower-tenancy answer every request the same.
//!
//! | function | decides |
//! | --- | --- |
//! | [`header_tenant`] | the one value of a tenant header (several are a `400`) |
//! | [`host_tenant`] | the label above a base domain in `Host` (or the target's authority) |
//! | [`path_tenant`] | the segment after a path prefix |
//! | [`claim_tenant`] | the tenant of a verified principal |
//! | `certificate_tenant` (feature `x509`) | the tenant a `CertificateRule` reads from a verified client certificate |
//! | [`Naming`] | the sources' answers folded: verified first, then order; a disagreement is a `403` |
//! | [`Admission`] | the record judged by status, region and method |
//! | [`recognise`] | the registry's answer for the named tenant (unknown is a `403`, like suspended) |
//! | [`routing_path`] | a raw path decoded as actix's router decodes it, for routers that do not |
//! | [`Settings`] | a resolver's settings beside its sources, their defaults and their checks |

use std::{borrow::Cow, fmt, sync::Arc, time::Duration};

use crate::{
    error::{ConfigError, TenancyError},
    registry::{Lookup, RegistryError},
    Access, InvalidTenantId, Principal, SourceKind, StatusRules, TenantIdRule, TenantRecord,
};

#[cfg(feature = "x509")]
mod cert;
#[cfg(test)]
mod tests;

#[cfg(feature = "x509")]
pub use cert::{certificate_tenant, CertificateRule, PeerCertificate};

/// The header the header source reads by default.
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

/// `400 tenant_invalid` from `kind`, with a reason for the logs.
pub fn invalid(kind: SourceKind, reason: impl Into<Cow<'static, str>>) -> TenancyError {
    TenancyError::TenantInvalid {
        source: kind,
        reason: reason.into(),
    }
}

/// Checks `raw` against the rule without allocating: the id, or `400 tenant_invalid`.
#[inline]
pub fn check<'a>(
    kind: SourceKind,
    rule: &TenantIdRule,
    raw: Cow<'a, str>,
) -> Result<Cow<'a, str>, TenancyError> {
    rule.check(&raw)
        .map_err(|e: InvalidTenantId| invalid(kind, e.to_string()))?;
    Ok(raw)
}

/// A custom source's answer, checked: the id, nothing, or `400 tenant_invalid`.
pub fn custom_tenant(
    kind: SourceKind,
    rule: &TenantIdRule,
    answer: SourceResult,
) -> Result<Option<Cow<'static, str>>, TenancyError> {
    match answer {
        Ok(Some(raw)) => check(kind, rule, Cow::Owned(raw)).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(invalid(kind, e.0)),
    }
}

/// A header value as text, when every byte is visible ASCII (or a tab), as the `http`
/// crates' `HeaderValue::to_str` accepts.
#[inline]
fn visible_ascii(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// The one value of a header that must not repeat.
#[inline]
fn single<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
    name: &str,
    kind: SourceKind,
) -> Result<Option<&'a [u8]>, TenancyError> {
    let first = values.next();
    if values.next().is_some() {
        return Err(invalid(kind, format!("more than one {name} header")));
    }
    Ok(first)
}

/// The tenant in the header `name`, given all of its `values` in the request: none,
/// the one value checked by `rule`, or `400 tenant_invalid` for several values or one
/// that is not visible ASCII.
#[inline]
pub fn header_tenant<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    name: &str,
    kind: SourceKind,
    rule: &TenantIdRule,
) -> Result<Option<Cow<'a, str>>, TenancyError> {
    let Some(value) = single(values, name, kind)? else {
        return Ok(None);
    };
    let raw =
        visible_ascii(value).ok_or_else(|| invalid(kind, "header value is not visible ASCII"))?;
    check(kind, rule, Cow::Borrowed(raw)).map(Some)
}

/// The tenant of a verified principal, checked by `rule`.
#[inline]
pub fn claim_tenant<'a>(
    principal: Option<&'a Principal>,
    kind: SourceKind,
    rule: &TenantIdRule,
) -> Result<Option<Cow<'a, str>>, TenancyError> {
    let Some(tenant) = principal.and_then(Principal::tenant) else {
        return Ok(None);
    };
    check(kind, rule, Cow::Borrowed(tenant.as_str())).map(Some)
}

/// The tenant in the path segment after `prefix` (`/t/` in `/t/acme/items`), read from
/// the path the router routes on.
#[inline]
pub fn path_tenant<'a>(
    path: &'a str,
    prefix: &str,
    kind: SourceKind,
    rule: &TenantIdRule,
) -> Result<Option<Cow<'a, str>>, TenancyError> {
    let Some(rest) = path.strip_prefix(prefix) else {
        return Ok(None);
    };
    let segment = rest.split('/').next().unwrap_or_default();
    check(kind, rule, Cow::Borrowed(segment)).map(Some)
}

/// A path prefix for [`path_tenant`], checked: it starts and ends with `/`.
pub fn path_prefix(prefix: &str) -> Result<String, ConfigError> {
    if prefix.len() >= 2 && prefix.starts_with('/') && prefix.ends_with('/') {
        Ok(prefix.to_owned())
    } else {
        Err(ConfigError::invalid(
            "path prefix",
            prefix,
            "it must start and end with '/'",
        ))
    }
}

/// The base domains for [`host_tenant`], checked and lower-cased, most specific first.
pub fn base_domains<I, S>(base_domains: I) -> Result<Vec<String>, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut bases = Vec::new();
    for b in base_domains {
        let b = b.as_ref().trim_end_matches('.').to_ascii_lowercase();
        if !valid_domain(&b) {
            return Err(ConfigError::invalid(
                "base domain",
                b,
                "not a plain DNS name",
            ));
        }
        bases.push(b);
    }
    if bases.is_empty() {
        return Err(ConfigError::invalid(
            "base domain",
            "",
            "at least one is needed",
        ));
    }
    // Most specific first: `eu.example.com` before `example.com`.
    bases.sort_by_key(|b| std::cmp::Reverse(b.len()));
    Ok(bases)
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

/// The target's authority, for [`host_tenant`]: as written (`Acme.example.com:8080`)
/// and its host alone (`Acme.example.com`).
#[derive(Debug, Clone, Copy)]
pub struct Authority<'a> {
    /// The authority as the request wrote it.
    pub full: &'a str,
    /// Its host, without user information or port.
    pub host: &'a str,
}

/// The tenant in the host: the leftmost label under one of `bases` (from
/// [`base_domains`]), lower-cased.
///
/// `hosts` are the request's `Host` header values; `authority` is the target's, when
/// the request line has one (absolute form, or HTTP/2's `:authority`). The host is
/// lower-cased and its port and one trailing dot are dropped. A host that is a base
/// domain itself, an IP address or outside the base domains yields no tenant. A host
/// with more than one label above a base domain, several `Host` headers, or a `Host`
/// that disagrees with the authority is a `400`.
pub fn host_tenant<'a>(
    hosts: impl Iterator<Item = &'a [u8]>,
    authority: Option<Authority<'a>>,
    bases: &[String],
    kind: SourceKind,
    rule: &TenantIdRule,
) -> Result<Option<Cow<'a, str>>, TenancyError> {
    let host = match single(hosts, "host", kind)? {
        Some(v) => {
            let v = visible_ascii(v).ok_or_else(|| invalid(kind, "host is not visible ASCII"))?;
            // An absolute-form target (`GET http://acme.example.com/ HTTP/1.1`) names a
            // host too; a proxy may route by one and the app read the other, so two
            // that disagree are refused, never settled by picking one.
            if let Some(a) = authority {
                if !a.full.eq_ignore_ascii_case(v) {
                    return Err(invalid(kind, "the target's authority and Host disagree"));
                }
            }
            v
        }
        None => match authority {
            Some(a) => a.host,
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
            && host.is_char_boundary(n - b)
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

/// A raw request path percent-decoded as actix-web's router decodes it before routing:
/// every escape but `%25`, `%2F` and `%2B` (which stay as written), and bytes that are
/// not UTF-8 replaced. Borrowed when there is nothing to decode.
///
/// An adapter whose router matches the raw path (axum does) reads path sources from
/// this spelling, so `/t/ac%6De/` names `acme` on every adapter, as the handler's
/// decoded path parameter does; and `%2F` never splits a segment.
pub fn routing_path(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let ch = h << 4 | l;
                if !matches!(ch, b'%' | b'/' | b'+') {
                    out.push(ch);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The tenant the sources named so far: its id (checked, borrowed from the request
/// where it could be), the source, and the source's rank (its place in the
/// configuration).
#[derive(Debug, Clone)]
pub struct Named<'a> {
    /// The id, checked by the rule.
    pub id: Cow<'a, str>,
    /// The source that named it.
    pub kind: SourceKind,
    /// The source's place in the configuration, from 0.
    pub rank: usize,
}

/// The sources' answers, folded into the one tenant they name: a verified source
/// (claim, certificate) wins over every unverified one, then the earlier source; two
/// sources naming different tenants are a `403 tenant_conflict`, reported once every
/// source has been read (a malformed input anywhere is a `400` first).
#[derive(Debug, Default)]
pub struct Naming<'a> {
    named: Option<Named<'a>>,
    conflict: Option<TenancyError>,
}

impl<'a> Naming<'a> {
    /// Nothing named yet.
    pub const fn new() -> Self {
        Self {
            named: None,
            conflict: None,
        }
    }

    /// Folds one more source's answer in: agree, or remember the first conflict; and
    /// keep the best-ranked source.
    #[inline]
    pub fn add(&mut self, next: Named<'a>) {
        let Some(cur) = &self.named else {
            self.named = Some(next);
            return;
        };
        let next_wins = (next.kind.is_verified() && !cur.kind.is_verified())
            || (next.kind.is_verified() == cur.kind.is_verified() && next.rank < cur.rank);
        if cur.id != next.id {
            if self.conflict.is_none() {
                let (first, second) = if next_wins {
                    (next.kind, cur.kind)
                } else {
                    (cur.kind, next.kind)
                };
                self.conflict = Some(TenancyError::TenantConflict { first, second });
            }
        } else if next_wins {
            self.named = Some(next);
        }
    }

    /// The one tenant named (or none), or the first conflict.
    #[inline]
    pub fn finish(self) -> Result<Option<Named<'a>>, TenancyError> {
        match self.conflict {
            Some(err) => Err(err),
            None => Ok(self.named),
        }
    }
}

/// Methods that do not change state; read-only tenants may use them.
#[inline]
pub fn is_safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

/// How a tenant's record is judged once the registry knows it: by its status (through
/// the [`StatusRules`]) and by its region against the one this process serves.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// The access each status grants.
    pub status_rules: StatusRules,
    /// The region this process serves; a tenant of another region is a `421`.
    pub region: Option<String>,
}

impl Admission {
    /// Admits `record` for a request whose method is safe (`GET`, `HEAD`, `OPTIONS`,
    /// `TRACE`) or not, or says why not.
    #[inline]
    pub fn admit(&self, record: &TenantRecord, safe_method: bool) -> Result<(), TenancyError> {
        match self.status_rules.access(record.status()) {
            Access::Allow => {}
            Access::ReadOnly if safe_method => {}
            Access::ReadOnly => return Err(TenancyError::TenantReadOnly),
            Access::Unavailable { retry_after } => {
                return Err(TenancyError::TenantUnavailable {
                    retry_after: Some(retry_after),
                    reason: record.status().reason().into(),
                })
            }
            // Forbidden, and any access a later core adds: refused (fail closed).
            _ => {
                return Err(TenancyError::TenantForbidden {
                    reason: record.status().reason().into(),
                })
            }
        }
        match (&self.region, record.region()) {
            (Some(here), Some(there)) if here != there => Err(TenancyError::TenantMisdirected),
            _ => Ok(()),
        }
    }
}

/// The registry could not answer: `503 tenant_unavailable`.
pub fn unavailable(err: RegistryError) -> TenancyError {
    TenancyError::TenantUnavailable {
        retry_after: None,
        reason: err.to_string().into(),
    }
}

/// The registry panicked: `503 tenant_unavailable`, never a crashed worker.
pub fn registry_panicked() -> TenancyError {
    TenancyError::TenantUnavailable {
        retry_after: None,
        reason: "the tenant registry panicked".into(),
    }
}

/// The registry did not answer within the timeout: `503 tenant_unavailable`.
pub fn registry_timed_out() -> TenancyError {
    TenancyError::TenantUnavailable {
        retry_after: None,
        reason: "tenant registry lookup timed out".into(),
    }
}

/// The registry's answer for the tenant named `id`: its record, or the refusal. An
/// unknown tenant is `403 tenant_forbidden`, the answer a suspended one gets, so a
/// client cannot tell them apart; a record for another id is an unavailable registry.
#[inline]
pub fn recognise(
    id: &str,
    answer: Result<Lookup, TenancyError>,
) -> Result<Arc<TenantRecord>, TenancyError> {
    match answer {
        Ok(Some(record)) if record.id().as_str() == id => Ok(record),
        Ok(Some(_)) => Err(TenancyError::TenantUnavailable {
            retry_after: None,
            reason: "the registry answered with another tenant's record".into(),
        }),
        Ok(None) => Err(TenancyError::TenantForbidden {
            reason: "unknown tenant".into(),
        }),
        Err(err) => Err(err),
    }
}

/// The paths that need no tenant: exact paths and prefixes, matched against the
/// routing path.
#[derive(Debug, Clone, Default)]
pub struct Exempt {
    /// Paths matched exactly (`/health`).
    pub paths: Vec<String>,
    /// Prefixes (`/public/`).
    pub prefixes: Vec<String>,
}

impl Exempt {
    /// Whether `path` needs no tenant.
    #[inline]
    pub fn matches(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
            || self.prefixes.iter().any(|p| path.starts_with(p.as_str()))
    }

    /// Whether no path is exempt.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.prefixes.is_empty()
    }
}

/// A resolver's settings beside its sources, as every adapter's builder keeps them.
/// The defaults are the safe ones: no tenant is a `401`, ids follow the default rule,
/// the default [`StatusRules`] (suspended tenants look unknown), no region, a registry
/// answers within 2 s or the request is a `503`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The rule ids are validated with.
    pub rule: TenantIdRule,
    /// Whether requests naming no tenant go on without one.
    pub allow_missing: bool,
    /// The paths that need no tenant.
    pub exempt: Exempt,
    /// How a known tenant's record is judged.
    pub admission: Admission,
    /// How long the registry (and an async source) may take.
    pub registry_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            rule: TenantIdRule::Default,
            allow_missing: false,
            exempt: Exempt::default(),
            admission: Admission::default(),
            registry_timeout: Duration::from_secs(2),
        }
    }
}

impl Settings {
    /// Checks the settings and the sources, given as each source's kind and, for a
    /// source that may be configured only once, what makes it that one (`header
    /// x-tenant-id`, `host`): at least one source, none twice, exempt paths that start
    /// with `/`.
    pub fn check<'a>(
        &self,
        sources: impl IntoIterator<Item = (SourceKind, Option<Cow<'a, str>>)>,
    ) -> Result<(), ConfigError> {
        let mut seen: Vec<Cow<'a, str>> = Vec::new();
        let mut any = false;
        for (kind, key) in sources {
            any = true;
            let Some(key) = key else { continue };
            if seen.contains(&key) {
                return Err(ConfigError::Duplicate {
                    what: "source",
                    value: kind.as_str().to_owned(),
                });
            }
            seen.push(key);
        }
        if !any {
            return Err(ConfigError::Missing("a tenant source"));
        }
        for p in self.exempt.paths.iter().chain(&self.exempt.prefixes) {
            if !p.starts_with('/') {
                return Err(ConfigError::invalid(
                    "exempt path",
                    p.clone(),
                    "it must start with '/'",
                ));
            }
        }
        Ok(())
    }
}
