//! Claims: where a token names its tenant ([`TenantFrom`]), values at a claim path,
//! list claims, and the claims a session sets itself.

use serde_json::{Map, Value};

use super::{error::invalid, SessionError};
use crate::error::ConfigError;

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
/// use tenancy_core::session::TenantFrom;
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
        let bad = || {
            ConfigError::invalid(
                "issuer pattern",
                pattern,
                "it must hold {tenant} exactly once",
            )
        };
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn path(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn tenant_at(from: &TenantFrom, claims: Value) -> Result<Option<String>, SessionError> {
        from.read(&object(claims)).map(|t| t.map(str::to_owned))
    }

    #[test]
    fn a_claim_path_goes_down_one_object_a_name() {
        let claims = object(json!({
            "a": {"b": {"c": 1}, "list": [{"c": 2}]},
            "a.b": "dotted",
            "top": "t",
        }));
        assert_eq!(at_path(&claims, &path(&["a", "b", "c"])), Some(&json!(1)));
        assert_eq!(at_path(&claims, &path(&["a", "b"])), Some(&json!({"c": 1})));
        assert_eq!(at_path(&claims, &path(&["top"])), Some(&json!("t")));
        assert_eq!(
            at_path(&claims, &path(&["a.b"])),
            Some(&json!("dotted")),
            "a name is taken literally, dots and all"
        );
        assert_eq!(at_path(&claims, &path(&["a", "x"])), None, "missing below");
        assert_eq!(at_path(&claims, &path(&["x", "b"])), None, "missing on top");
        assert_eq!(
            at_path(&claims, &path(&["top", "b"])),
            None,
            "a string has no names"
        );
        assert_eq!(
            at_path(&claims, &path(&["a", "list", "c"])),
            None,
            "nor an array"
        );
        assert_eq!(at_path(&claims, &[]), None, "an empty path names nothing");
    }

    #[test]
    fn a_nested_tenant_claim_is_read_where_the_path_says() {
        let from = TenantFrom::claim_path(["https://example.com/claims", "tenant"]);
        let nested = json!({"https://example.com/claims": {"tenant": "acme"}});
        assert_eq!(tenant_at(&from, nested).unwrap().as_deref(), Some("acme"));
        let top = json!({"tenant_id": "acme", "tenant": "acme"});
        assert_eq!(tenant_at(&from, top).unwrap(), None, "only the path counts");
        let above = json!({"https://example.com/claims": "acme"});
        assert_eq!(
            tenant_at(&from, above).unwrap(),
            None,
            "nothing below a string"
        );

        let dotted = TenantFrom::claim("https://example.com/tenant");
        let claims = json!({"https://example.com/tenant": "globex"});
        assert_eq!(
            tenant_at(&dotted, claims).unwrap().as_deref(),
            Some("globex")
        );
        assert_eq!(
            dotted,
            TenantFrom::claim_path(["https://example.com/tenant"])
        );
    }

    #[test]
    fn a_tenant_claim_that_is_not_a_string_is_refused() {
        let from = TenantFrom::claim_path(["org", "id"]);
        for value in [
            json!(7),
            json!(["acme"]),
            json!({"id": "acme"}),
            json!(true),
            json!(null),
        ] {
            let claims = json!({"org": {"id": value.clone()}});
            assert!(
                matches!(
                    tenant_at(&from, claims),
                    Err(SessionError::Invalid(why)) if why == "the tenant claim is not a string"
                ),
                "{value}"
            );
        }
    }

    #[test]
    fn an_issuer_pattern_takes_one_path_segment() {
        let from = TenantFrom::issuer_pattern("https://sso.test/realms/{tenant}/v2").unwrap();
        let at = |iss: Value| tenant_at(&from, json!({"iss": iss})).unwrap();
        assert_eq!(
            at(json!("https://sso.test/realms/acme/v2")).as_deref(),
            Some("acme")
        );
        for refused in [
            "https://sso.test/realms//v2",
            "https://sso.test/realms/a/b/v2",
            "https://sso.test/realms/a?b/v2",
            "https://sso.test/realms/a#b/v2",
            "https://sso.test/realms/acme/v3",
            "https://sso.test/realm/acme/v2",
            "http://sso.test/realms/acme/v2",
            "",
        ] {
            assert_eq!(at(json!(refused)), None, "{refused}");
        }
        assert_eq!(
            at(json!(7)),
            None,
            "an issuer that is not a string names none"
        );
        assert_eq!(
            tenant_at(&from, json!({})).unwrap(),
            None,
            "nor does no issuer"
        );

        let at_end = TenantFrom::issuer_pattern("https://sso.test/realms/{tenant}").unwrap();
        let iss = json!({"iss": "https://sso.test/realms/acme"});
        assert_eq!(tenant_at(&at_end, iss).unwrap().as_deref(), Some("acme"));
    }

    #[test]
    fn an_issuer_pattern_needs_one_tenant_after_a_prefix() {
        for bad in [
            "https://sso.test/realms/",
            "https://sso.test/{tenant}/{tenant}",
            "{tenant}.sso.test",
            "{tenant}",
            "",
        ] {
            assert!(
                matches!(
                    TenantFrom::issuer_pattern(bad),
                    Err(ConfigError::Invalid { setting: "issuer pattern", value, .. }) if value == bad
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_list_claim_is_an_array_of_strings_or_one_spaced_string() {
        let w = |v: Value| words(&v);
        assert_eq!(w(json!("a b  c ")), Some(path(&["a", "b", "c"])));
        assert_eq!(w(json!("")), Some(vec![]));
        assert_eq!(
            w(json!("a\tb")),
            Some(path(&["a\tb"])),
            "only spaces separate"
        );
        assert_eq!(w(json!(["a", 1, "b c", null])), Some(path(&["a", "b c"])));
        assert_eq!(w(json!([])), Some(vec![]));
        for neither in [json!(1), json!(true), json!(null), json!({"a": "b"})] {
            assert_eq!(w(neither.clone()), None, "{neither}");
        }
    }

    #[test]
    fn session_claims_are_the_registered_ones_and_the_tenants() {
        for name in [
            "iss",
            "aud",
            "sub",
            "iat",
            "nbf",
            "exp",
            "jti",
            "scope",
            "fam",
            "token_use",
            "org",
        ] {
            assert!(is_session_claim(name, "org"), "{name}");
        }
        for name in ["tenant_id", "scp", "roles", "name", ""] {
            assert!(!is_session_claim(name, "org"), "{name}");
        }
    }
}
