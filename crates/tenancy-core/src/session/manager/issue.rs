//! Issuing: a new session's pair ([`TokenPair`], granted a [`Grant`]), the pair of a
//! rotation, signing, and the random ids of `jti`s and families.

use jsonwebtoken::Header;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    claims::{is_session_claim, Use, FAMILY, TOKEN_USE},
    refresh::Rotation,
    SessionError, SessionManager,
};
use crate::{session::keys::KeyError, TenantId};

/// An access and a refresh token, shaped as an OAuth 2.0 token response.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TokenPair {
    /// The access token, for `Authorization: Bearer`.
    pub access_token: String,
    /// The refresh token, for [`SessionManager::refresh`] only.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// What a new session is granted.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Grant {
    scopes: Vec<String>,
    extra: Map<String, Value>,
}

impl Grant {
    /// Nothing beyond the tenant and subject.
    pub fn new() -> Self {
        Self::default()
    }

    /// The scopes (the `scope` claim, space-separated).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// An extra claim. Registered and session claims (`iss`, `sub`, `exp`, the tenant
    /// claim, ...) cannot be overridden: they are set last.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }
}

pub(super) fn random_id() -> Result<String, SessionError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| SessionError::Key(KeyError::new(format!("no randomness: {e}"))))?;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    Ok(bytes
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect())
}

impl SessionManager {
    /// Issues a new session: an access and a refresh token of a new family.
    pub fn issue(
        &self,
        tenant: &TenantId,
        subject: &str,
        grant: Grant,
    ) -> Result<TokenPair, SessionError> {
        let family = random_id()?;
        let rotation = Rotation::new(self.now())?;
        self.pair(
            tenant,
            subject,
            &grant.scopes,
            grant.extra,
            &family,
            &rotation,
        )
    }

    /// The pair of `rotation` (its time and `jti`s) for `subject` in `tenant`, of
    /// `family`, granted `scopes` and the `extra` claims.
    pub(super) fn pair(
        &self,
        tenant: &TenantId,
        subject: &str,
        scopes: &[String],
        mut claims: Map<String, Value>,
        family: &str,
        rotation: &Rotation,
    ) -> Result<TokenPair, SessionError> {
        let c = &self.inner.config;
        // No extra claim may stand for a session claim: not even `scope` when no scope
        // was granted (a refresh would read it back as the session's scopes).
        claims.retain(|name, _| !is_session_claim(name, &c.tenant_claim));
        if !scopes.is_empty() {
            claims.insert("scope".into(), scopes.join(" ").into());
        }
        for (name, value) in [
            ("iss", Value::from(c.issuer.as_str())),
            ("aud", c.audiences[0].as_str().into()),
            ("sub", subject.into()),
            (c.tenant_claim.as_str(), tenant.as_str().into()),
            (FAMILY, family.into()),
        ] {
            claims.insert(name.to_owned(), value);
        }
        let access = self.sign(claims.clone(), rotation.at, &rotation.access, Use::Access)?;
        let refresh = self.sign(claims, rotation.at, &rotation.refresh, Use::Refresh)?;
        let expires_at = rotation.at.saturating_add(c.access_ttl.as_secs());
        Ok(TokenPair {
            access_token: access,
            refresh_token: refresh,
            token_type: "Bearer",
            expires_in: expires_at.saturating_sub(self.now()),
        })
    }

    /// Signs `claims` as a token of `usage` issued at `at`, with `jti`. The times, the
    /// `jti` and `token_use` are set last: no extra claim overrides them.
    fn sign(
        &self,
        mut claims: Map<String, Value>,
        at: u64,
        jti: &str,
        usage: Use,
    ) -> Result<String, SessionError> {
        let c = &self.inner.config;
        let keys = self.inner.keys.load();
        let key = keys
            .signer()
            .ok_or_else(|| SessionError::Key(KeyError::new("the key set has no signing key")))?;
        let encoding = key
            .encoding()
            .ok_or_else(|| SessionError::Key(KeyError::new("the signing key cannot sign")))?;
        let ttl = match usage {
            Use::Access => c.access_ttl,
            Use::Refresh => c.refresh_ttl,
        };
        for (name, value) in [
            ("iat", Value::from(at)),
            ("nbf", at.into()),
            ("exp", at.saturating_add(ttl.as_secs()).into()),
            ("jti", jti.into()),
            (
                TOKEN_USE,
                match usage {
                    Use::Access => "access",
                    Use::Refresh => "refresh",
                }
                .into(),
            ),
        ] {
            claims.insert(name.to_owned(), value);
        }
        let mut header = Header::new(key.algorithm());
        header.kid = Some(key.kid().to_owned());
        jsonwebtoken::encode(&header, &claims, encoding)
            .map_err(|e| SessionError::Key(KeyError::new(format!("signing failed: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{
        super::testkit::{acme, claims_of, config, reason, sessions, AUD, ISS, T0},
        *,
    };
    use crate::session::KeySet;

    const ACCESS: u64 = 15 * 60;
    const REFRESH: u64 = 30 * 24 * 3600;

    fn hex_id(v: &Value) -> bool {
        v.as_str().is_some_and(|s| {
            s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    }

    #[test]
    fn random_ids_are_128_bits_in_lowercase_hex() {
        let (a, b) = (random_id().unwrap(), random_id().unwrap());
        assert!(hex_id(&json!(a)) && hex_id(&json!(b)), "{a} {b}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_new_pair_carries_the_session_claims() {
        let (s, _) = sessions(config().audiences([AUD, "second"]));
        let pair = s.issue(&acme(), "u1", Grant::new()).unwrap();
        assert_eq!((pair.token_type, pair.expires_in), ("Bearer", ACCESS));
        let header = jsonwebtoken::decode_header(&pair.access_token).unwrap();
        assert_eq!(
            (header.alg, header.kid.as_deref()),
            (jsonwebtoken::Algorithm::HS256, Some("k1"))
        );
        let (access, refresh) = (
            claims_of(&pair.access_token),
            claims_of(&pair.refresh_token),
        );
        for (claims, usage, ttl) in [(&access, "access", ACCESS), (&refresh, "refresh", REFRESH)] {
            assert_eq!(claims["iss"], ISS);
            assert_eq!(claims["aud"], AUD, "the first audience");
            assert_eq!(
                (&claims["sub"], &claims["tenant_id"]),
                (&json!("u1"), &json!("acme"))
            );
            assert_eq!((&claims["iat"], &claims["nbf"]), (&json!(T0), &json!(T0)));
            assert_eq!(claims["exp"], T0 + ttl, "{usage}");
            assert_eq!(claims["token_use"], usage);
            assert!(hex_id(&claims["jti"]) && hex_id(&claims["fam"]), "{claims}");
            assert!(claims.get("scope").is_none(), "no scopes granted");
        }
        assert_eq!(access["fam"], refresh["fam"], "one family");
        assert_ne!(access["jti"], refresh["jti"]);
        let again = s.issue(&acme(), "u1", Grant::new()).unwrap();
        assert_ne!(
            claims_of(&again.access_token)["fam"],
            access["fam"],
            "a login, a family"
        );
    }

    #[test]
    fn a_grant_adds_scopes_and_claims_but_no_session_claim() {
        let (s, _) = sessions(config().tenant_claim("org"));
        let mut grant = Grant::new().scopes(["a", "b"]).claim("name", "Ada");
        for name in [
            "iss", "aud", "sub", "org", "iat", "nbf", "exp", "jti", "fam", "scope",
        ] {
            grant = grant.claim(name, "forged");
        }
        let grant = grant.claim("token_use", "refresh");
        let pair = s.issue(&acme(), "u1", grant).unwrap();
        let claims = claims_of(&pair.access_token);
        assert_eq!(claims["name"], "Ada");
        assert_eq!(claims["scope"], "a b");
        assert_eq!((&claims["iss"], &claims["aud"]), (&json!(ISS), &json!(AUD)));
        assert_eq!(
            (&claims["sub"], &claims["org"]),
            (&json!("u1"), &json!("acme"))
        );
        assert!(
            claims.get("tenant_id").is_none(),
            "the configured claim only"
        );
        assert_eq!(
            (&claims["iat"], &claims["exp"]),
            (&json!(T0), &json!(T0 + ACCESS))
        );
        assert_eq!(claims["token_use"], "access");
        assert!(hex_id(&claims["jti"]) && hex_id(&claims["fam"]));
    }

    #[test]
    fn a_grant_without_scopes_cannot_forge_a_scope_claim() {
        let (s, _) = sessions(config());
        let pair = s
            .issue(&acme(), "u1", Grant::new().claim("scope", "admin"))
            .unwrap();
        for token in [&pair.access_token, &pair.refresh_token] {
            let claims = claims_of(token);
            assert!(claims.get("scope").is_none(), "{claims}");
        }
    }

    #[test]
    fn expires_in_counts_from_now_for_a_pair_made_earlier() {
        let (s, _) = sessions(config());
        let pair_at = |at: u64| {
            let rotation = Rotation {
                at,
                access: "a".repeat(32),
                refresh: "b".repeat(32),
            };
            s.pair(&acme(), "u1", &[], Map::new(), "f", &rotation)
                .unwrap()
        };
        assert_eq!(pair_at(T0 - 100).expires_in, ACCESS - 100);
        assert_eq!(pair_at(T0 - ACCESS - 1).expires_in, 0, "never below zero");
        let pair = pair_at(T0 - 100);
        assert_eq!(
            pair.access_token,
            pair_at(T0 - 100).access_token,
            "HMAC: the same bytes"
        );
        assert_eq!(claims_of(&pair.access_token)["jti"], "a".repeat(32));
        assert_eq!(claims_of(&pair.refresh_token)["jti"], "b".repeat(32));
    }

    #[test]
    fn issuing_needs_a_key_that_signs() {
        let c = config();
        let verify_only = SessionManager::new(c, KeySet::verify_only());
        match verify_only.issue(&acme(), "u1", Grant::new()) {
            Err(SessionError::Key(e)) => {
                assert!(e.to_string().contains("no signing key"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        let (s, _) = sessions(config());
        let access = s.issue(&acme(), "u1", Grant::new()).unwrap().access_token;
        assert_eq!(
            reason(verify_only.check_as(&access, Use::Access, &verify_only.keys(), None)),
            "unknown kid"
        );
    }
}
