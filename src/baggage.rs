//! The tenant, downstream: W3C [Baggage](https://www.w3.org/TR/baggage/) on the
//! requests a service makes to others, and read back where the caller is trusted.
//!
//! Outgoing, with any client (awc, reqwest, hyper: a header name and a value):
//!
//! ```
//! use actix_tenancy::{baggage, Tenant};
//!
//! async fn call_billing(tenant: Tenant) -> Result<(), Box<dyn std::error::Error>> {
//!     let (name, value) = baggage::outgoing(&tenant, false);
//!     // awc:     awc::Client::default().get(url).insert_header((name, value))
//!     // reqwest: reqwest::Client::new().get(url).header(name, value)
//!     # let _ = (name, value);
//!     Ok(())
//! }
//! ```
//!
//! Incoming, `baggage` is **never** a tenant source by default: any client can send
//! the header, so reading it from the internet would let a caller pick its tenant.
//! [`trusted_source`] reads it only from callers the application vouches for (for
//! example a verified client certificate of an internal service, or a network policy
//! it can check), and the resolver then validates the id like any other source's.

use actix_web::{
    dev::ServiceRequest,
    http::header::{HeaderMap, HeaderName, HeaderValue},
};

use crate::{
    core::TenantContext,
    resolve::{Source, SourceError},
};

/// The baggage member naming the tenant.
pub const TENANT_KEY: &str = "tenant.id";
/// The baggage member naming the tenant's tier, when asked for.
pub const TIER_KEY: &str = "tenant.tier";

/// The longest `baggage` header read or written (W3C Baggage: 8192 bytes).
const MAX_LEN: usize = 8192;
/// The most list members read (W3C Baggage: 64 at least must be kept; 180 here).
const MAX_MEMBERS: usize = 180;

/// `value` percent-encoded as a baggage value: anything outside the baggage octets
/// (and `%` itself) as `%XX`.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        let plain =
            matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e) && b != b'%';
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `value` percent-decoded; `None` when an escape is malformed or not UTF-8.
fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `baggage` header naming `tenant` (and its tier when `with_tier`).
pub fn outgoing(tenant: &TenantContext, with_tier: bool) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("baggage"),
        value(tenant, with_tier, None),
    )
}

/// A `baggage` value naming `tenant` (and its tier when `with_tier`), merged into an
/// `existing` one: its other members are kept, and its `tenant.*` members replaced (a
/// service passes on what it was given, never a caller's claim about the tenant).
/// Members that would take it past 8192 bytes are dropped, the tenant's never.
pub fn value(
    tenant: &TenantContext,
    with_tier: bool,
    existing: Option<&HeaderValue>,
) -> HeaderValue {
    let mut members = vec![format!("{TENANT_KEY}={}", encode(tenant.id().as_str()))];
    if with_tier {
        members.push(format!("{TIER_KEY}={}", encode(tenant.tier())));
    }
    let mut len = members.iter().map(|m| m.len() + 1).sum::<usize>();
    if let Some(other) = existing.and_then(|v| v.to_str().ok()) {
        for member in other.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let key = member.split(['=', ';']).next().unwrap_or("").trim();
            if key.starts_with("tenant.") || len + member.len() + 1 > MAX_LEN {
                continue;
            }
            len += member.len() + 1;
            members.push(member.to_owned());
        }
    }
    // Every part is visible ASCII (encoded, or taken from a header value that was).
    HeaderValue::from_str(&members.join(",")).unwrap_or_else(|_| {
        HeaderValue::from_str(&members[0]).unwrap_or(HeaderValue::from_static(""))
    })
}

/// The tenant id the `baggage` headers name, not yet validated (the resolver's rule
/// does that); `Ok(None)` when they name none. Oversized baggage, a malformed value,
/// or two members naming different tenants is an error (`400 tenant_invalid` from a
/// resolver).
pub fn tenant_in(headers: &HeaderMap) -> Result<Option<String>, SourceError> {
    let mut found: Option<String> = None;
    let mut total = 0;
    let mut members = 0;
    for value in headers.get_all("baggage") {
        total += value.len();
        if total > MAX_LEN {
            return Err(SourceError::new("the baggage is over 8192 bytes"));
        }
        let text = value
            .to_str()
            .map_err(|_| SourceError::new("the baggage is not ASCII"))?;
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            members += 1;
            if members > MAX_MEMBERS {
                return Err(SourceError::new("the baggage has too many members"));
            }
            let pair = member.split(';').next().unwrap_or("");
            let Some((key, raw)) = pair.split_once('=') else {
                continue;
            };
            if key.trim() != TENANT_KEY {
                continue;
            }
            let id = decode(raw.trim())
                .ok_or_else(|| SourceError::new("a malformed tenant.id in the baggage"))?;
            match &found {
                Some(first) if *first != id => {
                    return Err(SourceError::new("the baggage names two tenants"))
                }
                _ => found = Some(id),
            }
        }
    }
    Ok(found)
}

/// A resolver source reading `tenant.id` from the `baggage` of callers `trusted`
/// vouches for; from any other caller it reads nothing (as if the header were not
/// there). It ranks as a custom source.
///
/// ```
/// use actix_tenancy::{baggage, prelude::*};
///
/// // Internal services reach this one through a port of its own.
/// let internal = baggage::trusted_source(|req| req.app_config().local_addr().port() == 9090);
/// let resolver = TenantResolver::builder(InMemoryRegistry::new())
///     .source(Source::header())
///     .source(internal)
///     .build();
/// # let _ = resolver;
/// ```
pub fn trusted_source(trusted: impl Fn(&ServiceRequest) -> bool + Send + Sync + 'static) -> Source {
    Source::custom(move |req| {
        if trusted(req) {
            tenant_in(req.headers())
        } else {
            Ok(None)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::{SourceKind, TenantId, TenantRecord};

    fn ctx(id: &str, tier: &str) -> TenantContext {
        let id = TenantId::parse(id).unwrap();
        TenantContext::new(
            id.clone(),
            SourceKind::Header,
            Arc::new(TenantRecord::new(id, tier)),
            None,
        )
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_static("baggage"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_tenant_goes_out_and_comes_back() {
        let (name, value) = outgoing(&ctx("acme", "pro"), true);
        assert_eq!(name, "baggage");
        assert_eq!(value, "tenant.id=acme,tenant.tier=pro");
        assert_eq!(
            tenant_in(&headers(&[value.to_str().unwrap()]))
                .unwrap()
                .as_deref(),
            Some("acme")
        );
    }

    #[test]
    fn a_callers_tenant_claim_is_replaced_and_other_members_kept() {
        let existing = HeaderValue::from_static("userId=alice, tenant.id=evil;p=1, region=eu");
        let v = value(&ctx("acme", "pro"), false, Some(&existing));
        assert_eq!(v, "tenant.id=acme,userId=alice,region=eu");
    }

    #[test]
    fn odd_ids_are_encoded_and_decoded() {
        let custom = crate::core::TenantIdRule::custom(|_| true);
        let id = custom.parse("a,b;c%d").unwrap();
        let c = TenantContext::new(
            id.clone(),
            SourceKind::Header,
            Arc::new(TenantRecord::new(id, "x")),
            None,
        );
        let (_, v) = outgoing(&c, false);
        assert_eq!(v, "tenant.id=a%2Cb%3Bc%25d");
        assert_eq!(
            tenant_in(&headers(&[v.to_str().unwrap()]))
                .unwrap()
                .as_deref(),
            Some("a,b;c%d")
        );
    }

    #[test]
    fn hostile_baggage_is_refused() {
        assert!(tenant_in(&headers(&["tenant.id=acme", "tenant.id=globex"])).is_err());
        assert!(tenant_in(&headers(&["tenant.id=ac%zzme"])).is_err());
        assert!(
            tenant_in(&headers(&["tenant.id=%ff"])).is_err(),
            "not UTF-8"
        );
        let huge = format!("k={}", "v".repeat(9000));
        assert!(tenant_in(&headers(&[&huge])).is_err());
        let many = (0..200)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(tenant_in(&headers(&[&many])).is_err());
        // The same tenant twice is fine; none is none.
        assert_eq!(
            tenant_in(&headers(&["tenant.id=acme", "tenant.id=acme"]))
                .unwrap()
                .as_deref(),
            Some("acme")
        );
        assert_eq!(tenant_in(&headers(&["userId=alice"])).unwrap(), None);
        assert_eq!(tenant_in(&HeaderMap::new()).unwrap(), None);
    }
}
