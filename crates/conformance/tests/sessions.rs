//! Sessions, the same on both adapters: one table of requests with bearer tokens
//! through actix-tenancy's `TenantAuth` and tower-tenancy's `TenantAuth`, over one
//! `SessionManager` and a revocation store that fails, answers later or hangs for
//! some subjects. Each answer (status, body, `WWW-Authenticate`) and each audit event
//! must be what the table says, and the same on both.

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use actix_web::{test as atest, web, App};
use axum::routing::get;
use jsonwebtoken::Algorithm;
use tenancy_core::{
    session::{
        Consumed, Grant, InMemoryRevocations, Key, KeySet, Revocation, RevocationError,
        RevocationStore, SessionConfig, SessionManager, TokenFacts,
    },
    Answer, FakeClock, TenantId,
};
use tower::ServiceExt as _;

#[allow(dead_code, unreachable_pub)]
mod common;

use common::*;

const SECRET: &[u8] = b"a conformance secret of 32 bytes or more";

/// In memory, but `broken` finds the store down, `slow` waits for it, and `stuck`
/// never gets an answer in time.
struct Store(InMemoryRevocations);

impl RevocationStore for Store {
    fn revoke<'a>(
        &'a self,
        what: Revocation<'a>,
        until: u64,
    ) -> Answer<'a, Result<(), RevocationError>> {
        self.0.revoke(what, until)
    }

    fn is_revoked<'a>(
        &'a self,
        token: &'a TokenFacts<'_>,
    ) -> Answer<'a, Result<bool, RevocationError>> {
        match token.subject {
            "broken" => Answer::Now(Err(RevocationError::new("the store is down"))),
            "slow" => Answer::later(async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                self.0.is_revoked(token).await
            }),
            "stuck" => Answer::later(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(false)
            }),
            _ => self.0.is_revoked(token),
        }
    }

    fn consume<'a>(
        &'a self,
        jti: &'a str,
        rotation: &'a str,
        until: u64,
    ) -> Answer<'a, Result<Consumed, RevocationError>> {
        self.0.consume(jti, rotation, until)
    }
}

fn key() -> KeySet {
    KeySet::signing(Key::hmac("k1", Algorithm::HS256, SECRET).unwrap()).unwrap()
}

fn config() -> SessionConfig {
    SessionConfig::new("https://auth.conformance", "api")
}

/// The sessions both adapters verify with, made once (tokens are minted from it).
fn sessions() -> &'static SessionManager {
    static SESSIONS: OnceLock<SessionManager> = OnceLock::new();
    SESSIONS.get_or_init(|| {
        SessionManager::new(config(), key()).with_store(Store(InMemoryRevocations::new()))
    })
}

/// An access token for `user` of `tenant`, leaked: the table's requests are static.
fn token(tenant: &str, user: &str) -> &'static str {
    let pair = sessions()
        .issue(&TenantId::parse(tenant).unwrap(), user, Grant::new())
        .unwrap();
    Box::leak(format!("Bearer {}", pair.access_token).into_boxed_str())
}

/// A token that expired an hour ago: minted by the same key on a clock two hours
/// behind.
fn expired() -> &'static str {
    let past = FakeClock::starting_at(SystemTime::now() - Duration::from_secs(7_200));
    let old = SessionManager::new(config().clock(past.clock()), key());
    let pair = old
        .issue(&TenantId::parse("acme").unwrap(), "alice", Grant::new())
        .unwrap();
    Box::leak(format!("Bearer {}", pair.access_token).into_boxed_str())
}

/// A token whose session was logged out.
async fn revoked() -> &'static str {
    let bearer = token("acme", "mallory");
    let principal = sessions()
        .verify(bearer.trim_start_matches("Bearer "))
        .await
        .unwrap();
    sessions().logout(&principal).await.unwrap();
    bearer
}

const TIMEOUT: Duration = Duration::from_millis(100);

async fn on_actix(req: &Req) -> Got {
    let audit = Recorder::default();
    let auth = actix_tenancy::session::TenantAuth::builder(sessions().clone())
        .revocation_timeout(TIMEOUT)
        .build()
        .unwrap();
    let resolver = actix_tenancy::TenantResolver::builder(Registry::new())
        .source(actix_tenancy::Source::claim())
        .source(actix_tenancy::Source::header())
        .build()
        .unwrap();
    let tenancy = actix_tenancy::Tenancy::builder()
        .auth(auth)
        .resolver(resolver)
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<actix_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let app = atest::init_service(App::new().wrap(tenancy).route("/whoami", web::to(whoami))).await;
    let res = atest::call_service(&app, actix_request(req)).await;
    actix_answer(res, &audit).await
}

async fn on_axum(req: &Req) -> Got {
    let audit = Recorder::default();
    let auth = tower_tenancy::TenantAuth::builder(sessions().clone())
        .revocation_timeout(TIMEOUT)
        .build()
        .unwrap();
    let layer = tower_tenancy::TenancyLayer::builder(Registry::new())
        .auth(auth)
        .source(tower_tenancy::Source::claim())
        .source(tower_tenancy::Source::header())
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<tower_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let router = axum::Router::new()
        .route("/whoami", get(whoami))
        .layer(layer);
    let res = router.oneshot(axum_request(req)).await.unwrap();
    axum_answer(res, &audit).await
}

async fn table() -> Vec<(&'static str, Req, Want)> {
    use Want::{Refused, Served};
    let with = |bearer: &'static str| get_("/whoami").h("authorization", bearer);
    vec![
        (
            "a valid token",
            with(token("acme", "alice")),
            Served("acme claim"),
        ),
        (
            "the scheme in any case",
            with(token("acme", "bob").replacen("Bearer", "bEARER", 1).leak()),
            Served("acme claim"),
        ),
        ("no token", get_("/whoami"), Refused(401, "unauthenticated")),
        (
            "not a bearer credential",
            with("Basic YWxpY2U6c2VjcmV0"),
            Refused(401, "unauthenticated"),
        ),
        (
            "two tokens",
            with(token("acme", "carol")).h("authorization", token("acme", "dave")),
            Refused(401, "unauthenticated"),
        ),
        (
            "a token of forbidden characters",
            with("Bearer abc$def.ghi"),
            Refused(401, "unauthenticated"),
        ),
        (
            "a token of another key",
            with("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"),
            Refused(401, "unauthenticated"),
        ),
        (
            "an expired token",
            with(expired()),
            Refused(401, "unauthenticated"),
        ),
        (
            "a logged-out token",
            with(revoked().await),
            Refused(401, "unauthenticated"),
        ),
        (
            "a header naming another tenant",
            with(token("acme", "erin")).h("x-tenant-id", "umbrella"),
            Refused(403, "tenant_conflict"),
        ),
        (
            "a token of a suspended tenant",
            with(token("globex", "frank")),
            Refused(403, "tenant_forbidden"),
        ),
        (
            "the store is down",
            with(token("acme", "broken")),
            Refused(503, "auth_unavailable"),
        ),
        (
            "the store answers later",
            with(token("acme", "slow")),
            Served("acme claim"),
        ),
        (
            "the store answers too late",
            with(token("acme", "stuck")),
            Refused(503, "auth_unavailable"),
        ),
    ]
}

#[actix_web::test]
async fn both_adapters_authenticate_every_row_the_same() {
    let mut answers = Vec::new();
    for (name, req, want) in table().await {
        let actix = on_actix(&req).await;
        let axum = on_axum(&req).await;
        check(name, &want, &actix, "actix");
        check(name, &want, &axum, "axum");
        assert_eq!(actix, axum, "{name}: the adapters differ");
        answers.push((name, actix));
    }
    let got = |n: &str| &answers.iter().find(|(name, _)| *name == n).unwrap().1;
    // A client without a token is told how to authenticate.
    assert!(
        got("no token")
            .headers
            .iter()
            .any(|(n, v)| *n == "www-authenticate" && v.starts_with("Bearer")),
        "{:?}",
        got("no token")
    );
    // Every refusal of authentication is audited by that stage, before resolution.
    let expired = &got("an expired token").audit;
    assert!(
        expired.len() == 1 && expired[0].starts_with("authentication unauthenticated"),
        "{expired:#?}"
    );
}
