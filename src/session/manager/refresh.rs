//! Refresh rotation (a used refresh token's mark, and a retry within the grace),
//! logout and revocation.

use std::time::UNIX_EPOCH;

use super::{
    claims::{is_session_claim, Use},
    error::invalid,
    issue::random_id,
    SessionError, SessionManager, TokenPair,
};
use crate::{
    core::TenantId,
    session::{Consumed, Principal, Revocation},
};

/// When a pair is issued and the `jti`s of its two tokens: new at a login, and at a
/// refresh recorded in the used token's mark, so that a retry whose answer was lost
/// gets the same pair. The mark holds no token and nothing secret: only the time and
/// the two ids, from which the signing key (and only it) makes the pair again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rotation {
    pub(super) at: u64,
    pub(super) access: String,
    pub(super) refresh: String,
}

/// The version tag of a rotation mark.
const MARK: &str = "r1";

impl Rotation {
    pub(super) fn new(at: u64) -> Result<Self, SessionError> {
        Ok(Self {
            at,
            access: random_id()?,
            refresh: random_id()?,
        })
    }

    /// The used mark: `r1:<at>:<access jti>:<refresh jti>`.
    fn mark(&self) -> String {
        format!("{MARK}:{}:{}:{}", self.at, self.access, self.refresh)
    }

    /// A mark's rotation; `None` for anything else (a mark of an older version, or
    /// one not written by this crate), which is then no retry.
    fn parse(mark: &str) -> Option<Self> {
        let mut parts = mark.split(':');
        let (tag, at, access, refresh) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let id = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if tag != MARK || parts.next().is_some() || !id(access) || !id(refresh) {
            return None;
        }
        Some(Self {
            at: at.parse().ok()?,
            access: access.to_owned(),
            refresh: refresh.to_owned(),
        })
    }
}

impl SessionManager {
    /// Exchanges a refresh token for a new pair of the same family; the presented
    /// refresh token is used up, and its used mark records this rotation.
    ///
    /// Presenting it again within the [`refresh_grace`](super::SessionConfig::refresh_grace)
    /// (30 s by default) is taken for a retry whose answer was lost (a revocation
    /// store that answered late, a client that disconnected): it gets the same pair
    /// again. Later, it is treated as theft: the whole family (every token issued from
    /// that login) is revoked.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, SessionError> {
        let v = self.check_as(refresh_token, Use::Refresh, &self.inner.keys.load(), None)?;
        self.not_revoked(&v.facts()).await?;
        let (Some(jti), Some(family), Some(tenant)) = (&v.jti, &v.family, &v.tenant) else {
            return Err(invalid("a refresh token needs jti, fam and a tenant"));
        };
        let c = &self.inner.config;
        // The token is accepted through its second `exp + leeway`: so is its mark kept.
        let until = v.expires_at.saturating_add(c.leeway.as_secs());
        let now = self.now();
        let fresh = Rotation::new(now)?;
        let used = self
            .inner
            .store
            .consume(jti, &fresh.mark(), until)
            .await
            .map_err(SessionError::Store)?;
        let rotation = match used {
            Consumed::First => fresh,
            Consumed::Already(mark) => {
                match Rotation::parse(&mark).filter(|r| self.retry(r, now)) {
                    Some(earlier) => {
                        tracing::debug!(
                            target: "actix_tenancy::session",
                            tenant = tenant.as_str(),
                            "a used refresh token was presented again within the grace: the same pair again"
                        );
                        earlier
                    }
                    None => {
                        self.record(Revocation::Family(family)).await?;
                        tracing::warn!(
                            target: "actix_tenancy::session",
                            tenant = tenant.as_str(),
                            "a used refresh token was presented again: its token family is revoked"
                        );
                        return Err(SessionError::RefreshReused);
                    }
                }
            }
        };
        let scopes = v.scopes();
        let extra = v
            .claims
            .iter()
            .filter(|(k, _)| !is_session_claim(k, &c.tenant_claim))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.pair(tenant, &v.subject, &scopes, extra, family, &rotation)
    }

    /// Whether a used refresh token presented at `now` again is a retry of `rotation`:
    /// within the grace after it (whole seconds), and not after `now` by more than the
    /// leeway (another replica's clock may be ahead).
    fn retry(&self, rotation: &Rotation, now: u64) -> bool {
        let c = &self.inner.config;
        let grace = c.refresh_grace.as_secs();
        grace > 0
            && rotation.at <= now.saturating_add(c.leeway.as_secs())
            && now.saturating_sub(rotation.at) <= grace
    }

    /// Records `what` for as long as any token it could apply to may be accepted.
    async fn record(&self, what: Revocation<'_>) -> Result<(), SessionError> {
        let until = self.inner.config.kept_until(self.now());
        self.inner
            .store
            .revoke(what, until)
            .await
            .map_err(SessionError::Store)
    }

    /// Ends the session `principal` came from: its token by `jti`, or, for a token
    /// without one (a provider that sends none, with
    /// [`require_jti(false)`](super::SessionConfig::require_jti)), every token of its subject
    /// in its tenant issued until now (and within the leeway after, as
    /// [`revoke_subject`](Self::revoke_subject)), since nothing narrower can be revoked.
    ///
    /// The revocation is kept through the token's last second (`exp + leeway`), and
    /// at least as long as any revocation.
    pub async fn logout(&self, principal: &Principal) -> Result<(), SessionError> {
        let c = &self.inner.config;
        let now = self.now();
        let expires = principal
            .expires_at()
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let until = c
            .kept_until(now)
            .max(expires.saturating_add(c.leeway.as_secs()));
        let what = match (principal.token_id(), principal.tenant()) {
            (Some(jti), _) => Revocation::Token(jti),
            (None, Some(tenant)) => Revocation::Subject {
                tenant: tenant.as_str(),
                subject: principal.subject(),
                before: c.cut_off(now),
            },
            (None, None) => {
                return Err(invalid(
                    "the token has neither jti nor tenant: nothing can be revoked",
                ))
            }
        };
        self.inner
            .store
            .revoke(what, until)
            .await
            .map_err(SessionError::Store)
    }

    /// Revokes one token by `jti`, for as long as any token may be accepted (see
    /// [`max_token_life`](super::SessionConfig::max_token_life)).
    pub async fn revoke(&self, jti: &str) -> Result<(), SessionError> {
        self.record(Revocation::Token(jti)).await
    }

    /// Revokes every token of `subject` in `tenant` issued until now.
    ///
    /// The cut-off is `now + leeway`, in whole seconds: a token is accepted with an
    /// `iat` up to the leeway ahead (a replica or provider whose clock is fast), so one
    /// stamped within the leeway after now may have been issued before the call, and
    /// is revoked too. A new login of the subject within the leeway after the call
    /// (30 s by default) is refused as well; lower the leeway where clocks agree. The
    /// revocation is kept as long as a token issued by the cut-off may be accepted
    /// (see [`max_token_life`](super::SessionConfig::max_token_life)).
    pub async fn revoke_subject(
        &self,
        tenant: &TenantId,
        subject: &str,
    ) -> Result<(), SessionError> {
        self.record(Revocation::Subject {
            tenant: tenant.as_str(),
            subject,
            before: self.inner.config.cut_off(self.now()),
        })
        .await
    }

    /// Revokes every token of `tenant` issued until now, e.g. when it is suspended;
    /// the cut-off and how long it is kept are those of
    /// [`revoke_subject`](Self::revoke_subject).
    pub async fn revoke_tenant(&self, tenant: &TenantId) -> Result<(), SessionError> {
        self.record(Revocation::Tenant {
            tenant: tenant.as_str(),
            before: self.inner.config.cut_off(self.now()),
        })
        .await
    }
}

#[async_trait::async_trait]
impl crate::core::RevokeSessions for SessionManager {
    async fn revoke_sessions(
        &self,
        tenant: &TenantId,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.revoke_tenant(tenant).await?)
    }
}
