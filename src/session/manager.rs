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
    keys::{install_crypto, Key, KeyError, KeySet, SUPPORTED},
    now, InMemoryRevocations, Principal, Revocation, RevocationError, RevocationStore, TokenFacts,
};
use crate::core::{TenantId, TenantIdRule};

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
    audience: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    leeway: Duration,
    tenant_claim: String,
    id_rule: TenantIdRule,
    require_tenant: bool,
    verified_cache: usize,
}

impl SessionConfig {
    /// Tokens issued by `issuer` for `audience`; 15-minute access tokens, 30-day
    /// refresh tokens, 30 s leeway for clock skew, the tenant in the `tenant_id` claim.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            leeway: Duration::from_secs(30),
            tenant_claim: "tenant_id".into(),
            id_rule: TenantIdRule::Default,
            require_tenant: true,
            verified_cache: 10_000,
        }
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

    /// The longest any token lives: how long revocations must be kept.
    fn max_life(&self) -> u64 {
        self.access_ttl.max(self.refresh_ttl).as_secs() + self.leeway.as_secs()
    }
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

/// Why a session operation failed. Everything but [`Store`](Self::Store) answers
/// `401 unauthenticated`; the reason is for logs only.
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

    /// The granted scopes: `scope` (space-separated) or `scp` (an array).
    fn scopes(&self) -> Vec<String> {
        match self.claims.get("scope").or_else(|| self.claims.get("scp")) {
            Some(Value::String(s)) => s
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn into_principal(self) -> Principal {
        let scopes = self.scopes();
        let mut p = Principal::new(self.subject)
            .with_scopes(scopes)
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
    map: DashMap<Box<str>, (Arc<KeySet>, Arc<Checked>), foldhash::fast::RandomState>,
    max: usize,
}

impl TokenCache {
    fn new(max: usize) -> Self {
        Self {
            map: DashMap::default(),
            max,
        }
    }
}

/// One `Validation` per algorithm, built once: `iss`, `aud`, `exp`, `nbf` and the
/// leeway come from the configuration, which never changes.
fn validations(c: &SessionConfig) -> Vec<(Algorithm, Validation)> {
    SUPPORTED
        .iter()
        .map(|&alg| {
            let mut v = Validation::new(alg);
            v.leeway = c.leeway.as_secs();
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v.set_issuer(&[&c.issuer]);
            v.set_audience(&[&c.audience]);
            (alg, v)
        })
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
/// assert!(sessions.refresh(&pair.refresh_token).await.is_err(), "used once");
/// assert!(sessions.verify(&next.access_token).await.is_err(), "theft: family revoked");
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
        install_crypto();
        Self {
            inner: Arc::new(Inner {
                cache: TokenCache::new(config.verified_cache),
                validations: validations(&config),
                config,
                keys: ArcSwap::from_pointee(keys),
                store: Arc::new(InMemoryRevocations::new()),
            }),
        }
    }

    /// Keeps revocations in `store` (e.g. [`RedisRevocations`](super::RedisRevocations)
    /// so every replica sees them).
    pub fn with_store(self, store: impl RevocationStore) -> Self {
        let inner = Inner {
            config: self.inner.config.clone(),
            validations: self.inner.validations.clone(),
            keys: ArcSwap::new(self.inner.keys.load_full()),
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
        self.pair(tenant, subject, &grant.scopes, grant.extra, &family)
    }

    fn pair(
        &self,
        tenant: &TenantId,
        subject: &str,
        scopes: &[String],
        extra: Map<String, Value>,
        family: &str,
    ) -> Result<TokenPair, SessionError> {
        let c = &self.inner.config;
        let access = self.sign(tenant, subject, scopes, extra.clone(), family, Use::Access)?;
        let refresh = self.sign(tenant, subject, scopes, extra, family, Use::Refresh)?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: refresh,
            token_type: "Bearer",
            expires_in: c.access_ttl.as_secs(),
        })
    }

    fn sign(
        &self,
        tenant: &TenantId,
        subject: &str,
        scopes: &[String],
        mut claims: Map<String, Value>,
        family: &str,
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
        let now = now();
        let ttl = match usage {
            Use::Access => c.access_ttl,
            Use::Refresh => c.refresh_ttl,
        };
        if !scopes.is_empty() {
            claims.insert("scope".into(), scopes.join(" ").into());
        }
        for (name, value) in [
            ("iss", Value::from(c.issuer.as_str())),
            ("aud", c.audience.as_str().into()),
            ("sub", subject.into()),
            (c.tenant_claim.as_str(), tenant.as_str().into()),
            ("iat", now.into()),
            ("nbf", now.into()),
            ("exp", (now + ttl.as_secs()).into()),
            ("jti", random_id()?.into()),
            (FAMILY, family.into()),
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

    /// Checks an access token's signature and claims (no revocation): the part that
    /// never waits. A token verified before and not yet expired comes from the cache.
    pub(crate) fn check(&self, token: &str) -> Result<Arc<Checked>, SessionError> {
        let cache = &self.inner.cache;
        let keys = self.inner.keys.load();
        if cache.max == 0 || token.len() > MAX_TOKEN_LEN {
            return self
                .check_as(token, Use::Access, &keys)
                .map(|v| Arc::new(v.into()));
        }
        let now = now();
        let leeway = self.inner.config.leeway.as_secs();
        if let Some(hit) = cache.map.get(token) {
            let (verified_by, checked) = &*hit;
            if Arc::ptr_eq(verified_by, &keys) && checked.expires_at.saturating_add(leeway) >= now {
                return Ok(Arc::clone(checked));
            }
        }
        // A miss: the entry keeps the set that verified it.
        let keys = arc_swap::Guard::into_inner(keys);
        let checked: Arc<Checked> = Arc::new(self.check_as(token, Use::Access, &keys)?.into());
        if cache.map.len() >= cache.max {
            cache.map.retain(|_, (verified_by, c)| {
                Arc::ptr_eq(verified_by, &keys) && c.expires_at.saturating_add(leeway) >= now
            });
        }
        if cache.map.len() < cache.max {
            cache.map.insert(token.into(), (keys, Arc::clone(&checked)));
        }
        Ok(checked)
    }

    fn check_as(&self, token: &str, want: Use, keys: &KeySet) -> Result<Verified, SessionError> {
        let c = &self.inner.config;
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("the token is too large"));
        }
        if token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(invalid("a JWT has three parts"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token header"))?;
        let key = keys.verifier(&header).map_err(invalid)?;
        let (_, v) = self
            .inner
            .validations
            .iter()
            .find(|(alg, _)| *alg == key.algorithm())
            .ok_or(invalid("the key's algorithm is not supported"))?;
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
        let expires_at = number("exp")?.ok_or(invalid("no exp"))?;
        let issued_at = number("iat")?;
        // A token "issued" in the future would outlive every revocation by tenant or
        // subject (those revoke what was issued before a cut-off): refuse it.
        if issued_at.is_some_and(|iat| iat > now().saturating_add(c.leeway.as_secs())) {
            return Err(invalid("issued in the future"));
        }
        number("nbf")?;
        if text("iss")? != Some(c.issuer.as_str()) {
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
        let tenant = match text(&c.tenant_claim)? {
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
        let family = text(FAMILY)?.map(str::to_owned);
        if usage == Use::Refresh && (jti.is_none() || family.is_none() || tenant.is_none()) {
            return Err(invalid("a refresh token needs jti, fam and a tenant"));
        }
        Ok(Verified {
            subject: subject.to_owned(),
            tenant,
            jti,
            family,
            issued_at,
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
        let checked = self.check(token)?;
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
    /// refresh token is used up. Presenting a used one again is treated as theft: the
    /// whole family (every token issued from that login) is revoked.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, SessionError> {
        let v = self.check_as(refresh_token, Use::Refresh, &self.inner.keys.load())?;
        self.not_revoked(&v.facts()).await?;
        let (Some(jti), Some(family), Some(tenant)) = (&v.jti, &v.family, &v.tenant) else {
            return Err(invalid("a refresh token needs jti, fam and a tenant"));
        };
        let until = v.expires_at + self.inner.config.leeway.as_secs();
        let first = self
            .inner
            .store
            .consume(jti, until)
            .await
            .map_err(SessionError::Store)?;
        if !first {
            self.record(Revocation::Family(family)).await?;
            tracing::warn!(
                target: "actix_tenancy::session",
                tenant = tenant.as_str(),
                "a used refresh token was presented again: its token family is revoked"
            );
            return Err(SessionError::RefreshReused);
        }
        let scopes = v.scopes();
        let extra = v
            .claims
            .iter()
            .filter(|(k, _)| !is_session_claim(k, &self.inner.config.tenant_claim))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.pair(tenant, &v.subject, &scopes, extra, family)
    }

    /// Records `what` for as long as any token it could apply to may live.
    async fn record(&self, what: Revocation<'_>) -> Result<(), SessionError> {
        let until = now() + self.inner.config.max_life();
        self.inner
            .store
            .revoke(what, until)
            .await
            .map_err(SessionError::Store)
    }

    /// Revokes one token by `jti`.
    pub async fn revoke(&self, jti: &str) -> Result<(), SessionError> {
        self.record(Revocation::Token(jti)).await
    }

    /// Revokes every token of `subject` in `tenant` issued until now (tokens issued
    /// within the same second are revoked too: the cut-off fails closed).
    pub async fn revoke_subject(
        &self,
        tenant: &TenantId,
        subject: &str,
    ) -> Result<(), SessionError> {
        self.record(Revocation::Subject {
            tenant: tenant.as_str(),
            subject,
            before: now(),
        })
        .await
    }

    /// Revokes every token of `tenant` issued until now, e.g. when it is suspended.
    pub async fn revoke_tenant(&self, tenant: &TenantId) -> Result<(), SessionError> {
        self.record(Revocation::Tenant {
            tenant: tenant.as_str(),
            before: now(),
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
