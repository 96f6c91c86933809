//! The test kit's `FakeClock` (features `testing` and `jwt`) through a real `App`: a
//! registry cache's TTL, a rate's refill, a day's budget and a token's expiry, each
//! passed by moving the clock, never by sleeping.

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use actix_tenancy::Answer;
use actix_tenancy::{
    prelude::*,
    quota::{LocalQuota, Period, QuotaPlan, QuotaPlans, TenantQuota},
    session::{
        Consumed, Grant, InMemoryRevocations, Key, KeySet, Revocation, RevocationError,
        RevocationStore, SessionConfig, SessionError, SessionManager, TenantAuth, TokenFacts,
    },
    testing::FakeClock,
};
use actix_web::{http::header, test, web, App, HttpResponse};
use jsonwebtoken::Algorithm;

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

macro_rules! app {
    ($tenancy:expr) => {
        test::init_service(App::new().wrap($tenancy).default_service(web::to(
            |t: Tenant| async move { HttpResponse::Ok().body(t.id().to_string()) },
        )))
        .await
    };
}

fn as_acme() -> test::TestRequest {
    test::TestRequest::get()
        .uri("/x")
        .insert_header(("x-tenant-id", "acme"))
}

#[actix_web::test]
async fn a_cached_record_is_served_until_its_ttl_passes_on_the_fake_clock() {
    let time = FakeClock::new();
    let backend = Arc::new(InMemoryRegistry::new().with(TenantRecord::new(id("acme"), "pro")));
    let cached = CachedRegistry::new(
        Arc::clone(&backend),
        CacheConfig::default().ttl(Duration::from_secs(30)),
    )
    .with_clock(time.clock());
    let app = app!(Tenancy::builder()
        .resolver(
            TenantResolver::builder(cached)
                .source(Source::header())
                .build()
                .unwrap()
        )
        .build()
        .unwrap());
    assert_eq!(
        test::call_service(&app, as_acme().to_request())
            .await
            .status(),
        200
    );

    backend.insert(TenantRecord::new(id("acme"), "pro").with_status(TenantStatus::Suspended));
    time.advance(Duration::from_secs(29));
    assert_eq!(
        test::call_service(&app, as_acme().to_request())
            .await
            .status(),
        200,
        "inside the TTL the cached record answers"
    );
    time.advance(Duration::from_secs(2));
    assert_eq!(
        test::call_service(&app, as_acme().to_request())
            .await
            .status(),
        403,
        "past it the backend's suspension is seen"
    );
}

#[actix_web::test]
async fn a_rate_refills_and_a_day_budget_renews_on_the_fake_clock() {
    // 23:58:00 UTC: the day's budget renews two minutes later.
    let time = FakeClock::starting_at(UNIX_EPOCH + Duration::from_secs(1_796_169_480));
    let plans = QuotaPlans::builder()
        .tier("pro", QuotaPlan::per_minute(2).budget(3, Period::Day))
        .build()
        .unwrap();
    let registry = InMemoryRegistry::new().with(TenantRecord::new(id("acme"), "pro"));
    let app = app!(Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::header())
                .build()
                .unwrap()
        )
        .quota(TenantQuota::new(LocalQuota::with_clock(
            plans,
            time.clock()
        )))
        .build()
        .unwrap());
    async fn limit<B: actix_web::body::MessageBody>(
        res: actix_web::dev::ServiceResponse<B>,
    ) -> String {
        let body: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
        body["limit"].as_str().unwrap_or_default().to_owned()
    }
    for _ in 0..2 {
        let res = test::call_service(&app, as_acme().to_request()).await;
        assert_eq!(res.status(), 200);
    }
    let refused = test::call_service(&app, as_acme().to_request()).await;
    assert_eq!(refused.status(), 429, "the burst of 2 is spent");
    assert_eq!(refused.headers().get(header::RETRY_AFTER).unwrap(), "30");
    assert_eq!(limit(refused).await, "rate");

    time.advance(Duration::from_secs(30));
    let res = test::call_service(&app, as_acme().to_request()).await;
    assert_eq!(res.status(), 200, "half a minute refills one");

    time.advance(Duration::from_secs(60)); // 23:59:30, the rate full again
    let spent = test::call_service(&app, as_acme().to_request()).await;
    assert_eq!(spent.status(), 429, "the day's 3 are spent");
    assert_eq!(limit(spent).await, "day");

    time.advance(Duration::from_secs(30)); // 00:00:00, a new day
    let res = test::call_service(&app, as_acme().to_request()).await;
    assert_eq!(res.status(), 200, "a new day renews the budget");
}

#[actix_web::test]
async fn a_token_expires_and_a_revocation_dates_on_the_fake_clock() {
    let time = FakeClock::new();
    let keys = KeySet::signing(
        Key::hmac(
            "k1",
            Algorithm::HS256,
            b"0123456789abcdef0123456789abcdef-test",
        )
        .unwrap(),
    )
    .unwrap();
    let config = SessionConfig::new("https://auth.test", "api")
        .access_ttl(Duration::from_secs(60))
        .leeway(Duration::ZERO)
        .clock(time.clock());
    let sessions = SessionManager::new(config, keys)
        .with_store(InMemoryRevocations::new().with_clock(time.clock()));
    let registry = InMemoryRegistry::new().with(TenantRecord::new(id("acme"), "pro"));
    let app = app!(Tenancy::builder()
        .auth(TenantAuth::new(sessions.clone()))
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::claim())
                .build()
                .unwrap()
        )
        .build()
        .unwrap());
    let bearer = |token: &str| {
        test::TestRequest::get()
            .uri("/x")
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
            .to_request()
    };
    let pair = sessions.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    assert_eq!(
        test::call_service(&app, bearer(&pair.access_token))
            .await
            .status(),
        200
    );
    time.advance(Duration::from_secs(60));
    assert_eq!(
        test::call_service(&app, bearer(&pair.access_token))
            .await
            .status(),
        200,
        "valid through its last second (cached or not)"
    );
    time.advance(Duration::from_secs(1));
    assert_eq!(
        test::call_service(&app, bearer(&pair.access_token))
            .await
            .status(),
        401,
        "expired one second later, though no real second passed"
    );

    // A subject revoked now refuses tokens issued before, not the ones issued later.
    let before = sessions.issue(&id("acme"), "user-2", Grant::new()).unwrap();
    sessions
        .revoke_subject(&id("acme"), "user-2")
        .await
        .unwrap();
    time.advance(Duration::from_secs(1));
    let after = sessions.issue(&id("acme"), "user-2", Grant::new()).unwrap();
    assert_eq!(
        test::call_service(&app, bearer(&before.access_token))
            .await
            .status(),
        401
    );
    assert_eq!(
        test::call_service(&app, bearer(&after.access_token))
            .await
            .status(),
        200
    );
}

// Session time, in memory, on the fake clock: how long a used mark, a logout and a
// revocation last, where a cut-off lies, and a refresh whose answer was lost.

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";
const OTHER_SECRET: &[u8] = b"another signer's secret, 32 bytes or more";

/// A manager on `time` whose store (also on `time`) the test holds too; it signs with
/// `k1` and verifies `other` as well, another signer's key.
fn timed(time: &FakeClock, config: SessionConfig) -> (SessionManager, Arc<InMemoryRevocations>) {
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, SECRET).unwrap())
        .unwrap()
        .with(Key::hmac("other", Algorithm::HS256, OTHER_SECRET).unwrap())
        .unwrap();
    let store = Arc::new(InMemoryRevocations::new().with_clock(time.clock()));
    let sessions =
        SessionManager::new(config.clock(time.clock()), keys).with_store(Arc::clone(&store));
    (sessions, store)
}

fn now_on(time: &FakeClock) -> u64 {
    time.clock().unix_secs()
}

/// A token for acme's `user-1` signed with `kid`'s key, with `claims` on top.
fn minted(kid: &str, claims: serde_json::Value) -> String {
    let mut all = serde_json::json!({
        "iss": "https://auth.test", "aud": "api", "sub": "user-1", "tenant_id": "acme",
    });
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    let secret = if kid == "k1" { SECRET } else { OTHER_SECRET };
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &all,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// #26 item 6: a refresh token is accepted through its second `exp + leeway`, and so
/// must its used mark count, also once the store has purged what it may.
#[actix_web::test]
async fn a_rotated_refresh_token_is_refused_in_its_last_second_even_after_a_purge() {
    let time = FakeClock::new();
    let config = SessionConfig::new("https://auth.test", "api")
        .access_ttl(Duration::from_secs(60))
        .refresh_ttl(Duration::from_secs(60))
        .leeway(Duration::from_secs(5));
    let (sessions, store) = timed(&time, config);
    let stolen = sessions.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    let owners = sessions.refresh(&stolen.refresh_token).await.unwrap();
    // The thief waits for the stolen token's last second: exp (60 s) + leeway (5 s).
    time.advance(Duration::from_secs(65));
    store.purge();
    assert!(
        matches!(
            sessions.refresh(&stolen.refresh_token).await,
            Err(SessionError::RefreshReused)
        ),
        "a rotated refresh token in its last second is a reuse"
    );
    assert!(
        matches!(
            sessions.verify(&owners.access_token).await,
            Err(SessionError::Revoked)
        ),
        "and its family is revoked"
    );
    time.advance(Duration::from_secs(1));
    assert!(
        matches!(
            sessions.refresh(&stolen.refresh_token).await,
            Err(SessionError::Invalid(_))
        ),
        "a second later it has expired"
    );
}

/// #26 item 6: a logged-out token is refused through its last second.
#[actix_web::test]
async fn a_logged_out_token_is_refused_in_its_last_second() {
    let time = FakeClock::new();
    let config = SessionConfig::new("https://auth.test", "api")
        .access_ttl(Duration::from_secs(60))
        .refresh_ttl(Duration::from_secs(60))
        .leeway(Duration::from_secs(5));
    let (sessions, store) = timed(&time, config);
    let pair = sessions.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    let principal = sessions.verify(&pair.access_token).await.unwrap();
    sessions.logout(&principal).await.unwrap();
    time.advance(Duration::from_secs(65));
    store.purge();
    assert!(matches!(
        sessions.verify(&pair.access_token).await,
        Err(SessionError::Revoked)
    ));
}

/// #26 item 7: with 300-second TTLs, a day-long token of another signer whose key
/// the manager holds must not verify once its tenant is revoked, neither at once nor
/// 331 s later when the manager's own tokens are all gone.
#[actix_web::test]
async fn a_token_longer_lived_than_the_revocations_never_verifies() {
    let time = FakeClock::new();
    let config = SessionConfig::new("https://auth.test", "api")
        .access_ttl(Duration::from_secs(300))
        .refresh_ttl(Duration::from_secs(300));
    let (sessions, _) = timed(&time, config);
    let now = now_on(&time);
    let day_long = minted(
        "other",
        serde_json::json!({"iat": now, "exp": now + 86_400, "jti": "day-long"}),
    );
    sessions.revoke_tenant(&id("acme")).await.unwrap();
    assert!(sessions.verify(&day_long).await.is_err());
    time.advance(Duration::from_secs(331));
    assert!(
        sessions.verify(&day_long).await.is_err(),
        "the day-long token outlived the tenant's revocation"
    );
    // A token without `iat` has no known life: it could outlive anything.
    let ageless = minted(
        "other",
        serde_json::json!({"exp": now_on(&time) + 60, "jti": "ageless"}),
    );
    assert!(matches!(
        sessions.verify(&ageless).await,
        Err(SessionError::Invalid(_))
    ));
}

/// #26 item 7: with `max_token_life` a day, the day-long token verifies, and a
/// revocation of its tenant, its subject or itself holds through its last second.
#[actix_web::test]
async fn a_revocation_lasts_as_long_as_the_longest_token_it_applies_to() {
    let time = FakeClock::new();
    let config = SessionConfig::new("https://auth.test", "api")
        .access_ttl(Duration::from_secs(300))
        .refresh_ttl(Duration::from_secs(300))
        .max_token_life(Duration::from_secs(86_400));
    let (sessions, store) = timed(&time, config);
    let now = now_on(&time);
    let token = |jti: &str, sub: &str, tenant: &str| {
        minted(
            "other",
            serde_json::json!({
                "iat": now, "exp": now + 86_400, "jti": jti, "sub": sub, "tenant_id": tenant,
            }),
        )
    };
    let (by_tenant, by_subject, by_jti, untouched) = (
        token("t1", "user-1", "acme"),
        token("t2", "user-2", "globex"),
        token("t3", "user-3", "globex"),
        token("t4", "user-4", "globex"),
    );
    for t in [&by_tenant, &by_subject, &by_jti, &untouched] {
        assert!(sessions.verify(t).await.is_ok());
    }
    sessions.revoke_tenant(&id("acme")).await.unwrap();
    sessions
        .revoke_subject(&id("globex"), "user-2")
        .await
        .unwrap();
    sessions.revoke("t3").await.unwrap();
    // 331 s later, and in the tokens' last second (exp + the 30 s leeway).
    for step in [331, 86_400 + 30 - 331] {
        time.advance(Duration::from_secs(step));
        store.purge();
        for t in [&by_tenant, &by_subject, &by_jti] {
            assert!(
                matches!(sessions.verify(t).await, Err(SessionError::Revoked)),
                "{} s after the revocation",
                time.advanced().as_secs()
            );
        }
        assert!(sessions.verify(&untouched).await.is_ok());
    }
    // A token living a second longer than the maximum is refused outright.
    let too_long = minted(
        "other",
        serde_json::json!({"iat": now_on(&time), "exp": now_on(&time) + 86_401, "jti": "t5"}),
    );
    assert!(matches!(
        sessions.verify(&too_long).await,
        Err(SessionError::Invalid(_))
    ));
}

/// #26 item 7: a token minted before a TTL cut (a day then, 300 s now) is refused
/// rather than left to outlive the revocations, unless `max_token_life` says a day.
#[actix_web::test]
async fn a_token_minted_before_a_ttl_cut_cannot_outlive_a_revocation() {
    let time = FakeClock::new();
    let day = SessionConfig::new("https://auth.test", "api")
        .access_ttl(Duration::from_secs(86_400))
        .refresh_ttl(Duration::from_secs(86_400));
    let (before_the_cut, _) = timed(&time, day);
    let old = before_the_cut
        .issue(&id("acme"), "user-1", Grant::new())
        .unwrap();
    let cut = || {
        SessionConfig::new("https://auth.test", "api")
            .access_ttl(Duration::from_secs(300))
            .refresh_ttl(Duration::from_secs(300))
    };
    let (after_the_cut, _) = timed(&time, cut());
    after_the_cut.revoke_tenant(&id("acme")).await.unwrap();
    time.advance(Duration::from_secs(331));
    assert!(after_the_cut.verify(&old.access_token).await.is_err());
    assert!(after_the_cut.refresh(&old.refresh_token).await.is_err());

    let (transition, _) = timed(&time, cut().max_token_life(Duration::from_secs(86_400)));
    assert!(transition.verify(&old.access_token).await.is_ok());
    transition.revoke_tenant(&id("acme")).await.unwrap();
    time.advance(Duration::from_secs(86_400 - 331 + 30));
    assert!(matches!(
        transition.verify(&old.access_token).await,
        Err(SessionError::Revoked)
    ));
}

/// #26 item 8: a token stamped up to the leeway ahead (its issuer's clock 20 s fast)
/// but issued before `revoke_subject` is revoked with it; as a refresh token it
/// cannot continue the session.
#[actix_web::test]
async fn a_token_stamped_ahead_within_the_leeway_is_revoked_with_its_subject() {
    let time = FakeClock::new();
    let (sessions, _) = timed(&time, SessionConfig::new("https://auth.test", "api"));
    let ahead = now_on(&time) + 20;
    let access = minted(
        "k1",
        serde_json::json!({"iat": ahead, "nbf": ahead, "exp": ahead + 900, "jti": "fast-a"}),
    );
    let refresh = minted(
        "k1",
        serde_json::json!({
            "iat": ahead, "nbf": ahead, "exp": ahead + 3600, "jti": "fast-r",
            "fam": "fast", "token_use": "refresh",
        }),
    );
    let other_tenant = minted(
        "k1",
        serde_json::json!({"iat": ahead, "exp": ahead + 900, "jti": "fast-g", "tenant_id": "globex"}),
    );
    assert!(sessions.verify(&access).await.is_ok(), "within the leeway");
    sessions
        .revoke_subject(&id("acme"), "user-1")
        .await
        .unwrap();
    assert!(matches!(
        sessions.verify(&access).await,
        Err(SessionError::Revoked)
    ));
    assert!(matches!(
        sessions.refresh(&refresh).await,
        Err(SessionError::Revoked)
    ));
    sessions.revoke_tenant(&id("globex")).await.unwrap();
    assert!(matches!(
        sessions.verify(&other_tenant).await,
        Err(SessionError::Revoked)
    ));
    // The price: a login within the leeway after the call is refused too; once the
    // leeway has passed, a new login works.
    let early = sessions.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    assert!(sessions.verify(&early.access_token).await.is_err());
    time.advance(Duration::from_secs(31));
    let later = sessions.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    assert!(sessions.verify(&later.access_token).await.is_ok());
}

/// A store that marks a refresh token used and then answers late: after `give_up`
/// with an error, as a store bounded by a timeout does (`None`: after 700 ms, with the
/// answer, for a client that has gone by then).
struct LateStore {
    inner: Arc<InMemoryRevocations>,
    late: std::sync::atomic::AtomicBool,
    give_up: Option<Duration>,
}

impl RevocationStore for LateStore {
    fn revoke<'a>(
        &'a self,
        what: Revocation<'a>,
        until: u64,
    ) -> Answer<'a, Result<(), RevocationError>> {
        self.inner.revoke(what, until)
    }

    fn is_revoked<'a>(
        &'a self,
        token: &'a TokenFacts<'_>,
    ) -> Answer<'a, Result<bool, RevocationError>> {
        self.inner.is_revoked(token)
    }

    fn consume<'a>(
        &'a self,
        jti: &'a str,
        rotation: &'a str,
        until: u64,
    ) -> Answer<'a, Result<Consumed, RevocationError>> {
        Answer::later(async move {
            let answer = self.inner.consume(jti, rotation, until).await;
            if self.late.swap(false, std::sync::atomic::Ordering::SeqCst) {
                match self.give_up {
                    Some(after) => {
                        tokio::time::sleep(after).await;
                        return Err(RevocationError::new("the store did not answer in time"));
                    }
                    None => tokio::time::sleep(Duration::from_millis(700)).await,
                }
            }
            answer
        })
    }
}

/// #27 item 1: a refresh whose answer is lost (the store gave up after marking the
/// token used, or the client went away) is retried with the same refresh token: it
/// gets the same pair, not a theft verdict; outside the grace, theft is detected.
#[actix_web::test]
async fn a_refresh_whose_answer_was_lost_is_retried_not_taken_for_theft() {
    for give_up in [Some(Duration::from_millis(100)), None] {
        let time = FakeClock::new();
        let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, SECRET).unwrap()).unwrap();
        let inner = Arc::new(InMemoryRevocations::new().with_clock(time.clock()));
        let store = Arc::new(LateStore {
            inner,
            late: false.into(),
            give_up,
        });
        let config = SessionConfig::new("https://auth.test", "api").clock(time.clock());
        let sessions = SessionManager::new(config, keys).with_store(Arc::clone(&store));
        let pair = sessions.issue(&id("acme"), "user-1", Grant::new()).unwrap();

        store.late.store(true, std::sync::atomic::Ordering::SeqCst);
        // The client waits 300 ms at most, then gives up (or sees the 503).
        let lost = tokio::time::timeout(
            Duration::from_millis(300),
            sessions.refresh(&pair.refresh_token),
        )
        .await;
        match give_up {
            Some(_) => assert!(
                matches!(lost, Ok(Err(SessionError::Store(_)))),
                "503 auth_unavailable"
            ),
            None => assert!(lost.is_err(), "the client went away"),
        }
        time.advance(Duration::from_secs(2));
        let retry = sessions
            .refresh(&pair.refresh_token)
            .await
            .expect("a retry of a refresh whose answer was lost");
        let again = sessions.refresh(&pair.refresh_token).await.unwrap();
        assert_eq!(
            (&again.access_token, &again.refresh_token),
            (&retry.access_token, &retry.refresh_token),
            "the same pair each time"
        );
        assert!(sessions.verify(&retry.access_token).await.is_ok());
        let next = sessions.refresh(&retry.refresh_token).await.unwrap();

        // Outside the grace (30 s), the used token again is theft.
        time.advance(Duration::from_secs(29));
        assert!(matches!(
            sessions.refresh(&pair.refresh_token).await,
            Err(SessionError::RefreshReused)
        ));
        assert!(matches!(
            sessions.verify(&next.access_token).await,
            Err(SessionError::Revoked)
        ));
    }
}
