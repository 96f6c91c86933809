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
    session::{
        keys::{KeySet, NoKey, SUPPORTED},
        Principal, TokenFacts,
    },
    TenantId,
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{
        super::{
            testkit::{
                acme, claims, config, mint, reason, sessions, Recorder, AUD, ISS, SECRET, T0,
            },
            TenantFrom,
        },
        *,
    };

    /// `check_as` of `token` for `want` against the configuration, with the
    /// manager's own keys.
    fn check(s: &SessionManager, token: &str, want: Use) -> Result<Verified, SessionError> {
        s.check_as(token, want, &s.keys(), None)
    }

    /// The reason an access token of `claims` (patched) is refused by `s`.
    fn refused(s: &SessionManager, patch: Value) -> String {
        reason(check(s, &mint(&claims(patch)), Use::Access))
    }

    fn accepted(s: &SessionManager, patch: Value) -> Verified {
        let token = mint(&claims(patch.clone()));
        check(s, &token, Use::Access).unwrap_or_else(|e| panic!("{patch}: {e}"))
    }

    #[test]
    fn a_good_token_gives_its_facts_and_its_principal() {
        let (s, _) = sessions(config());
        let v = accepted(&s, json!({"scope": "a b", "name": "Ada"}));
        assert_eq!(v.subject, "u1");
        assert_eq!(v.tenant, Some(acme()));
        assert_eq!(v.jti.as_deref(), Some("j1"));
        assert_eq!(v.family, None, "a token of another issuer has no family");
        assert_eq!((v.issued_at, v.expires_at), (Some(T0), T0 + 600));
        let facts = v.facts();
        assert_eq!(
            (facts.jti, facts.tenant, facts.subject, facts.issued_at),
            (Some("j1"), Some("acme"), "u1", Some(T0))
        );
        let p = v.into_principal();
        assert_eq!(p.subject(), "u1");
        assert_eq!(p.tenant(), Some(&acme()));
        assert_eq!(p.token_id(), Some("j1"));
        assert_eq!(p.scopes(), ["a", "b"]);
        assert_eq!(
            p.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(T0 + 600))
        );
        assert_eq!(p.claims()["name"], "Ada", "every claim is kept");
    }

    #[test]
    fn the_leeway_counts_through_its_last_second_on_exp_nbf_and_iat() {
        let (s, _) = sessions(config());
        accepted(
            &s,
            json!({"iat": T0 - 600, "nbf": T0 - 600, "exp": T0 - 30}),
        );
        let late = json!({"iat": T0 - 600, "nbf": T0 - 600, "exp": T0 - 31});
        assert_eq!(refused(&s, late), "expired");
        accepted(&s, json!({"nbf": T0 + 30}));
        assert_eq!(refused(&s, json!({"nbf": T0 + 31})), "not yet valid");
        accepted(&s, json!({"iat": T0 + 30}));
        assert_eq!(refused(&s, json!({"iat": T0 + 31})), "issued in the future");
    }

    #[test]
    fn expiry_follows_the_configured_clock() {
        let (s, time) = sessions(config().leeway(Duration::ZERO));
        let token = mint(&claims(json!({})));
        time.advance(Duration::from_secs(600));
        assert!(check(&s, &token, Use::Access).is_ok(), "through its `exp`");
        time.advance(Duration::from_secs(1));
        assert_eq!(reason(check(&s, &token, Use::Access)), "expired");
    }

    #[test]
    fn time_claims_are_whole_numbers_and_iat_is_required() {
        let (s, _) = sessions(config());
        let unknown = "no iat: the token's life is unknown";
        assert_eq!(refused(&s, json!({"iat": null})), unknown);
        let not_whole = "a time claim is not a whole number";
        for patch in [
            json!({"iat": "1800000000"}),
            json!({"iat": -1}),
            json!({"iat": 1.5}),
            json!({"nbf": "1800000000"}),
        ] {
            assert_eq!(refused(&s, patch.clone()), not_whole, "{patch}");
        }
        accepted(&s, json!({"nbf": null}));
    }

    #[test]
    fn a_token_may_live_no_longer_than_revocations_are_kept() {
        let secs = Duration::from_secs;
        let (s, _) = sessions(config().access_ttl(secs(60)).refresh_ttl(secs(900)));
        accepted(&s, json!({"exp": T0 + 900}));
        let why = "the token lives longer than any revocation is kept";
        assert_eq!(refused(&s, json!({"exp": T0 + 901})), why);
        let day = secs(24 * 3600);
        let (longer, _) = sessions(config().refresh_ttl(secs(900)).max_token_life(day));
        accepted(&longer, json!({"exp": T0 + 24 * 3600}));
        let day_and_a_second = json!({"exp": T0 + 24 * 3600 + 1});
        assert_eq!(refused(&longer, day_and_a_second), why);
    }

    #[test]
    fn the_subject_and_the_claims_read_as_strings_must_be_strings() {
        let (s, _) = sessions(config());
        assert_eq!(refused(&s, json!({"sub": ""})), "no subject");
        let not_text = "a claim that must be a string is not";
        for patch in [
            json!({"jti": 7}),
            json!({"fam": ["f"]}),
            json!({"token_use": true}),
            json!({"tenant_id": 7}),
        ] {
            assert_eq!(refused(&s, patch.clone()), not_text, "{patch}");
        }
    }

    #[test]
    fn token_use_tells_access_from_refresh_tokens() {
        let (s, _) = sessions(config());
        let refresh = |patch: Value| check(&s, &mint(&claims(patch)), Use::Refresh);
        accepted(&s, json!({"token_use": "access"}));
        accepted(&s, json!({}));
        assert_eq!(
            refused(&s, json!({"token_use": "refresh", "fam": "f"})),
            "a refresh token is not an access token"
        );
        assert_eq!(refused(&s, json!({"token_use": "id"})), "unknown token_use");
        assert_eq!(
            reason(refresh(json!({"fam": "f"}))),
            "an access token cannot refresh",
            "no token_use is an access token"
        );
        let good = refresh(json!({"token_use": "refresh", "fam": "f"})).unwrap();
        assert_eq!(good.family.as_deref(), Some("f"));
        let needs = "a refresh token needs jti, fam and a tenant";
        assert_eq!(reason(refresh(json!({"token_use": "refresh"}))), needs);
        let (lax, _) = sessions(config().require_jti(false).require_tenant(false));
        let lax_refresh = |patch: Value| check(&lax, &mint(&claims(patch)), Use::Refresh);
        for missing in ["jti", "tenant_id"] {
            let mut patch = json!({"token_use": "refresh", "fam": "f"});
            patch[missing] = Value::Null;
            assert_eq!(reason(lax_refresh(patch)), needs, "{missing}");
        }
    }

    #[test]
    fn jti_and_tenant_are_required_unless_turned_off() {
        let (s, _) = sessions(config());
        assert_eq!(
            refused(&s, json!({"jti": null})),
            "the token has no jti, so it could not be revoked alone"
        );
        assert_eq!(
            refused(&s, json!({"tenant_id": null})),
            "the token names no tenant"
        );
        assert_eq!(
            refused(&s, json!({"tenant_id": "ACME; drop"})),
            "malformed tenant claim"
        );
        let (lax, _) = sessions(config().require_jti(false).require_tenant(false));
        let v = accepted(&lax, json!({"jti": null, "tenant_id": null}));
        assert_eq!((v.jti, v.tenant), (None, None));
        assert_eq!(
            refused(&lax, json!({"tenant_id": "ACME; drop"})),
            "malformed tenant claim",
            "a tenant that is named must still be well formed"
        );
    }

    #[test]
    fn roles_are_read_at_the_configured_path() {
        let (s, _) = sessions(config().roles_claim(["realm_access", "roles"]));
        let roles = |patch: Value| accepted(&s, patch).roles;
        let nested = json!({"realm_access": {"roles": ["admin", 1, "ops"]}});
        assert_eq!(roles(nested), ["admin", "ops"]);
        let spaced = json!({"realm_access": {"roles": "admin ops"}});
        assert_eq!(roles(spaced), ["admin", "ops"]);
        assert!(
            roles(json!({})).is_empty(),
            "none where the path finds nothing"
        );
        assert!(roles(json!({"realm_access": "admin"})).is_empty());
        assert_eq!(
            refused(&s, json!({"realm_access": {"roles": {"admin": true}}})),
            "the roles claim is neither a string nor an array"
        );
        let (unset, _) = sessions(config());
        let ignored = accepted(&unset, json!({"roles": 7}));
        assert!(
            ignored.roles.is_empty(),
            "no roles claim configured: not read"
        );
    }

    #[test]
    fn scopes_are_scope_or_else_scp() {
        let (s, _) = sessions(config());
        let scopes = |patch: Value| accepted(&s, patch).scopes();
        assert_eq!(scopes(json!({"scp": ["a", "b"]})), ["a", "b"]);
        assert_eq!(scopes(json!({"scope": "c", "scp": "a b"})), ["c"]);
        assert!(
            scopes(json!({"scope": 7})).is_empty(),
            "neither a list nor words"
        );
        assert!(scopes(json!({})).is_empty());
    }

    #[test]
    fn tenant_from_names_the_tenant_checked() {
        let realm = "https://sso.test/realms/acme";
        let pattern = TenantFrom::issuer_pattern("https://sso.test/realms/{tenant}").unwrap();
        let (s, _) = sessions(SessionConfig::new(realm, AUD).tenant_from(pattern));
        let token = mint(&claims(json!({"iss": realm, "tenant_id": "globex"})));
        let v = check(&s, &token, Use::Access).unwrap();
        assert_eq!(v.tenant, Some(acme()), "from the issuer, not the claim");

        let (s, _) = sessions(config().tenant_from(TenantFrom::claim_path(["org", "id"])));
        let v = accepted(&s, json!({"org": {"id": "acme"}, "tenant_id": null}));
        assert_eq!(v.tenant, Some(acme()));
        assert_eq!(refused(&s, json!({})), "the token names no tenant");
        assert_eq!(
            refused(&s, json!({"org": {"id": "Not Valid!"}})),
            "malformed tenant claim"
        );
    }

    #[test]
    fn an_expectation_replaces_the_configured_issuer_and_audiences() {
        let (s, _) = sessions(config());
        let others = ["web".to_owned(), "mobile".to_owned()];
        let expect = Expect {
            issuer: "https://idp.test",
            audiences: &others,
        };
        let as_expected =
            |patch: Value| s.check_as(&mint(&claims(patch)), Use::Access, &s.keys(), Some(&expect));
        let ours = json!({"iss": "https://idp.test", "aud": ["x", "mobile"]});
        assert!(as_expected(ours).is_ok());
        assert!(
            as_expected(json!({})).is_err(),
            "the configured issuer no longer"
        );
        let theirs = json!({"iss": "https://idp.test", "aud": AUD});
        assert!(as_expected(theirs).is_err(), "nor its audience");

        let anyone = Expect {
            issuer: "https://idp.test",
            audiences: &[],
        };
        let token = mint(&claims(json!({"iss": "https://idp.test", "aud": "x"})));
        assert!(
            s.check_as(&token, Use::Access, &s.keys(), Some(&anyone))
                .is_ok(),
            "no audiences: any audience"
        );
    }

    #[test]
    fn only_tokens_of_a_jwt_shape_and_a_known_key_are_decoded() {
        let (s, _) = sessions(config());
        let too_large = "a".repeat(MAX_TOKEN_LEN + 1);
        let two_parts = "e30.e30";
        let good = mint(&claims(json!({})));
        for (token, why) in [
            (too_large.as_str(), "the token is too large"),
            (two_parts, "a JWT has three parts"),
            ("e30.e30.e30.e30", "a JWT has three parts"),
            ("!!.e30.sig", "malformed token header"),
            ("e30.e30.sig", "malformed token header"),
        ] {
            assert_eq!(reason(header_of(token)), why, "{token:.20}");
            assert_eq!(reason(check(&s, token, Use::Access)), why, "{token:.20}");
        }
        assert!(header_of(&good).is_ok());
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("k9".into());
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        let unknown = jsonwebtoken::encode(&header, &claims(json!({})), &key).unwrap();
        assert_eq!(reason(check(&s, &unknown, Use::Access)), "unknown kid");
    }

    #[test]
    fn validations_hold_the_configured_issuer_leeway_and_required_claims() {
        let c = config().leeway(Duration::from_secs(7));
        let all = validations(&c);
        assert_eq!(all.len(), SUPPORTED.len());
        for (alg, v) in &all {
            assert_eq!(v.algorithms, [*alg]);
            assert_eq!(v.leeway, 7);
            assert!(
                !v.validate_exp && !v.validate_nbf,
                "checked on the configured clock"
            );
            assert!(v.validate_aud);
            assert_eq!(
                v.iss
                    .as_ref()
                    .map(|i| i.iter().cloned().collect::<Vec<_>>()),
                Some(vec![ISS.to_owned()])
            );
            for claim in ["exp", "iss", "aud", "sub"] {
                assert!(v.required_spec_claims.contains(claim), "{claim}");
            }
        }
    }

    #[tokio::test]
    async fn verify_checks_revocation_after_the_token() {
        let (s, _) = sessions(config());
        let pair = s
            .issue(&acme(), "u1", crate::session::Grant::new())
            .unwrap();
        let p = s.verify(&pair.access_token).await.unwrap();
        assert_eq!(p.subject(), "u1");
        s.revoke(p.token_id().unwrap()).await.unwrap();
        assert!(matches!(
            s.verify(&pair.access_token).await,
            Err(SessionError::Revoked)
        ));
        let down = s.clone().with_store(Recorder {
            down: true,
            ..Recorder::default()
        });
        assert!(matches!(
            down.verify(&pair.access_token).await,
            Err(SessionError::Store(_))
        ));
        assert_eq!(
            reason(down.verify("e30.e30").await),
            "a JWT has three parts",
            "a bad token is refused before the store is asked"
        );
    }
}
