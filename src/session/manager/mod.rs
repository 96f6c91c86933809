//! Issuing, verifying, refreshing and revoking tenant sessions.

use std::{
    borrow::Cow,
    fmt,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    keys::{install_crypto, Key, KeyError, KeySet, NoKey, SUPPORTED},
    Consumed, InMemoryRevocations, Principal, Revocation, RevocationError, RevocationStore,
    TokenFacts,
};
use crate::core::{error::ConfigError, Clock, TenantId, TenantIdRule};

/// The longest token accepted, in bytes; longer ones are rejected before parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The claim that tells access and refresh tokens apart.
const TOKEN_USE: &str = "token_use";
/// The claim naming a token's refresh family.
const FAMILY: &str = "fam";

/// How sessions are issued and checked.
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionConfig {
    issuer: String,
    audiences: Vec<String>,
    access_ttl: Duration,
    refresh_ttl: Duration,
    leeway: Duration,
    tenant_claim: String,
    id_rule: TenantIdRule,
    require_tenant: bool,
    require_jti: bool,
    tenant_from: Option<TenantFrom>,
    roles_claim: Option<Vec<String>>,
    verified_cache: usize,
    max_token_life: Duration,
    refresh_grace: Duration,
    clock: Clock,
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
    /// [`testing::FakeClock`](crate::testing::FakeClock), a test lets a token expire
    /// without sleeping. A remote key set's fetch schedule and a revocation store's own
    /// expiry keep their clocks (give [`InMemoryRevocations`](super::InMemoryRevocations)
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
    /// cannot be revoked on its own: [`SessionManager::logout`] would have to revoke
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
    /// use actix_tenancy::session::SessionConfig;
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
    fn tenant_named<'a>(
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
    fn token_life(&self) -> u64 {
        self.max_token_life
            .max(self.access_ttl)
            .max(self.refresh_ttl)
            .as_secs()
    }

    /// The cut-off of a revocation by subject or tenant made at `now`: it covers the
    /// leeway, since a token stamped up to the leeway ahead (a replica or provider
    /// whose clock is fast) is accepted, and may have been issued before `now`.
    fn cut_off(&self, now: u64) -> u64 {
        now.saturating_add(self.leeway.as_secs())
    }

    /// The last second a revocation made at `now` can apply to a token: one issued by
    /// its cut-off (`now + leeway`), living at most [`token_life`](Self::token_life)
    /// and accepted `leeway` past its `exp`.
    fn kept_until(&self, now: u64) -> u64 {
        self.cut_off(now)
            .saturating_add(self.token_life())
            .saturating_add(self.leeway.as_secs())
    }
}

/// Where a verified token names its tenant.
///
/// | provider | tenant | `TenantFrom` |
/// | --- | --- | --- |
/// | Auth0 (Organizations) | `org_id` | `TenantFrom::claim("org_id")` |
/// | Microsoft Entra ID | `tid` (the directory) | `TenantFrom::claim("tid")` |
/// | Keycloak, a realm per tenant | the realm in `iss` | `TenantFrom::issuer_pattern("https://sso.example.com/realms/{tenant}")` |
/// | a namespaced custom claim | `{"https://example.com/claims": {"tenant": ..}}` | `TenantFrom::claim_path(["https://example.com/claims", "tenant"])` |
///
/// The value then passes the configuration's [`TenantIdRule`] like any other source.
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
fn at_path<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
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
fn words(value: &Value) -> Option<Vec<String>> {
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

/// Why a session operation failed. The [`JwtAuth`](super::JwtAuth) stage answers
/// `401 unauthenticated` for most, `503 auth_unavailable` for
/// [`Store`](Self::Store) and [`Unavailable`](Self::Unavailable), `403
/// tenant_forbidden` for [`Conflict`](Self::Conflict),
/// [`OtherAudience`](Self::OtherAudience) and [`Unbound`](Self::Unbound); the reason
/// is for logs only.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SessionError {
    /// The token is malformed, wrongly signed, expired, not yet valid, for another
    /// issuer or audience, of the wrong type, or too large.
    Invalid(Cow<'static, str>),
    /// The token was revoked.
    Revoked,
    /// A refresh token was presented twice: its family is now revoked.
    RefreshReused,
    /// The revocation store could not answer; fails closed (`503 auth_unavailable`).
    Store(RevocationError),
    /// A valid token (signature, audience, expiry, claims) from an identity provider
    /// trusted for some tenant names a tenant bound to another provider. Answered
    /// `403 tenant_forbidden`, as an unknown or suspended tenant is (a token holder
    /// must not learn which ids are tenants); audited with this reason.
    Conflict,
    /// A token from the identity provider of the tenant it names, valid for an
    /// audience of another tenant bound to that provider but not for the named
    /// tenant's. Answered `403 tenant_forbidden`, as an unknown or suspended tenant
    /// is; audited with this reason.
    OtherAudience,
    /// A valid token from an identity provider trusted for some tenant names a
    /// tenant bound to no provider: an id no tenant has, or a tenant without a
    /// binding. Answered `403 tenant_forbidden`, the same as an unknown or suspended
    /// tenant; audited with this reason.
    Unbound,
    /// No keys are held to verify with (the identity provider has not answered yet);
    /// fails closed (`503 auth_unavailable`).
    Unavailable(Cow<'static, str>),
    /// No key can sign, or signing failed.
    Key(KeyError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(why) => write!(f, "invalid token: {why}"),
            Self::Revoked => f.write_str("token revoked"),
            Self::RefreshReused => f.write_str("refresh token reused: its whole family is revoked"),
            Self::Store(e) => e.fmt(f),
            Self::Conflict => f.write_str(
                "the token's issuer is not the identity provider of the tenant it names",
            ),
            Self::OtherAudience => f.write_str(
                "the token is for an audience of its identity provider that the tenant it names does not accept",
            ),
            Self::Unbound => f.write_str(
                "the token names a tenant bound to no identity provider (unknown, or without a binding)",
            ),
            Self::Unavailable(why) => write!(f, "no keys to verify with: {why}"),
            Self::Key(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SessionError {}

fn invalid(why: &'static str) -> SessionError {
    SessionError::Invalid(Cow::Borrowed(why))
}

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Access,
    Refresh,
}

/// A token whose signature and claims checked out; revocation is checked next.
#[derive(Debug)]
pub(crate) struct Verified {
    claims: Map<String, Value>,
    roles: Vec<String>,
    subject: String,
    tenant: Option<TenantId>,
    jti: Option<String>,
    family: Option<String>,
    issued_at: Option<u64>,
    expires_at: u64,
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
    fn scopes(&self) -> Vec<String> {
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
    principal: Principal,
    family: Option<String>,
    issued_at: Option<u64>,
    expires_at: u64,
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

/// Verified access tokens by their exact bytes, until they expire: a token seen again
/// skips the signature and the claims parse. Each entry remembers the key set that
/// verified it and is only used while that set is the current one, so a token checked
/// while a key was being retired can never outlive the key.
struct TokenCache {
    /// By the token's exact bytes (a hit needs no parsing, not even of its characters).
    map: DashMap<Box<[u8]>, (VerifiedBy, Arc<Checked>), TailHash>,
    max: usize,
}

/// Hashes a token by its length and its last 32 bytes, the end of its signature: a
/// lookup hashes 32 bytes instead of the whole token (about 220), and equality still
/// compares every byte. Only verified tokens are stored, whose signatures are the
/// issuer's and cannot be chosen, so their ends do not collide by design; a client
/// sending tokens that all end alike only makes its own lookups miss.
#[derive(Clone, Default)]
struct TailHash(foldhash::fast::RandomState);

/// [`TailHash`]'s hasher.
struct TailHasher(foldhash::fast::FoldHasher<'static>);

/// How much of a token's end is hashed.
const HASHED_TAIL: usize = 32;

impl std::hash::BuildHasher for TailHash {
    type Hasher = TailHasher;

    #[inline]
    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

impl std::hash::Hasher for TailHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0
            .write(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..]);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0.write_usize(n);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// The key set a cached token was verified by, and where that set is held: the
/// entry is used only while that set is still the one held there.
#[derive(Clone)]
struct VerifiedBy {
    keys: Arc<KeySet>,
    #[cfg(feature = "oidc")]
    remote: Option<super::oidc::RemoteKeys>,
    /// Per-tenant providers: the binding the token was checked against, which must
    /// still be the tenant's.
    #[cfg(feature = "oidc")]
    binding: Option<Arc<super::oidc::Binding>>,
}

/// Whose keys verify tokens.
enum Trust {
    /// The manager's own key set.
    Own,
    /// One identity provider's remote key set.
    #[cfg(feature = "oidc")]
    Remote(super::oidc::RemoteKeys),
    /// Each tenant's own provider.
    #[cfg(feature = "oidc")]
    Tenants(Arc<super::oidc::TenantIssuers>),
}

/// A token check: done, or waiting for a provider's keys.
pub(crate) enum Check {
    Ready(Result<Arc<Checked>, SessionError>),
    #[cfg(feature = "oidc")]
    Wait(futures_util::future::BoxFuture<'static, Result<Arc<Checked>, SessionError>>),
}

impl TokenCache {
    fn new(max: usize) -> Self {
        Self {
            map: DashMap::default(),
            max,
        }
    }
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

/// The key set that can verify a token with `header`: the one held, unless it does
/// not know the token's `kid` (or none is held yet); then one refetch, joined by every
/// request that needs it and at most one per cooldown.
#[cfg(feature = "oidc")]
async fn keys_for(
    remote: &super::oidc::RemoteKeys,
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
fn validations(c: &SessionConfig) -> Vec<(Algorithm, Validation)> {
    let expect = Expect {
        issuer: &c.issuer,
        audiences: &c.audiences,
    };
    SUPPORTED
        .iter()
        .map(|&alg| (alg, validation(alg, c, &expect)))
        .collect()
}

/// Issues, verifies, refreshes and revokes JWT-backed tenant sessions.
///
/// Clones share keys and store. Access tokens carry `iss`, `aud`, `sub`, the tenant
/// claim, `exp`, `nbf`, `iat`, a random `jti`, the refresh family (`fam`), and
/// `token_use: "access"`; refresh tokens say `token_use: "refresh"` and are accepted
/// only by [`refresh`](Self::refresh). A token from another issuer without
/// `token_use` counts as an access token.
///
/// ```
/// use std::time::Duration;
/// use actix_tenancy::session::{Grant, Key, KeySet, SessionConfig, SessionManager};
/// use actix_tenancy::TenantId;
/// use jsonwebtoken::Algorithm;
///
/// # actix_web::rt::System::new().block_on(async {
/// let key = Key::hmac("k1", Algorithm::HS256, b"a secret of at least thirty-two bytes!").unwrap();
/// let sessions = SessionManager::new(
///     SessionConfig::new("https://auth.example.com", "api"),
///     KeySet::signing(key).unwrap(),
/// );
/// let acme = TenantId::parse("acme").unwrap();
/// let pair = sessions.issue(&acme, "user-42", Grant::new().scopes(["reports:read"])).unwrap();
/// let principal = sessions.verify(&pair.access_token).await.unwrap();
/// assert_eq!(principal.tenant(), Some(&acme));
/// assert!(sessions.verify(&pair.refresh_token).await.is_err(), "not an access token");
///
/// let next = sessions.refresh(&pair.refresh_token).await.unwrap();
/// // Presented again within the grace (a retry whose answer was lost): the same pair.
/// let again = sessions.refresh(&pair.refresh_token).await.unwrap();
/// assert_eq!(again.refresh_token, next.refresh_token);
///
/// // Outside the grace (here none), a used refresh token again is theft.
/// let strict = SessionManager::new(
///     SessionConfig::new("https://auth.example.com", "api").refresh_grace(Duration::ZERO),
///     sessions.keys().as_ref().clone(),
/// );
/// let pair = strict.issue(&acme, "user-42", Grant::new()).unwrap();
/// let next = strict.refresh(&pair.refresh_token).await.unwrap();
/// assert!(strict.refresh(&pair.refresh_token).await.is_err(), "used once");
/// assert!(strict.verify(&next.access_token).await.is_err(), "theft: family revoked");
/// # });
/// ```
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: SessionConfig,
    validations: Vec<(Algorithm, Validation)>,
    keys: ArcSwap<KeySet>,
    trust: Trust,
    store: Arc<dyn RevocationStore>,
    cache: TokenCache,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("config", &self.inner.config)
            .field("keys", &**self.inner.keys.load())
            .finish_non_exhaustive()
    }
}

/// When a pair is issued and the `jti`s of its two tokens: new at a login, and at a
/// refresh recorded in the used token's mark, so that a retry whose answer was lost
/// gets the same pair. The mark holds no token and nothing secret: only the time and
/// the two ids, from which the signing key (and only it) makes the pair again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rotation {
    at: u64,
    access: String,
    refresh: String,
}

/// The version tag of a rotation mark.
const MARK: &str = "r1";

impl Rotation {
    fn new(at: u64) -> Result<Self, SessionError> {
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

fn random_id() -> Result<String, SessionError> {
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
    /// Sessions with `keys`, revocations kept in memory.
    pub fn new(config: SessionConfig, keys: KeySet) -> Self {
        Self::with_trust(config, keys, Trust::Own)
    }

    fn with_trust(config: SessionConfig, keys: KeySet, trust: Trust) -> Self {
        install_crypto();
        Self {
            inner: Arc::new(Inner {
                cache: TokenCache::new(config.verified_cache),
                validations: validations(&config),
                store: Arc::new(InMemoryRevocations::new().with_clock(config.clock.clone())),
                config,
                keys: ArcSwap::from_pointee(keys),
                trust,
            }),
        }
    }

    /// Verifies the tokens of one identity provider, with its [`RemoteKeys`]
    /// (feature `oidc`); issues none. Tokens must carry the configuration's issuer
    /// and one of its audiences. Keys found by discovery must be the configuration's
    /// issuer's, or this is [`ConfigError::IssuerMismatch`].
    ///
    /// [`RemoteKeys`]: super::oidc::RemoteKeys
    #[cfg(feature = "oidc")]
    pub fn remote(
        config: SessionConfig,
        keys: super::oidc::RemoteKeys,
    ) -> Result<Self, ConfigError> {
        if let Some(found) = keys.issuer_name() {
            if found != config.issuer {
                return Err(ConfigError::IssuerMismatch {
                    configured: config.issuer.clone(),
                    keys: found.to_owned(),
                });
            }
        }
        Ok(Self::with_trust(
            config,
            KeySet::verify_only(),
            Trust::Remote(keys),
        ))
    }

    /// Verifies tokens of each tenant's own identity provider (feature `oidc`);
    /// issues none. The configuration's issuer is not used; its audiences are, for
    /// tenants whose [`Binding`](super::oidc::Binding) names none.
    ///
    /// Takes the [`TenantIssuers`](super::oidc::TenantIssuers) or an `Arc` of it: keep
    /// a clone of the `Arc` to call
    /// [`refresh_all_now`](super::oidc::TenantIssuers::refresh_all_now) later.
    #[cfg(feature = "oidc")]
    pub fn tenant_issuers(
        config: SessionConfig,
        issuers: impl Into<Arc<super::oidc::TenantIssuers>>,
    ) -> Self {
        Self::with_trust(
            config,
            KeySet::verify_only(),
            Trust::Tenants(issuers.into()),
        )
    }

    /// Keeps revocations in `store` (e.g. [`RedisRevocations`](super::RedisRevocations)
    /// so every replica sees them).
    pub fn with_store(self, store: impl RevocationStore) -> Self {
        let inner = Inner {
            config: self.inner.config.clone(),
            validations: self.inner.validations.clone(),
            keys: ArcSwap::new(self.inner.keys.load_full()),
            trust: match &self.inner.trust {
                Trust::Own => Trust::Own,
                #[cfg(feature = "oidc")]
                Trust::Remote(r) => Trust::Remote(r.clone()),
                #[cfg(feature = "oidc")]
                Trust::Tenants(t) => Trust::Tenants(Arc::clone(t)),
            },
            store: Arc::new(store),
            cache: TokenCache::new(self.inner.config.verified_cache),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// The keys in use now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.inner.keys.load_full()
    }

    /// Replaces the keys (e.g. `keys().as_ref().clone().rotate(new)?`), at once for
    /// every clone of this manager.
    pub fn set_keys(&self, keys: KeySet) {
        self.inner.keys.store(Arc::new(keys));
        // Entries of the old set are never used again (see `TokenCache`): free them.
        self.inner.cache.map.clear();
    }

    /// Signs with a new key; the old signing key keeps verifying until
    /// [`retire`](Self::retire)d.
    pub fn rotate(&self, key: Key) -> Result<(), KeyError> {
        let keys = self.keys().as_ref().clone().rotate(key)?;
        self.set_keys(keys);
        Ok(())
    }

    /// Drops a key: tokens it signed stop verifying.
    pub fn retire(&self, kid: &str) -> Result<(), KeyError> {
        let keys = self.keys().as_ref().clone().retire(kid)?;
        self.set_keys(keys);
        Ok(())
    }

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
    fn pair(
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

    /// A cached check of `token`, if it is still good: not expired, verified by the
    /// key set still held, and (per-tenant providers) its issuer still the tenant's.
    ///
    /// By the exact bytes: a token seen and verified before needs no other check, not
    /// even of its characters, so the stage asks this first with the header's bytes.
    pub(crate) fn cached(&self, token: &[u8]) -> Option<Arc<Checked>> {
        let cache = &self.inner.cache;
        if cache.max == 0 || token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let now = self.now();
        let leeway = self.inner.config.leeway.as_secs();
        let hit = cache.map.get(token)?;
        let (by, checked) = &*hit;
        if checked.expires_at.saturating_add(leeway) < now || !self.still_held(by) {
            return None;
        }
        let checked = Arc::clone(checked);
        #[cfg(feature = "oidc")]
        {
            // Out of the map's guard before the registry runs.
            let binding = by.binding.clone();
            drop(hit);
            if let (Trust::Tenants(t), Some(binding)) = (&self.inner.trust, binding) {
                let tenant = checked.principal.tenant()?;
                if t.still_bound(tenant, &binding) != Some(true) {
                    return None;
                }
            }
        }
        Some(checked)
    }

    /// Now, in unix seconds, on the sessions' clock.
    fn now(&self) -> u64 {
        self.inner.config.clock.unix_secs()
    }

    /// Whether the key set that verified a cached token is still the one in use (a
    /// remote set's schedule runs on the system's time, whatever the sessions' clock).
    fn still_held(&self, by: &VerifiedBy) -> bool {
        #[cfg(feature = "oidc")]
        if let Some(remote) = &by.remote {
            return remote
                .keys_at(super::now())
                .is_some_and(|k| Arc::ptr_eq(&k, &by.keys));
        }
        Arc::ptr_eq(&self.inner.keys.load(), &by.keys)
    }

    /// Caches a verified token (when there is room after dropping stale entries).
    fn remember(&self, token: &str, by: VerifiedBy, v: Verified) -> Arc<Checked> {
        let checked = Arc::new(Checked::from(v));
        let cache = &self.inner.cache;
        if cache.max == 0 || token.len() > MAX_TOKEN_LEN {
            return checked;
        }
        if cache.map.len() >= cache.max {
            let (now, leeway) = (self.now(), self.inner.config.leeway.as_secs());
            cache.map.retain(|_, (by, c)| {
                self.still_held(by) && c.expires_at.saturating_add(leeway) >= now
            });
        }
        if cache.map.len() < cache.max {
            cache
                .map
                .insert(token.as_bytes().into(), (by, Arc::clone(&checked)));
        }
        checked
    }

    /// The check of a token whose keys are remote.
    #[cfg(feature = "oidc")]
    async fn check_remote(&self, token: &str) -> Result<Arc<Checked>, SessionError> {
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
        issuers: &super::oidc::TenantIssuers,
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
        issuers: &super::oidc::TenantIssuers,
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
    fn audiences_of(&self, trusted: super::oidc::Trusted) -> Vec<String> {
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
        issuers: &super::oidc::TenantIssuers,
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

    fn check_as(
        &self,
        token: &str,
        want: Use,
        keys: &KeySet,
        expect: Option<&Expect<'_>>,
    ) -> Result<Verified, SessionError> {
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
        let claims = data.claims;

        // Type every claim this crate relies on, whatever the library accepted.
        let number = |name: &'static str| -> Result<Option<u64>, SessionError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or(invalid("a time claim is not a whole number")),
            }
        };
        let text = |name: &str| -> Result<Option<&str>, SessionError> {
            match claims.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(invalid("a claim that must be a string is not")),
            }
        };
        let (now, leeway) = (c.clock.unix_secs(), c.leeway.as_secs());
        let expires_at = number("exp")?.ok_or(invalid("no exp"))?;
        if expires_at.saturating_add(leeway) < now {
            return Err(invalid("expired"));
        }
        if number("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(invalid("not yet valid"));
        }
        // A revocation is kept for the longest life a token may have: a token whose
        // life is unknown (no `iat`) or longer would outlive it.
        let issued_at = number("iat")?.ok_or(invalid("no iat: the token's life is unknown"))?;
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
        if text("iss")? != Some(issuer) {
            return Err(invalid("wrong issuer"));
        }
        let subject = text("sub")?
            .filter(|s| !s.is_empty())
            .ok_or(invalid("no subject"))?;
        let usage = match text(TOKEN_USE)? {
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
        let named = c.tenant_named(&claims)?;
        let tenant = match named {
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
        let jti = text("jti")?.map(str::to_owned);
        if jti.is_none() && c.require_jti {
            return Err(invalid(
                "the token has no jti, so it could not be revoked alone",
            ));
        }
        let family = text(FAMILY)?.map(str::to_owned);
        let roles = match c.roles_claim.as_deref().and_then(|p| at_path(&claims, p)) {
            None => Vec::new(),
            Some(v) => {
                words(v).ok_or(invalid("the roles claim is neither a string nor an array"))?
            }
        };
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

    pub(crate) fn store(&self) -> &dyn RevocationStore {
        &*self.inner.store
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

    /// Exchanges a refresh token for a new pair of the same family; the presented
    /// refresh token is used up, and its used mark records this rotation.
    ///
    /// Presenting it again within the [`refresh_grace`](SessionConfig::refresh_grace)
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
    /// [`require_jti(false)`](SessionConfig::require_jti)), every token of its subject
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
    /// [`max_token_life`](SessionConfig::max_token_life)).
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
    /// (see [`max_token_life`](SessionConfig::max_token_life)).
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

fn is_session_claim(name: &str, tenant_claim: &str) -> bool {
    name == tenant_claim
        || matches!(
            name,
            "iss" | "aud" | "sub" | "iat" | "nbf" | "exp" | "jti" | "scope" | FAMILY | TOKEN_USE
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_their_bytes_though_hashed_by_their_end() {
        let map: DashMap<Box<[u8]>, u32, TailHash> = DashMap::default();
        let tail = "x".repeat(HASHED_TAIL);
        let (a, b) = (format!("aaaa.{tail}"), format!("bbbb.{tail}"));
        map.insert(a.as_bytes().into(), 1);
        map.insert(b.as_bytes().into(), 2);
        assert_eq!(map.len(), 2, "the same end, two tokens");
        assert_eq!(*map.get(a.as_bytes()).unwrap(), 1);
        assert_eq!(*map.get(b.as_bytes()).unwrap(), 2);
        assert!(map.get(format!("cccc.{tail}").as_bytes()).is_none());
        assert!(map.get(&b"short"[..]).is_none());
        map.insert(b"short".to_vec().into(), 3);
        assert_eq!(*map.get(&b"short"[..]).unwrap(), 3);
    }
}
