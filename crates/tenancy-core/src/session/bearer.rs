//! A request's bearer token, read and checked the same way by every adapter's
//! authentication stage: the `Authorization` header's value, the token's signature
//! and claims, then its revocation.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
};

use super::{
    manager::{Check, Checked},
    RevocationError, SessionError, SessionManager, TokenFacts, MAX_TOKEN_LEN,
};
use crate::{error::TenancyError, Principal};

/// RFC 6750's `b64token` characters: `A-Z a-z 0-9 - . _ ~ + /` (a table: a token is
/// read on every request, and is hundreds of bytes long).
static B64TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    t
};

/// The bearer token of a request whose `Authorization` header values are `values`;
/// `Ok(None)` without the header. Refused (the reason, for the logs): two headers, a
/// value longer than the longest token, a scheme other than `Bearer`. The token's
/// characters are checked by [`SessionManager::check_bearer`], unless the exact bytes
/// were verified before.
///
/// ```
/// use tenancy_core::session::bearer;
///
/// assert_eq!(bearer([&b"Bearer abc.def.ghi"[..]].into_iter()), Ok(Some(&b"abc.def.ghi"[..])));
/// assert_eq!(bearer(std::iter::empty()), Ok(None));
/// assert!(bearer([&b"Basic dXNlcg=="[..]].into_iter()).is_err());
/// assert!(bearer([&b"Bearer a"[..], b"Bearer b"].into_iter()).is_err());
/// ```
pub fn bearer<'v>(
    mut values: impl Iterator<Item = &'v [u8]>,
) -> Result<Option<&'v [u8]>, &'static str> {
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    // "Bearer " + the longest token; longer is refused before any parsing.
    if value.len() > MAX_TOKEN_LEN + 7 {
        return Err("the token is too large");
    }
    let space = value
        .iter()
        .position(|&b| b == b' ')
        .ok_or("not a bearer credential")?;
    let (scheme, token) = (&value[..space], &value[space + 1..]);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err("not a bearer credential");
    }
    Ok(Some(token))
}

/// RFC 6750 `b64token`: the token characters, then optional padding. One pass over
/// the bytes, by table; whatever passes is ASCII.
fn b64token(token: &[u8]) -> Result<&str, &'static str> {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..body_len];
    if body.is_empty() || !body.iter().all(|&b| B64TOKEN[usize::from(b)]) {
        return Err("malformed bearer token");
    }
    std::str::from_utf8(token).map_err(|_| "malformed bearer token")
}

/// An access token whose signature and claims checked out; its revocation is asked
/// on every use ([`SessionManager::revocation_now`], [`SessionManager::revocation`]).
#[derive(Debug, Clone)]
pub struct VerifiedToken(pub(crate) Arc<Checked>);

impl VerifiedToken {
    /// The verified identity the token carries.
    pub fn principal(&self) -> Principal {
        self.0.principal()
    }

    /// What a revocation store is asked about it.
    pub fn facts(&self) -> TokenFacts<'_> {
        self.0.facts()
    }
}

/// The check of a bearer token's signature and claims. Not `#[non_exhaustive]`: an
/// adapter matches every case, and has no arm that could let a new one through.
pub enum TokenCheck {
    /// Verified; its revocation is still to be asked.
    Verified(VerifiedToken),
    /// Refused: expired, badly signed, for another audience, without a tenant, ...
    Refused(SessionError),
    /// An identity provider's keys must be fetched first (only with feature `oidc`):
    /// wait for it, bounded by the stage's timeout.
    Pending(futures_util::future::BoxFuture<'static, Result<VerifiedToken, SessionError>>),
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Verified(v) => f.debug_tuple("Verified").field(v).finish(),
            Self::Refused(e) => f.debug_tuple("Refused").field(e).finish(),
            Self::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl SessionManager {
    /// Checks the bearer token `token` (as [`bearer`] read it): its signature and
    /// claims, not its revocation. A token verified before, byte for byte, and not
    /// yet expired comes from the cache; any other must be RFC 6750 `b64token`
    /// characters (`Err`, the reason for the logs, otherwise).
    pub fn check_bearer(&self, token: &[u8]) -> Result<TokenCheck, &'static str> {
        if let Some(hit) = self.cached(token) {
            return Ok(TokenCheck::Verified(VerifiedToken(hit)));
        }
        Ok(match self.check_uncached(b64token(token)?) {
            Check::Ready(Ok(checked)) => TokenCheck::Verified(VerifiedToken(checked)),
            Check::Ready(Err(e)) => TokenCheck::Refused(e),
            #[cfg(feature = "oidc")]
            Check::Wait(waiting) => {
                use futures_util::FutureExt as _;
                TokenCheck::Pending(waiting.map(|c| c.map(VerifiedToken)).boxed())
            }
        })
    }

    /// Whether `token` has been revoked, when the store answers without waiting:
    /// `Some(Ok(()))` not revoked, `Some(Err(SessionError::Revoked))` revoked, a store
    /// failure (or panic) `Some(Err(SessionError::Store(..)))`; `None` when the store
    /// must be waited for ([`revocation`](Self::revocation)).
    pub fn revocation_now(&self, token: &VerifiedToken) -> Option<Result<(), SessionError>> {
        let store = self.store();
        let facts = token.facts();
        let now = catch_unwind(AssertUnwindSafe(|| store.is_revoked(&facts).now()))
            .unwrap_or_else(|_| Some(Err(RevocationError::new("the store panicked"))));
        now.map(|answer| match answer {
            Ok(false) => Ok(()),
            Ok(true) => Err(SessionError::Revoked),
            Err(e) => Err(SessionError::Store(e)),
        })
    }

    /// Whether `token` has been revoked, waited for at most `timeout`: a store that
    /// fails, panics or does not answer in time is a `SessionError::Store` (fail
    /// closed).
    pub async fn revocation(
        &self,
        token: &VerifiedToken,
        timeout: std::time::Duration,
    ) -> Result<(), SessionError> {
        let failed = |why: &'static str| SessionError::Store(RevocationError::new(why));
        let facts = token.facts();
        let check = crate::caught_async("RevocationStore::is_revoked", self.not_revoked(&facts));
        match tokio::time::timeout(timeout, check).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Err(failed("the store panicked")),
            Err(_) => Err(failed("the store did not answer in time")),
        }
    }
}

/// Waits for a [`TokenCheck::Pending`] check at most `timeout`: a panic in it (a
/// registry's or a provider's code) or past the timeout is a
/// `SessionError::Unavailable` (fail closed). The fetch itself goes on, for the
/// requests after it.
pub async fn pending_keys(
    checking: futures_util::future::BoxFuture<'static, Result<VerifiedToken, SessionError>>,
    timeout: std::time::Duration,
) -> Result<VerifiedToken, SessionError> {
    let checking = crate::caught_async("the identity provider's key check", checking);
    match tokio::time::timeout(timeout, checking).await {
        Ok(Some(checked)) => checked,
        Ok(None) => Err(SessionError::Unavailable("the key check panicked".into())),
        Err(_) => Err(SessionError::Unavailable(
            "the identity provider's keys did not come in time".into(),
        )),
    }
}

/// The answer to a token the check refused: `503 auth_unavailable` when the
/// revocation store or the identity provider could not answer; a `403
/// tenant_forbidden` for a valid token naming a tenant its provider may not speak for
/// (answered as an unknown or suspended tenant is, byte for byte, so that no token
/// holder learns which ids are tenants; the reason tells operators which case it
/// was); `401 unauthenticated` otherwise.
pub fn refusal(e: SessionError) -> TenancyError {
    match e {
        SessionError::Store(_) | SessionError::Unavailable(_) => TenancyError::AuthUnavailable {
            reason: e.to_string().into(),
        },
        SessionError::Conflict | SessionError::OtherAudience | SessionError::Unbound => {
            let reason = match e {
                SessionError::Conflict => "cross-tenant token: the token's issuer is not the identity provider of the tenant it names",
                SessionError::OtherAudience => "cross-tenant token: for an audience of its identity provider that the tenant it names does not accept",
                _ => "the token names a tenant bound to no identity provider (unknown, or without a binding)",
            };
            TenancyError::TenantForbidden {
                reason: reason.into(),
            }
        }
        other => TenancyError::Unauthenticated {
            reason: other.to_string().into(),
        },
    }
}
