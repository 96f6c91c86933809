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
    session::{Consumed, Principal, Revocation},
    TenantId,
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
                            target: "tenancy::session",
                            tenant = tenant.as_str(),
                            "a used refresh token was presented again within the grace: the same pair again"
                        );
                        earlier
                    }
                    None => {
                        self.record(Revocation::Family(family)).await?;
                        tracing::warn!(
                            target: "tenancy::session",
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

impl crate::RevokeSessions for SessionManager {
    fn revoke_sessions<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> crate::Answer<'a, Result<(), Box<dyn std::error::Error + Send + Sync>>> {
        crate::Answer::later(async move { Ok(self.revoke_tenant(tenant).await?) })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, SystemTime},
    };

    use super::{
        super::{
            testkit::{acme, claims_of, config, reason, sessions, Recorder, T0},
            Grant, SessionConfig,
        },
        *,
    };
    use crate::session::{InMemoryRevocations, RevocationStore as _};

    const ID: &str = "0123456789abcdef0123456789abcdef";
    /// How long a revocation made at [`T0`] is kept by default: from the cut-off
    /// (`T0` + 30 s of leeway), the longest life (30 days), and the leeway again.
    const KEPT: u64 = T0 + 30 + 30 * 24 * 3600 + 30;

    #[test]
    fn a_rotation_mark_round_trips() {
        let rotation = Rotation::new(T0).unwrap();
        let mark = rotation.mark();
        assert_eq!(
            mark,
            format!("r1:{T0}:{}:{}", rotation.access, rotation.refresh)
        );
        assert_eq!(Rotation::parse(&mark), Some(rotation.clone()));
        let other = Rotation::new(T0).unwrap();
        assert_ne!(
            (&other.access, &other.refresh),
            (&rotation.access, &rotation.refresh)
        );
        assert_ne!(rotation.access, rotation.refresh);
        let zero = format!("r1:0:{ID}:{ID}");
        assert_eq!(Rotation::parse(&zero).map(|r| r.at), Some(0));
    }

    #[test]
    fn a_malformed_mark_is_no_rotation() {
        let short = &ID[1..];
        let long = format!("{ID}0");
        let not_hex = ID.replace('a', "g");
        for mark in [
            String::new(),
            "r1".into(),
            format!("r1:{T0}:{ID}"),
            format!("r1:{T0}:{ID}:{ID}:"),
            format!("r1:{T0}:{ID}:{ID}:{ID}"),
            format!("r2:{T0}:{ID}:{ID}"),
            format!("R1:{T0}:{ID}:{ID}"),
            format!("r1::{ID}:{ID}"),
            format!("r1:-1:{ID}:{ID}"),
            format!("r1:+{T0}x:{ID}:{ID}"),
            format!("r1:18446744073709551616:{ID}:{ID}"),
            format!("r1:{T0}:{short}:{ID}"),
            format!("r1:{T0}:{ID}:{long}"),
            format!("r1:{T0}:{not_hex}:{ID}"),
            format!("r1:{T0}:{ID}: {short}"),
            "a mark of another writer".into(),
        ] {
            assert_eq!(Rotation::parse(&mark), None, "{mark}");
        }
    }

    #[test]
    fn a_retry_is_within_the_grace_after_the_rotation_and_the_leeway_before() {
        let secs = Duration::from_secs;
        let (s, _) = sessions(config().refresh_grace(secs(20)).leeway(secs(5)));
        let at = |at: u64| Rotation {
            at,
            access: ID.into(),
            refresh: ID.into(),
        };
        assert!(s.retry(&at(T0), T0));
        assert!(s.retry(&at(T0), T0 + 20), "through the grace's last second");
        assert!(!s.retry(&at(T0), T0 + 21));
        assert!(
            s.retry(&at(T0 + 5), T0),
            "a replica's clock ahead by the leeway"
        );
        assert!(!s.retry(&at(T0 + 6), T0));
        let (none, _) = sessions(config().refresh_grace(Duration::ZERO));
        assert!(!none.retry(&at(T0), T0), "no grace: never a retry");
    }

    /// Refreshing with `used` is taken for theft: `RefreshReused`, and each of the
    /// family's `access` tokens is revoked.
    async fn theft(s: &SessionManager, used: &str, access: &[&String]) {
        let refused = s.refresh(used).await;
        assert!(
            matches!(refused, Err(SessionError::RefreshReused)),
            "{refused:?}"
        );
        for token in access {
            let revoked = s.verify(token).await;
            assert!(matches!(revoked, Err(SessionError::Revoked)), "{revoked:?}");
        }
    }

    #[tokio::test]
    async fn a_used_refresh_token_again_is_a_retry_within_the_grace_and_theft_after() {
        let (s, time) = sessions(config());
        let pair = s.issue(&acme(), "u1", Grant::new()).unwrap();
        time.advance(Duration::from_secs(10));
        let next = s.refresh(&pair.refresh_token).await.unwrap();
        time.advance(Duration::from_secs(30));
        let again = s.refresh(&pair.refresh_token).await.unwrap();
        assert_eq!(
            (&again.access_token, &again.refresh_token),
            (&next.access_token, &next.refresh_token),
            "the grace's last second: the same pair"
        );
        assert_eq!(again.expires_in, 15 * 60 - 30, "counted from the rotation");
        time.advance(Duration::from_secs(1));
        theft(
            &s,
            &pair.refresh_token,
            &[&next.access_token, &pair.access_token],
        )
        .await;
    }

    #[tokio::test]
    async fn a_mark_this_crate_did_not_write_is_no_retry() {
        let (s, time) = sessions(config());
        let clock = time.clock();
        let store = Arc::new(InMemoryRevocations::new().with_clock(clock));
        let s = s.with_store(Arc::clone(&store));
        let pair = s.issue(&acme(), "u1", Grant::new()).unwrap();
        let jti = claims_of(&pair.refresh_token)["jti"]
            .as_str()
            .unwrap()
            .to_owned();
        let used = store.consume(&jti, "another writer's mark", T0 + 60).await;
        assert_eq!(used.unwrap(), Consumed::First);
        theft(&s, &pair.refresh_token, &[&pair.access_token]).await;
    }

    #[tokio::test]
    async fn a_refresh_keeps_the_grant_and_renews_the_rest() {
        let (s, time) = sessions(config().tenant_claim("org"));
        let grant = Grant::new().scopes(["a", "b"]).claim("name", "Ada");
        let pair = s.issue(&acme(), "u1", grant).unwrap();
        time.advance(Duration::from_secs(100));
        let next = s.refresh(&pair.refresh_token).await.unwrap();
        let (old, new) = (claims_of(&pair.access_token), claims_of(&next.access_token));
        for same in ["sub", "org", "fam", "scope", "name", "iss", "aud"] {
            assert_eq!(old[same], new[same], "{same}");
        }
        assert_eq!(new["iat"], T0 + 100);
        assert_ne!(old["jti"], new["jti"]);
        assert_eq!(claims_of(&next.refresh_token)["token_use"], "refresh");
        assert_eq!(
            reason(s.refresh(&next.access_token).await),
            "an access token cannot refresh"
        );
    }

    /// Sessions under `config` whose store records what it is told.
    fn recorded(config: SessionConfig) -> (SessionManager, Arc<Recorder>) {
        let store = Arc::new(Recorder::default());
        let (s, _) = sessions(config);
        (s.with_store(Arc::clone(&store)), store)
    }

    fn told(store: &Recorder) -> Vec<(String, u64)> {
        std::mem::take(&mut *store.revoked.lock().unwrap())
    }

    #[tokio::test]
    async fn revocations_are_cut_off_past_the_leeway_and_kept_as_long_as_a_token_lives() {
        let (s, store) = recorded(config());
        s.revoke("j1").await.unwrap();
        s.revoke_subject(&acme(), "u1").await.unwrap();
        s.revoke_tenant(&acme()).await.unwrap();
        let cut = T0 + 30;
        assert_eq!(
            told(&store),
            [
                (r#"Token("j1")"#.to_owned(), KEPT),
                (
                    format!(r#"Subject {{ tenant: "acme", subject: "u1", before: {cut} }}"#),
                    KEPT
                ),
                (
                    format!(r#"Tenant {{ tenant: "acme", before: {cut} }}"#),
                    KEPT
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_logout_revokes_what_the_principal_allows_for_as_long_as_it_lives() {
        let (s, store) = recorded(config());
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let short = Principal::new("u1")
            .with_tenant(acme())
            .with_token_id("j1")
            .with_expiry(at(T0 + 60));
        s.logout(&short).await.unwrap();
        let long = short.clone().with_expiry(at(KEPT + 100));
        s.logout(&long).await.unwrap();
        let no_jti = Principal::new("u1").with_tenant(acme());
        s.logout(&no_jti).await.unwrap();
        assert_eq!(
            told(&store),
            [
                (r#"Token("j1")"#.to_owned(), KEPT),
                (r#"Token("j1")"#.to_owned(), KEPT + 100 + 30),
                (
                    format!(
                        r#"Subject {{ tenant: "acme", subject: "u1", before: {} }}"#,
                        T0 + 30
                    ),
                    KEPT
                ),
            ]
        );
        let nothing = Principal::new("u1");
        assert_eq!(
            reason(s.logout(&nothing).await),
            "the token has neither jti nor tenant: nothing can be revoked"
        );
        let down = s.with_store(Recorder {
            down: true,
            ..Recorder::default()
        });
        assert!(matches!(
            down.logout(&short).await,
            Err(SessionError::Store(_))
        ));
        assert!(matches!(
            down.revoke("j1").await,
            Err(SessionError::Store(_))
        ));
    }
}
