//! The test kit's `FakeClock` (features `testing` and `jwt`) through a real `App`: a
//! registry cache's TTL, a rate's refill, a day's budget and a token's expiry, each
//! passed by moving the clock, never by sleeping.

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use actix_tenancy::{
    prelude::*,
    quota::{LocalQuota, Period, QuotaPlan, QuotaPlans, TenantQuota},
    session::{
        Grant, InMemoryRevocations, JwtAuth, Key, KeySet, SessionConfig, SessionError,
        SessionManager,
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
        .auth(JwtAuth::new(sessions.clone()))
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

// Session time, in memory, on the fake clock: how long a used mark and a logout last.

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

/// A manager on `time` whose store (also on `time`) the test holds too; it signs with
/// `k1`.
fn timed(time: &FakeClock, config: SessionConfig) -> (SessionManager, Arc<InMemoryRevocations>) {
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, SECRET).unwrap()).unwrap();
    let store = Arc::new(InMemoryRevocations::new().with_clock(time.clock()));
    let sessions =
        SessionManager::new(config.clock(time.clock()), keys).with_store(Arc::clone(&store));
    (sessions, store)
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
