//! Verifying: a token's shape, signature and claims (`check_as`), the cache in front
//! of it (`check`), and revocation (`verify`).

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::{Map, Value};

use super::{
    cache::VerifiedBy,
    claims::{at_path, words, Expect, Use, FAMILY, TOKEN_USE},
    error::invalid,
    SessionConfig, SessionError, SessionManager, Trust,
};
use crate::{
    core::TenantId,
    session::{
        keys::{KeySet, NoKey, SUPPORTED},
        Principal, TokenFacts,
    },
};

/// The longest token accepted, in bytes; longer ones are rejected before parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A token whose signature and claims checked out; revocation is checked next.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(super) claims: Map<String, Value>,
    roles: Vec<String>,
    pub(super) subject: String,
    pub(super) tenant: Option<TenantId>,
    pub(super) jti: Option<String>,
    pub(super) family: Option<String>,
    issued_at: Option<u64>,
    pub(super) expires_at: u64,
}

impl Verified {
    pub(crate) fn facts(&self) -> TokenFacts<'_> {
        TokenFacts {
            jti: self.jti.as_deref(),
            family: self.family.as_deref(),
            tenant: self.tenant.as_ref().map(TenantId::as_str),
            subject: &self.subject,
            issued_at: self.issued_at,
        }
    }

    /// The granted scopes: `scope` or `scp`, space-separated or an array.
    pub(super) fn scopes(&self) -> Vec<String> {
        self.claims
            .get("scope")
            .or_else(|| self.claims.get("scp"))
            .and_then(words)
            .unwrap_or_default()
    }

    pub(crate) fn into_principal(self) -> Principal {
        let scopes = self.scopes();
        let mut p = Principal::new(self.subject)
            .with_scopes(scopes)
            .with_roles(self.roles)
            .with_expiry(UNIX_EPOCH + Duration::from_secs(self.expires_at));
        if let Some(t) = self.tenant {
            p = p.with_tenant(t);
        }
        if let Some(jti) = self.jti {
            p = p.with_token_id(jti);
        }
        p.with_claims(Value::Object(self.claims))
    }
}

/// An access token that checked out (signature and claims), as the verified-token
/// cache keeps it; revocation is checked on every use.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(super) principal: Principal,
    family: Option<String>,
    issued_at: Option<u64>,
    pub(super) expires_at: u64,
}

impl Checked {
    pub(crate) fn facts(&self) -> TokenFacts<'_> {
        TokenFacts {
            jti: self.principal.token_id(),
            family: self.family.as_deref(),
            tenant: self.principal.tenant().map(TenantId::as_str),
            subject: self.principal.subject(),
            issued_at: self.issued_at,
        }
    }

    pub(crate) fn principal(&self) -> Principal {
        self.principal.clone()
    }
}

impl From<Verified> for Checked {
    fn from(mut v: Verified) -> Self {
        let (family, issued_at, expires_at) = (v.family.take(), v.issued_at, v.expires_at);
        Self {
            principal: v.into_principal(),
            family,
            issued_at,
            expires_at,
        }
    }
}

/// A token check: done, or waiting for a provider's keys.
pub(crate) enum Check {
    Ready(Result<Arc<Checked>, SessionError>),
    #[cfg(feature = "oidc")]
    Wait(futures_util::future::BoxFuture<'static, Result<Arc<Checked>, SessionError>>),
}

/// The header of a token that has the shape of a JWT and is not too large.
pub(crate) fn header_of(token: &str) -> Result<Header, SessionError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid("the token is too large"));
    }
    if token.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(invalid("a JWT has three parts"));
    }
    jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token header"))
}

/// The checks for a token of `alg` that `expect` describes.
fn validation(alg: Algorithm, c: &SessionConfig, expect: &Expect<'_>) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = c.leeway.as_secs();
    // `exp` and `nbf` are checked after decoding, on the configured clock (the
    // library reads the system's); their presence and type are still required here.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.set_issuer(&[expect.issuer]);
    if expect.audiences.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(expect.audiences);
    }
    v
}

/// One `Validation` per algorithm, built once: `iss`, `aud`, `exp`, `nbf` and the
/// leeway come from the configuration, which never changes.
pub(super) fn validations(c: &SessionConfig) -> Vec<(Algorithm, Validation)> {
    let expect = Expect {
        issuer: &c.issuer,
        audiences: &c.audiences,
    };
    SUPPORTED
        .iter()
        .map(|&alg| (alg, validation(alg, c, &expect)))
        .collect()
}

/// A decoded token's claims, typed as this crate relies on them, whatever the library
/// accepted.
struct Claims<'a>(&'a Map<String, Value>);

impl<'a> Claims<'a> {
    /// A time claim: a whole number of unix seconds, if present.
    fn number(&self, name: &'static str) -> Result<Option<u64>, SessionError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or(invalid("a time claim is not a whole number")),
        }
    }

    /// A claim that must be a string, if present.
    fn text(&self, name: &str) -> Result<Option<&'a str>, SessionError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid("a claim that must be a string is not")),
        }
    }

    /// `iat` and `exp`, for a token alive now on the configured clock (within the
    /// leeway) and living no longer than any revocation is kept.
    fn times(&self, c: &SessionConfig) -> Result<(u64, u64), SessionError> {
        let (now, leeway) = (c.clock.unix_secs(), c.leeway.as_secs());
        let expires_at = self.number("exp")?.ok_or(invalid("no exp"))?;
        if expires_at.saturating_add(leeway) < now {
            return Err(invalid("expired"));
        }
        if self
            .number("nbf")?
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return Err(invalid("not yet valid"));
        }
        // A revocation is kept for the longest life a token may have: a token whose
        // life is unknown (no `iat`) or longer would outlive it.
        let issued_at = self
            .number("iat")?
            .ok_or(invalid("no iat: the token's life is unknown"))?;
        // A token "issued" in the future would outlive every revocation by tenant or
        // subject (those revoke what was issued before a cut-off): refuse it.
        if issued_at > now.saturating_add(leeway) {
            return Err(invalid("issued in the future"));
        }
        if expires_at.saturating_sub(issued_at) > c.token_life() {
            return Err(invalid(
                "the token lives longer than any revocation is kept",
            ));
        }
        Ok((issued_at, expires_at))
    }

    /// The token's kind (`token_use`; none is an access token), if it is `want`.
    fn usage(&self, want: Use) -> Result<Use, SessionError> {
        let usage = match self.text(TOKEN_USE)? {
            None | Some("access") => Use::Access,
            Some("refresh") => Use::Refresh,
            Some(_) => return Err(invalid("unknown token_use")),
        };
        if usage != want {
            return Err(invalid(match want {
                Use::Access => "a refresh token is not an access token",
                Use::Refresh => "an access token cannot refresh",
            }));
        }
        Ok(usage)
    }

    /// The tenant the token names, passing the configuration's rule; none only when
    /// the configuration does not require one.
    fn tenant(&self, c: &SessionConfig) -> Result<Option<TenantId>, SessionError> {
        let tenant = match c.tenant_named(self.0)? {
            None => None,
            Some(t) => Some(
                c.id_rule
                    .parse(t)
                    .map_err(|_| invalid("malformed tenant claim"))?,
            ),
        };
        if tenant.is_none() && c.require_tenant {
            return Err(invalid("the token names no tenant"));
        }
        Ok(tenant)
    }

    /// The roles at the configuration's roles claim (none without one).
    fn roles(&self, c: &SessionConfig) -> Result<Vec<String>, SessionError> {
        match c.roles_claim.as_deref().and_then(|p| at_path(self.0, p)) {
            None => Ok(Vec::new()),
            Some(v) => words(v).ok_or(invalid("the roles claim is neither a string nor an array")),
        }
    }
}

impl SessionManager {
    /// Checks an access token's signature and claims (no revocation). A token
    /// verified before and not yet expired comes from the cache; a remote key set may
    /// have to be fetched first.
    pub(crate) fn check(&self, token: &str) -> Check {
        match self.cached(token.as_bytes()) {
            Some(hit) => Check::Ready(Ok(hit)),
            None => self.check_uncached(token),
        }
    }

    /// [`check`](Self::check) for a token the cache does not hold.
    pub(crate) fn check_uncached(&self, token: &str) -> Check {
        match &self.inner.trust {
            Trust::Own => {
                let keys = self.inner.keys.load_full();
                let checked = self.check_as(token, Use::Access, &keys, None);
                Check::Ready(checked.map(|v| {
                    let by = VerifiedBy {
                        keys,
                        #[cfg(feature = "oidc")]
                        remote: None,
                        #[cfg(feature = "oidc")]
                        binding: None,
                    };
                    self.remember(token, by, v)
                }))
            }
            #[cfg(feature = "oidc")]
            _ => {
                use futures_util::FutureExt as _;
                // Most checks find the keys at hand: poll once, and only box a future
                // for one that must wait for a fetch (which runs on its own task, so
                // the second poll joins it).
                let (me, token) = (self.clone(), token.to_owned());
                let mut checking: futures_util::future::BoxFuture<'static, _> =
                    Box::pin(async move { me.check_remote(&token).await });
                match checking.as_mut().now_or_never() {
                    Some(done) => Check::Ready(done),
                    None => Check::Wait(checking),
                }
            }
        }
    }

    /// Checks `token` as a token of kind `want`, signed by a key of `keys`, from the
    /// issuer and for the audiences `expect` names (the configuration's when `None`):
    /// its shape, its signature, and every claim this crate relies on, in this order
    /// (the first that fails is the reason); revocation is checked next.
    pub(super) fn check_as(
        &self,
        token: &str,
        want: Use,
        keys: &KeySet,
        expect: Option<&Expect<'_>>,
    ) -> Result<Verified, SessionError> {
        let c = &self.inner.config;
        let (claims, issuer) = self.decode(token, keys, expect)?;
        let read = Claims(&claims);
        let (issued_at, expires_at) = read.times(c)?;
        if read.text("iss")? != Some(issuer) {
            return Err(invalid("wrong issuer"));
        }
        let subject = read
            .text("sub")?
            .filter(|s| !s.is_empty())
            .ok_or(invalid("no subject"))?;
        let usage = read.usage(want)?;
        let tenant = read.tenant(c)?;
        let jti = read.text("jti")?.map(str::to_owned);
        if jti.is_none() && c.require_jti {
            return Err(invalid(
                "the token has no jti, so it could not be revoked alone",
            ));
        }
        let family = read.text(FAMILY)?.map(str::to_owned);
        let roles = read.roles(c)?;
        if usage == Use::Refresh && (jti.is_none() || family.is_none() || tenant.is_none()) {
            return Err(invalid("a refresh token needs jti, fam and a tenant"));
        }
        Ok(Verified {
            roles,
            subject: subject.to_owned(),
            tenant,
            jti,
            family,
            issued_at: Some(issued_at),
            expires_at,
            claims,
        })
    }

    /// The claims of `token`, and the issuer they must name: the token has the shape
    /// of a JWT, its header names a key of `keys`, and the library has checked its
    /// signature, `iss` and `aud` (those of `expect`, else the configuration's) and
    /// that `exp`, `iss`, `aud` and `sub` are present.
    fn decode<'a>(
        &'a self,
        token: &str,
        keys: &KeySet,
        expect: Option<&Expect<'a>>,
    ) -> Result<(Map<String, Value>, &'a str), SessionError> {
        let c = &self.inner.config;
        let header = header_of(token)?;
        let key = keys.verifier(&header).map_err(|e| match e {
            NoKey::Unknown => invalid("unknown kid"),
            NoKey::Refused(why) => invalid(why),
        })?;
        let own;
        let (issuer, v) = match expect {
            None => {
                let (_, v) = self
                    .inner
                    .validations
                    .iter()
                    .find(|(alg, _)| *alg == key.algorithm())
                    .ok_or(invalid("the key's algorithm is not supported"))?;
                (c.issuer.as_str(), v)
            }
            Some(e) => {
                own = validation(key.algorithm(), c, e);
                (e.issuer, &own)
            }
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding(), v)
            .map_err(|e| SessionError::Invalid(Cow::Owned(e.to_string())))?;
        Ok((data.claims, issuer))
    }

    /// Verifies an access token: signature, `exp`, `nbf`, `iss`, `aud`, type and
    /// revocation.
    pub async fn verify(&self, token: &str) -> Result<Principal, SessionError> {
        let checked = match self.check(token) {
            Check::Ready(done) => done?,
            #[cfg(feature = "oidc")]
            Check::Wait(wait) => wait.await?,
        };
        self.not_revoked(&checked.facts()).await?;
        Ok(checked.principal())
    }

    pub(crate) async fn not_revoked(&self, facts: &TokenFacts<'_>) -> Result<(), SessionError> {
        match self.inner.store.is_revoked(facts).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(SessionError::Revoked),
            Err(e) => Err(SessionError::Store(e)),
        }
    }
}
