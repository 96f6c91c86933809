//! Tokens of identity providers (feature `oidc`): one provider's remote key set, or
//! each tenant's own provider, with why a token of a provider trusted for another
//! tenant is refused.

use std::{borrow::Cow, sync::Arc};

use jsonwebtoken::Header;
use serde_json::{Map, Value};

use super::verify::header_of;
use super::{
    cache::VerifiedBy,
    claims::{Expect, Use},
    error::invalid,
    Checked, SessionError, SessionManager, Trust,
};
use crate::session::keys::{KeySet, NoKey};

/// The key set that can verify a token with `header`: the one held, unless it does
/// not know the token's `kid` (or none is held yet); then one refetch, joined by every
/// request that needs it and at most one per cooldown.
#[cfg(feature = "oidc")]
async fn keys_for(
    remote: &crate::session::oidc::RemoteKeys,
    header: &Header,
) -> Result<Arc<KeySet>, SessionError> {
    if let Some(keys) = remote.keys() {
        if !matches!(keys.verifier(header), Err(NoKey::Unknown)) {
            return Ok(keys);
        }
    }
    if let Some(fetch) = remote.refetch_for_token() {
        fetch.await;
    }
    remote.keys().ok_or(SessionError::Unavailable(Cow::Borrowed(
        "the identity provider's keys are not fetched yet",
    )))
}

impl SessionManager {
    /// The check of a token whose keys are remote.
    #[cfg(feature = "oidc")]
    pub(super) async fn check_remote(&self, token: &str) -> Result<Arc<Checked>, SessionError> {
        let header = header_of(token)?;
        match &self.inner.trust {
            // `check` sends only remote trust here.
            Trust::Own => Err(SessionError::Unavailable(Cow::Borrowed(
                "own keys are not checked remotely",
            ))),
            Trust::Remote(remote) => {
                let keys = keys_for(remote, &header).await?;
                let v = self.check_as(token, Use::Access, &keys, None)?;
                let by = VerifiedBy {
                    keys,
                    remote: Some(remote.clone()),
                    binding: None,
                };
                Ok(self.remember(token, by, v))
            }
            Trust::Tenants(issuers) => self.check_tenant_token(issuers, token, &header).await,
        }
    }

    /// Per-tenant providers: the tenant the (not yet verified) token names picks the
    /// provider it must come from; then the signature and claims are checked with that
    /// provider's keys, issuer and audiences.
    #[cfg(feature = "oidc")]
    async fn check_tenant_token(
        &self,
        issuers: &crate::session::oidc::TenantIssuers,
        token: &str,
        header: &Header,
    ) -> Result<Arc<Checked>, SessionError> {
        let c = &self.inner.config;
        let unverified =
            jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token)
                .map_err(|_| invalid("malformed token claims"))?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(invalid("no issuer"))?;
        let named = c.tenant_named(&unverified)?;
        let tenant = c
            .id_rule
            .parse(named.ok_or(invalid("the token names no tenant"))?)
            .map_err(|_| invalid("malformed tenant claim"))?;
        let binding = issuers.binding(&tenant).await?;
        let binding = match binding {
            Some(b) if b.issuer() == iss => b,
            other => {
                return Err(self
                    .not_bound_here(issuers, token, header, iss, other.is_some())
                    .await)
            }
        };
        let provider = issuers.provider(&tenant, &binding)?;
        let keys = keys_for(&provider, header).await?;
        let audiences = match binding.audiences() {
            [] => c.audiences.as_slice(),
            list => list,
        };
        let expect = Expect {
            issuer: binding.issuer(),
            audiences,
        };
        let mut v = match self.check_as(token, Use::Access, &keys, Some(&expect)) {
            Ok(v) => v,
            Err(e) => {
                let other =
                    self.for_other_audience(issuers, token, &keys, iss, audiences, &unverified);
                return Err(other.unwrap_or(e));
            }
        };
        if v.tenant.as_ref() != Some(&tenant) {
            return Err(invalid("the token's tenant changed under verification"));
        }
        // Only now, with a token that verified, is the provider in use.
        issuers.verified(binding.issuer());
        // A `jti` is unique only per issuer: another tenant's provider must not be able
        // to name (and, by logging out, revoke) this tenant's tokens.
        v.jti = v.jti.map(|jti| format!("{}#{jti}", binding.issuer()));
        let by = VerifiedBy {
            keys,
            remote: Some(provider),
            binding: Some(Arc::new(binding)),
        };
        Ok(self.remember(token, by, v))
    }

    /// Why a token from `iss` naming a tenant that `iss` is not bound to is refused:
    /// when it is a valid token (signature, audience, expiry, claims) from an issuer
    /// trusted for some tenant, [`Conflict`](SessionError::Conflict) if the tenant is
    /// bound to another provider, else [`Unbound`](SessionError::Unbound) (both
    /// answered as an unknown or suspended tenant is); anything else is invalid.
    #[cfg(feature = "oidc")]
    async fn not_bound_here(
        &self,
        issuers: &crate::session::oidc::TenantIssuers,
        token: &str,
        header: &Header,
        iss: &str,
        bound_elsewhere: bool,
    ) -> SessionError {
        let refused = invalid("the token's issuer is not its tenant's provider");
        let Some(trusted) = issuers.trusted(iss) else {
            return refused;
        };
        let Ok(keys) = keys_for(&trusted.keys, header).await else {
            return refused;
        };
        let audiences = self.audiences_of(trusted);
        let expect = Expect {
            issuer: iss,
            audiences: &audiences,
        };
        match self.check_as(token, Use::Access, &keys, Some(&expect)) {
            Ok(_) if bound_elsewhere => SessionError::Conflict,
            Ok(_) => SessionError::Unbound,
            Err(_) => refused,
        }
    }

    /// Every audience a token from a trusted issuer may be for: those its bindings
    /// name, and the configuration's if one of them takes those.
    #[cfg(feature = "oidc")]
    fn audiences_of(&self, trusted: crate::session::oidc::Trusted) -> Vec<String> {
        let mut audiences = trusted.audiences;
        if trusted.configured {
            for a in &self.inner.config.audiences {
                if !audiences.contains(a) {
                    audiences.push(a.clone());
                }
            }
        }
        audiences
    }

    /// A token from the issuer bound to the tenant it names that failed for the
    /// binding's `audiences`: [`OtherAudience`](SessionError::OtherAudience) when it
    /// names another audience of that issuer's bindings and is valid for it (so it is
    /// answered as a token naming a tenant its issuer is not bound to is, whatever the
    /// named tenant's state). Tried only when the token names such an audience.
    #[cfg(feature = "oidc")]
    fn for_other_audience(
        &self,
        issuers: &crate::session::oidc::TenantIssuers,
        token: &str,
        keys: &KeySet,
        iss: &str,
        audiences: &[String],
        unverified: &Map<String, Value>,
    ) -> Option<SessionError> {
        if audiences.is_empty() {
            return None;
        }
        let all = self.audiences_of(issuers.trusted(iss)?);
        let named = |a: &String| match unverified.get("aud") {
            Some(Value::String(s)) => s == a,
            Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(a.as_str())),
            _ => false,
        };
        if !all.iter().any(|a| !audiences.contains(a) && named(a)) {
            return None;
        }
        let expect = Expect {
            issuer: iss,
            audiences: &all,
        };
        self.check_as(token, Use::Access, keys, Some(&expect))
            .ok()
            .map(|_| SessionError::OtherAudience)
    }
}
