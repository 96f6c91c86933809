//! Issuing: a new session's pair ([`TokenPair`], granted a [`Grant`]), the pair of a
//! rotation, signing, and the random ids of `jti`s and families.

use jsonwebtoken::Header;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    claims::{Use, FAMILY, TOKEN_USE},
    refresh::Rotation,
    SessionError, SessionManager,
};
use crate::{core::TenantId, session::keys::KeyError};

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
