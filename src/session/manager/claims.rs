//! Claims: where a token names its tenant ([`TenantFrom`]), values at a claim path,
//! list claims, and the claims a session sets itself.

use serde_json::{Map, Value};

use super::{error::invalid, SessionError};
use crate::core::error::ConfigError;

/// The claim that tells access and refresh tokens apart.
pub(super) const TOKEN_USE: &str = "token_use";
/// The claim naming a token's refresh family.
pub(super) const FAMILY: &str = "fam";

/// Where a verified token names its tenant.
///
/// | provider | tenant | `TenantFrom` |
/// | --- | --- | --- |
/// | Auth0 (Organizations) | `org_id` | `TenantFrom::claim("org_id")` |
/// | Microsoft Entra ID | `tid` (the directory) | `TenantFrom::claim("tid")` |
/// | Keycloak, a realm per tenant | the realm in `iss` | `TenantFrom::issuer_pattern("https://sso.example.com/realms/{tenant}")` |
/// | a namespaced custom claim | `{"https://example.com/claims": {"tenant": ..}}` | `TenantFrom::claim_path(["https://example.com/claims", "tenant"])` |
///
/// The value then passes the configuration's [`TenantIdRule`](crate::TenantIdRule) like any other source.
///
/// ```
/// use actix_tenancy::session::TenantFrom;
///
/// let keycloak = TenantFrom::issuer_pattern("https://sso.example.com/realms/{tenant}").unwrap();
/// assert!(TenantFrom::issuer_pattern("https://sso.example.com/realms/").is_err());
/// # let _ = (keycloak, TenantFrom::claim("org_id"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantFrom(FromWhere);

#[derive(Debug, Clone, PartialEq, Eq)]
enum FromWhere {
    Claim(Vec<String>),
    Issuer { prefix: String, suffix: String },
}

/// The value at `path` in `claims`.
pub(super) fn at_path<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(claims.get(first)?, |v, name| v.as_object()?.get(name))
}

impl TenantFrom {
    /// A top-level claim, its name taken literally (it may hold dots or slashes, as
    /// namespaced claims such as `https://example.com/tenant` do).
    pub fn claim(name: impl Into<String>) -> Self {
        Self(FromWhere::Claim(vec![name.into()]))
    }

    /// A nested claim: each name one level down.
    pub fn claim_path<I, S>(path: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(FromWhere::Claim(path.into_iter().map(Into::into).collect()))
    }

    /// A part of `iss`: `pattern` holds `{tenant}` once, and the issuer must match the
    /// rest exactly; the tenant part holds no `/`, `?` or `#`.
    pub fn issuer_pattern(pattern: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::InvalidIssuerPattern(pattern.to_owned());
        let (prefix, suffix) = pattern.split_once("{tenant}").ok_or_else(bad)?;
        if suffix.contains("{tenant}") || prefix.is_empty() {
            return Err(bad());
        }
        Ok(Self(FromWhere::Issuer {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        }))
    }

    /// The tenant a (verified) token names, if it names one.
    pub(crate) fn read<'a>(
        &self,
        claims: &'a Map<String, Value>,
    ) -> Result<Option<&'a str>, SessionError> {
        match &self.0 {
            FromWhere::Claim(path) => match at_path(claims, path) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(invalid("the tenant claim is not a string")),
            },
            FromWhere::Issuer { prefix, suffix } => {
                let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
                Ok(iss
                    .strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                    .filter(|t| !t.is_empty() && !t.contains(['/', '?', '#'])))
            }
        }
    }
}

/// A list claim: an array (its strings), or one space-separated string.
pub(super) fn words(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(
            s.split(' ')
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// What a token must say: its issuer and audiences. The configuration's, or a
/// per-tenant provider's.
pub(crate) struct Expect<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) audiences: &'a [String],
}

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    Access,
    Refresh,
}

pub(super) fn is_session_claim(name: &str, tenant_claim: &str) -> bool {
    name == tenant_claim
        || matches!(
            name,
            "iss" | "aud" | "sub" | "iat" | "nbf" | "exp" | "jti" | "scope" | FAMILY | TOKEN_USE
        )
}
