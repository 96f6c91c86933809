//! [`SessionConfig`]: how sessions are issued and checked.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{error::invalid, SessionError, TenantFrom};
use crate::{Clock, TenantIdRule};

/// How sessions are issued and checked.
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionConfig {
    pub(super) issuer: String,
    pub(super) audiences: Vec<String>,
    pub(super) access_ttl: Duration,
    pub(super) refresh_ttl: Duration,
    pub(super) leeway: Duration,
    pub(super) tenant_claim: String,
    pub(super) id_rule: TenantIdRule,
    pub(super) require_tenant: bool,
    pub(super) require_jti: bool,
    tenant_from: Option<TenantFrom>,
    pub(super) roles_claim: Option<Vec<String>>,
    pub(super) verified_cache: usize,
    max_token_life: Duration,
    pub(super) refresh_grace: Duration,
    pub(super) clock: Clock,
}

impl SessionConfig {
    /// Tokens issued by `issuer` for `audience`; 15-minute access tokens, 30-day
    /// refresh tokens, 30 s leeway for clock skew, the tenant in the `tenant_id` claim.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: vec![audience.into()],
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            leeway: Duration::from_secs(30),
            tenant_claim: "tenant_id".into(),
            id_rule: TenantIdRule::Default,
            require_tenant: true,
            require_jti: true,
            tenant_from: None,
            roles_claim: None,
            verified_cache: 10_000,
            max_token_life: Duration::ZERO,
            refresh_grace: Duration::from_secs(30),
            clock: Clock::system(),
        }
    }

    /// Reads the wall-clock time (tokens' `iat`, `nbf` and `exp`, revocation cut-offs)
    /// from `clock` instead of the system's: with a
    /// [`FakeClock`](crate::FakeClock), a test lets a token expire
    /// without sleeping. A remote key set's fetch schedule and a revocation store's own
    /// expiry keep their clocks (give [`InMemoryRevocations`](crate::session::InMemoryRevocations)
    /// the same one with `with_clock`).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Every audience a token may be for (a token whose `aud` names any one of them
    /// passes); issued tokens carry the first. An empty list changes nothing.
    pub fn audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list: Vec<String> = audiences.into_iter().map(Into::into).collect();
        if !list.is_empty() {
            self.audiences = list;
        }
        self
    }

    /// Where a verified token names its tenant, when the provider does not use a
    /// plain top-level claim: a nested claim, or a part of `iss` (see
    /// [`TenantFrom`]). Issued tokens still carry [`tenant_claim`](Self::tenant_claim).
    pub fn tenant_from(mut self, from: TenantFrom) -> Self {
        self.tenant_from = Some(from);
        self
    }

    /// The claim holding the principal's roles, an array of strings or one
    /// space-separated string (e.g. `roles` for Entra ID, `cognito:groups` for
    /// Cognito, `["realm_access", "roles"]` for Keycloak); none by default.
    pub fn roles_claim<I, S>(mut self, path: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles_claim = Some(path.into_iter().map(Into::into).collect());
        self
    }

    /// Whether an access token must carry `jti` (default: yes). A token without one
    /// cannot be revoked on its own: [`SessionManager::logout`](super::SessionManager::logout) would have to revoke
    /// every session of its subject. Turn it off for providers that send none (Auth0,
    /// Entra ID); `logout` then revokes the subject's sessions in the tenant.
    pub fn require_jti(mut self, require: bool) -> Self {
        self.require_jti = require;
        self
    }

    /// How long an access token lives.
    pub fn access_ttl(mut self, ttl: Duration) -> Self {
        self.access_ttl = ttl;
        self
    }

    /// How long a refresh token lives.
    pub fn refresh_ttl(mut self, ttl: Duration) -> Self {
        self.refresh_ttl = ttl;
        self
    }

    /// The longest a token may live, from its `iat` to its `exp`; never less than the
    /// longer of [`access_ttl`](Self::access_ttl) and
    /// [`refresh_ttl`](Self::refresh_ttl), which is also the default (30 days).
    ///
    /// A token that lives longer, or carries no `iat` (its life is unknown), is
    /// refused, whoever signed it: revocations by subject, tenant, family or `jti` are
    /// kept for this long plus twice the [`leeway`](Self::leeway) (the cut-off's and
    /// the token's), and a longer-lived token would outlive them. Raise it for an
    /// identity provider whose tokens live longer than this manager's own, and, after
    /// cutting a TTL, keep it at the old TTL until the tokens minted before have
    /// expired.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tenancy_core::session::SessionConfig;
    ///
    /// // A provider's day-long tokens, this service's own 15-minute ones.
    /// let config = SessionConfig::new("https://login.example.com", "api")
    ///     .refresh_ttl(Duration::from_secs(8 * 3600))
    ///     .max_token_life(Duration::from_secs(24 * 3600));
    /// # let _ = config;
    /// ```
    pub fn max_token_life(mut self, life: Duration) -> Self {
        self.max_token_life = life;
        self
    }

    /// How long after a refresh the same refresh token may be presented again and get
    /// the same new pair, not taken for theft (default 30 s, as Okta's default grace;
    /// zero: never). A refresh whose answer was lost (the revocation store answered
    /// late, the client disconnected) is retried with the token it already used; the
    /// used mark records the rotation, and the retry gets that rotation's tokens again
    /// (the same claims and `jti`s, byte for byte with a deterministic algorithm:
    /// HMAC, RSA PKCS#1, EdDSA). Outside the grace, a used refresh token presented
    /// again revokes its whole family, as before. Within it, whoever holds the used
    /// token gets the pair: keep it short.
    pub fn refresh_grace(mut self, grace: Duration) -> Self {
        self.refresh_grace = grace;
        self
    }

    /// Clock skew tolerated on `exp` and `nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The claim holding the tenant id (default `tenant_id`).
    pub fn tenant_claim(mut self, name: impl Into<String>) -> Self {
        self.tenant_claim = name.into();
        self
    }

    /// The rule tenant ids in tokens must pass (the resolver's, by default the
    /// crate's default rule).
    pub fn id_rule(mut self, rule: TenantIdRule) -> Self {
        self.id_rule = rule;
        self
    }

    /// Whether a token must name a tenant (default: yes). A token without the tenant
    /// claim would let its bearer pick any tenant through the other sources; turn
    /// this off only for identities that are not tied to one tenant (and guard
    /// those routes yourself).
    pub fn require_tenant(mut self, require: bool) -> Self {
        self.require_tenant = require;
        self
    }

    /// How many verified access tokens to remember (default 10,000; 0: none). A
    /// token seen again within its lifetime skips the signature check and the claims
    /// parse (about 95,000 instructions for HS256); revocation is still checked on
    /// every request, and changing the keys empties the cache.
    pub fn verified_cache(mut self, max_tokens: usize) -> Self {
        self.verified_cache = max_tokens;
        self
    }

    /// The tenant `claims` name: where [`tenant_from`](Self::tenant_from) says, else
    /// the [`tenant_claim`](Self::tenant_claim), which must be a string.
    pub(super) fn tenant_named<'a>(
        &self,
        claims: &'a Map<String, Value>,
    ) -> Result<Option<&'a str>, SessionError> {
        match &self.tenant_from {
            Some(from) => from.read(claims),
            None => match claims.get(&self.tenant_claim) {
                None => Ok(None),
                Some(Value::String(t)) => Ok(Some(t)),
                Some(_) => Err(invalid("a claim that must be a string is not")),
            },
        }
    }

    /// The longest a token accepted may live, `exp - iat`, in seconds.
    pub(super) fn token_life(&self) -> u64 {
        self.max_token_life
            .max(self.access_ttl)
            .max(self.refresh_ttl)
            .as_secs()
    }

    /// The cut-off of a revocation by subject or tenant made at `now`: it covers the
    /// leeway, since a token stamped up to the leeway ahead (a replica or provider
    /// whose clock is fast) is accepted, and may have been issued before `now`.
    pub(super) fn cut_off(&self, now: u64) -> u64 {
        now.saturating_add(self.leeway.as_secs())
    }

    /// The last second a revocation made at `now` can apply to a token: one issued by
    /// its cut-off (`now + leeway`), living at most [`token_life`](Self::token_life)
    /// and accepted `leeway` past its `exp`.
    pub(super) fn kept_until(&self, now: u64) -> u64 {
        self.cut_off(now)
            .saturating_add(self.token_life())
            .saturating_add(self.leeway.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DAY: u64 = 24 * 3600;

    fn config() -> SessionConfig {
        SessionConfig::new("https://auth.test", "api")
    }

    fn tenant(c: &SessionConfig, claims: Value) -> Result<Option<String>, SessionError> {
        let claims = claims.as_object().unwrap().clone();
        c.tenant_named(&claims).map(|t| t.map(str::to_owned))
    }

    #[test]
    fn the_defaults_are_those_documented() {
        let c = config();
        assert_eq!(c.issuer, "https://auth.test");
        assert_eq!(c.audiences, ["api"]);
        assert_eq!(c.access_ttl, Duration::from_secs(15 * 60));
        assert_eq!(c.refresh_ttl, Duration::from_secs(30 * DAY));
        assert_eq!(c.leeway, Duration::from_secs(30));
        assert_eq!(c.refresh_grace, Duration::from_secs(30));
        assert_eq!(c.tenant_claim, "tenant_id");
        assert!(c.require_tenant && c.require_jti);
        assert_eq!((c.tenant_from.clone(), c.roles_claim.clone()), (None, None));
        assert_eq!(c.verified_cache, 10_000);
        assert!(!c.clock.is_fake());
        assert_eq!(c.token_life(), 30 * DAY, "the refresh TTL");
    }

    #[test]
    fn an_empty_audience_list_keeps_the_audiences() {
        let c = config().audiences(Vec::<String>::new());
        assert_eq!(c.audiences, ["api"]);
        let c = c.audiences(["a", "b"]);
        assert_eq!(c.audiences, ["a", "b"], "the list replaces the first");
    }

    #[test]
    fn a_token_lives_at_most_the_longest_of_its_limits() {
        let secs = Duration::from_secs;
        let c = config().access_ttl(secs(60)).refresh_ttl(secs(120));
        assert_eq!(c.token_life(), 120, "never less than the refresh TTL");
        assert_eq!(c.clone().max_token_life(secs(90)).token_life(), 120);
        assert_eq!(c.clone().max_token_life(secs(DAY)).token_life(), DAY);
        let c = c.access_ttl(secs(200));
        assert_eq!(c.token_life(), 200, "nor than the access TTL");
    }

    #[test]
    fn revocations_are_kept_past_the_last_token_they_can_cover() {
        let secs = Duration::from_secs;
        let c = config()
            .leeway(secs(10))
            .access_ttl(secs(60))
            .refresh_ttl(secs(100));
        assert_eq!(
            c.cut_off(1_000),
            1_010,
            "a token stamped within the leeway ahead"
        );
        // Issued at the cut-off, living 100 s, accepted 10 s past its `exp`.
        assert_eq!(c.kept_until(1_000), 1_120);
        assert_eq!(c.cut_off(u64::MAX - 5), u64::MAX, "saturates");
        assert_eq!(c.kept_until(u64::MAX - 5), u64::MAX);
        let none = c.leeway(Duration::ZERO);
        assert_eq!(
            (none.cut_off(1_000), none.kept_until(1_000)),
            (1_000, 1_100)
        );
    }

    #[test]
    fn the_tenant_claim_must_be_a_string() {
        let c = config();
        assert_eq!(
            tenant(&c, json!({"tenant_id": "acme"})).unwrap().as_deref(),
            Some("acme")
        );
        assert_eq!(tenant(&c, json!({"org": "acme"})).unwrap(), None);
        for value in [
            json!(1),
            json!(["acme"]),
            json!({"id": "acme"}),
            json!(null),
        ] {
            assert!(
                matches!(
                    tenant(&c, json!({"tenant_id": value.clone()})),
                    Err(SessionError::Invalid(why)) if why == "a claim that must be a string is not"
                ),
                "{value}"
            );
        }
        let org = c.tenant_claim("org");
        assert_eq!(
            tenant(&org, json!({"org": "acme"})).unwrap().as_deref(),
            Some("acme")
        );
        assert_eq!(tenant(&org, json!({"tenant_id": "acme"})).unwrap(), None);
    }

    #[test]
    fn tenant_from_replaces_the_tenant_claim_when_reading() {
        let c = config().tenant_from(TenantFrom::claim_path(["org", "id"]));
        assert_eq!(
            tenant(&c, json!({"org": {"id": "globex"}, "tenant_id": "acme"}))
                .unwrap()
                .as_deref(),
            Some("globex")
        );
        assert_eq!(tenant(&c, json!({"tenant_id": "acme"})).unwrap(), None);
        assert!(
            matches!(
                tenant(&c, json!({"org": {"id": 7}})),
                Err(SessionError::Invalid(why)) if why == "the tenant claim is not a string"
            ),
            "the path's own refusal"
        );
        assert_eq!(c.tenant_claim, "tenant_id", "issued tokens still carry it");
    }
}
