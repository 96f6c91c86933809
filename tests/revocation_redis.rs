//! `RedisRevocations` (features `jwt` and `redis`): every replica sees a revocation
//! at once. Tests that need Redis run when `REDIS_URL` is set (CI sets it, and with
//! `CI=true` an unset `REDIS_URL` fails them); the outage test always runs.

use std::time::Duration;

use actix_tenancy::{
    prelude::*,
    session::{
        Grant, Key, KeySet, RedisRevocations, SessionConfig, SessionError, SessionManager,
        TenantAuth,
    },
};
use actix_web::{http::header, test, web, App};
use futures_util::future::join;
use jsonwebtoken::Algorithm;

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
}

use common::services::service_url;

fn redis_url() -> Option<String> {
    service_url("REDIS_URL")
}

/// A key prefix no other test or run shares.
fn prefix(test: &str) -> String {
    common::services::unique_prefix("rev:", test) + ":"
}

/// Two replicas: the same keys, each with its own connection to the same store.
fn replicas(url: &str, prefix: &str) -> (SessionManager, SessionManager) {
    replicas_with(url, prefix, SessionConfig::new("https://auth.test", "api"))
}

/// [`replicas`] with `config`.
fn replicas_with(
    url: &str,
    prefix: &str,
    config: SessionConfig,
) -> (SessionManager, SessionManager) {
    let make = || {
        let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, &[3u8; 32]).unwrap()).unwrap();
        let store = RedisRevocations::with_options(url, prefix, Duration::from_secs(2)).unwrap();
        SessionManager::new(config.clone(), keys).with_store(store)
    };
    (make(), make())
}

/// An app behind `sessions`, whose tenant comes from the token.
fn app(
    sessions: &SessionManager,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let tenancy = stack(sessions).build().unwrap();
    App::new().wrap(tenancy).route(
        "/me",
        web::get().to(|t: Tenant| async move { t.id().to_string() }),
    )
}

/// `TenantAuth` on `sessions`, and the tenant from the token's claim.
fn stack(sessions: &SessionManager) -> actix_tenancy::TenancyBuilder {
    let registry = InMemoryRegistry::new().with(TenantRecord::new(acme(), "pro"));
    Tenancy::builder()
        .auth(TenantAuth::new(sessions.clone()))
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::claim())
                .build()
                .unwrap(),
        )
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

#[actix_web::test]
async fn a_revocation_on_one_replica_is_seen_by_the_other_at_once() {
    let Some(url) = redis_url() else { return };
    let (a, b) = replicas(&url, &prefix("jti"));
    let pair = a.issue(&acme(), "user-1", Grant::new()).unwrap();
    let p = b.verify(&pair.access_token).await.unwrap();
    a.revoke(p.token_id().unwrap()).await.unwrap();
    assert!(matches!(
        b.verify(&pair.access_token).await,
        Err(SessionError::Revoked)
    ));

    let other = a.issue(&acme(), "user-2", Grant::new()).unwrap();
    b.revoke_subject(&acme(), "user-2").await.unwrap();
    assert!(matches!(
        a.verify(&other.access_token).await,
        Err(SessionError::Revoked)
    ));
    assert!(a
        .verify(
            &a.issue(&acme(), "user-3", Grant::new())
                .unwrap()
                .access_token
        )
        .await
        .is_ok());
}

#[actix_web::test]
async fn a_refresh_token_is_used_once_across_replicas() {
    let Some(url) = redis_url() else { return };
    // Within the grace, two replicas at once (two tabs of one browser): one rotates,
    // the other is answered with the same pair, and the family lives on.
    let (a, b) = replicas(&url, &prefix("refresh-grace"));
    let pair = a.issue(&acme(), "user-1", Grant::new()).unwrap();
    let (x, y) = join(
        a.refresh(&pair.refresh_token),
        b.refresh(&pair.refresh_token),
    )
    .await;
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(
        (&x.access_token, &x.refresh_token),
        (&y.access_token, &y.refresh_token)
    );
    assert!(b.verify(&x.access_token).await.is_ok());

    // With no grace: exactly one wins, the other is a replay.
    let config = SessionConfig::new("https://auth.test", "api").refresh_grace(Duration::ZERO);
    let (a, b) = replicas_with(&url, &prefix("refresh"), config);
    let pair = a.issue(&acme(), "user-1", Grant::new()).unwrap();
    // Both replicas at once: exactly one wins, the other sees a replay.
    let (x, y) = join(
        a.refresh(&pair.refresh_token),
        b.refresh(&pair.refresh_token),
    )
    .await;
    let winners = [&x, &y].iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{x:?} {y:?}");
    let loser = if x.is_err() { &x } else { &y };
    assert!(
        matches!(loser, Err(SessionError::RefreshReused)),
        "{loser:?}"
    );
    // The replay revoked the family everywhere, the winner's new tokens included.
    let won = x.or(y).unwrap();
    for replica in [&a, &b] {
        assert!(matches!(
            replica.verify(&won.access_token).await,
            Err(SessionError::Revoked)
        ));
    }
}

#[actix_web::test]
async fn revoke_tenant_through_the_app_of_another_replica() {
    let Some(url) = redis_url() else { return };
    let (a, b) = replicas(&url, &prefix("tenant"));
    let app = test::init_service(app(&b)).await;
    let pair = a.issue(&acme(), "user-1", Grant::new()).unwrap();
    let req = || {
        test::TestRequest::get()
            .uri("/me")
            .insert_header((
                header::AUTHORIZATION,
                format!("Bearer {}", pair.access_token),
            ))
            .to_request()
    };
    assert_eq!(test::call_service(&app, req()).await.status(), 200);
    a.revoke_tenant(&acme()).await.unwrap();
    assert_eq!(test::call_service(&app, req()).await.status(), 401);
}

#[actix_web::test]
async fn entries_expire_with_the_tokens_they_revoke() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix("ttl");
    let (a, _) = replicas(&url, &prefix);
    a.revoke("some-jti").await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Every key of the store starts with its hash tag, the prefix in braces.
    let key = format!("{{{prefix}}}jti:8:some-jti");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Kept as long as a token issued by the cut-off (now + the 30 s leeway) that
    // lives 30 days may be accepted (30 s past its `exp`), through that last second.
    let kept = 30 + 30 * 24 * 3600 + 30 + 1;
    assert!(ttl > kept - 5 && ttl <= kept, "TTL {ttl}");
}

#[actix_web::test]
async fn redis_down_fails_closed_with_503() {
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, &[3u8; 32]).unwrap()).unwrap();
    let store = RedisRevocations::with_options(
        "redis://127.0.0.1:1",
        "tenancy-test:down:",
        Duration::from_millis(100),
    )
    .unwrap();
    let s =
        SessionManager::new(SessionConfig::new("https://auth.test", "api"), keys).with_store(store);
    let pair = s.issue(&acme(), "user-1", Grant::new()).unwrap();
    assert!(matches!(
        s.verify(&pair.access_token).await,
        Err(SessionError::Store(_))
    ));
    assert!(matches!(
        s.refresh(&pair.refresh_token).await,
        Err(SessionError::Store(_))
    ));
    let app = test::init_service(app(&s)).await;
    let req = test::TestRequest::get()
        .uri("/me")
        .insert_header((
            header::AUTHORIZATION,
            format!("Bearer {}", pair.access_token),
        ))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), 503);
    let body = test::read_body(res).await;
    assert!(String::from_utf8_lossy(&body).contains("auth_unavailable"));
}

/// A correctly signed token "issued" ten years from now is refused before the store is
/// asked: it cannot outlive a subject's revocation held in Redis.
#[actix_web::test]
async fn a_token_issued_in_the_future_cannot_escape_a_subject_revocation() {
    let Some(url) = redis_url() else { return };
    let (a, b) = replicas(&url, &prefix("future"));
    a.revoke_subject(&acme(), "user-1").await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |iat: u64| {
        let claims = serde_json::json!({
            "iss": "https://auth.test", "aud": "api", "sub": "user-1", "tenant_id": "acme",
            "iat": iat, "exp": now + 600, "jti": format!("future-{iat}"),
        });
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&[3u8; 32]),
        )
        .unwrap()
    };
    let future = token(now + 10 * 365 * 24 * 3600);
    assert!(matches!(
        b.verify(&future).await,
        Err(SessionError::Invalid(_))
    ));
    assert!(matches!(
        b.verify(&token(now - 1)).await,
        Err(SessionError::Revoked)
    ));
}

/// One connection the application already has serves the quota and the revocation
/// store, through a real `App`: the burst holds, and a logout is refused at once.
#[actix_web::test]
async fn one_existing_connection_serves_the_quota_and_the_revocations() {
    use actix_tenancy::quota::{QuotaPlan, QuotaPlans, RedisQuota, TenantQuota};
    let Some(url) = redis_url() else { return };
    let client = redis::Client::open(url.as_str()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let store =
        RedisRevocations::with_connection(conn.clone(), &prefix("shared"), Duration::from_secs(2));
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, &[3u8; 32]).unwrap()).unwrap();
    let sessions =
        SessionManager::new(SessionConfig::new("https://auth.test", "api"), keys).with_store(store);
    let plans = QuotaPlans::builder()
        .tier("pro", QuotaPlan::per_minute(3))
        .build()
        .unwrap();
    let quota = RedisQuota::with_connection(conn.clone(), plans)
        .prefix(prefix("shared-quota"))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let tenancy = stack(&sessions)
        .quota(TenantQuota::new(quota))
        .build()
        .unwrap();
    let app = test::init_service(App::new().wrap(tenancy).route(
        "/me",
        web::get().to(|t: Tenant| async move { t.id().to_string() }),
    ))
    .await;
    let pair = sessions.issue(&acme(), "user-1", Grant::new()).unwrap();
    let me = |token: &str| {
        test::TestRequest::get()
            .uri("/me")
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
            .to_request()
    };
    for _ in 0..3 {
        assert_eq!(
            test::call_service(&app, me(&pair.access_token))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        test::call_service(&app, me(&pair.access_token))
            .await
            .status(),
        429
    );
    let other = sessions.issue(&acme(), "user-2", Grant::new()).unwrap();
    sessions.revoke_subject(&acme(), "user-2").await.unwrap();
    assert_eq!(
        test::call_service(&app, me(&other.access_token))
            .await
            .status(),
        401
    );
    // The application's own commands still run on the same connection.
    let mut mine = conn.clone();
    let pong: String = redis::cmd("PING").query_async(&mut mine).await.unwrap();
    assert_eq!(pong, "PONG");
}

/// A password in a malformed URL never reaches the error (nor, so, the logs).
#[::core::prelude::v1::test]
fn a_bad_url_with_a_password_is_refused_without_repeating_it() {
    let err = RedisRevocations::new("redis://:hunter2@[::1:6379").unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
    let plans = actix_tenancy::quota::QuotaPlans::builder().build().unwrap();
    let err = actix_tenancy::quota::RedisQuota::builder("rediss://u:hunter2@:x:y/0", plans)
        .build()
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
}

/// #26 item 6 on Redis: a rotated refresh token presented in its last valid second
/// (`exp + leeway`) is a reuse. A used mark set with `EX until - now` lapses part-way
/// into that second; it must last through it, with no purge.
#[actix_web::test]
async fn a_rotated_refresh_token_is_refused_in_its_last_second_on_redis() {
    let Some(url) = redis_url() else { return };
    let config = SessionConfig::new("https://auth.test", "api")
        .access_ttl(Duration::from_secs(2))
        .refresh_ttl(Duration::from_secs(2))
        .leeway(Duration::ZERO)
        .refresh_grace(Duration::ZERO);
    let (a, b) = replicas_with(&url, &prefix("last-second"), config);
    let exact = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    };
    // Issued and rotated early in second `t0`, presented again late in second
    // `t0 + 2`, the token's last: a try that spills over its second proves nothing.
    for _ in 0..5 {
        let start = Duration::from_secs(exact().as_secs() + 1);
        tokio::time::sleep(start.saturating_sub(exact())).await;
        let t0 = start.as_secs();
        let stolen = a.issue(&acme(), "user-1", Grant::new()).unwrap();
        let owners = a.refresh(&stolen.refresh_token).await.unwrap();
        if exact() >= start + Duration::from_millis(300) {
            continue;
        }
        tokio::time::sleep((start + Duration::from_millis(2_700)).saturating_sub(exact())).await;
        let replay = b.refresh(&stolen.refresh_token).await;
        if exact().as_secs() != t0 + 2 {
            continue;
        }
        assert!(
            matches!(replay, Err(SessionError::RefreshReused)),
            "a rotated refresh token in its last second: {replay:?}"
        );
        assert!(matches!(
            a.verify(&owners.access_token).await,
            Err(SessionError::Revoked)
        ));
        return;
    }
    panic!("five tries spilled over their second");
}

/// The test's own Redis on a free port, and the port; stopped when dropped, also when
/// the test fails.
#[cfg(feature = "testing")]
fn own_redis() -> Option<(OwnRedis, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = common::services::spawn_redis(&["--port", &port.to_string()], port)?;
    Some((OwnRedis(child), port))
}

#[cfg(feature = "testing")]
struct OwnRedis(std::process::Child);

#[cfg(feature = "testing")]
impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// A TCP proxy on loopback in front of the Redis on `upstream`: it passes every
/// command on at once; once [`arm`](Self::arm)ed, it holds the reply to the next
/// command that names `marker` back for `hold` (what comes behind it waits, in
/// order), so Redis has run the command and only its answer is late.
#[cfg(feature = "testing")]
struct HoldingProxy {
    port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(feature = "testing")]
impl HoldingProxy {
    fn start(upstream: u16, marker: &'static [u8], hold: Duration) -> Self {
        use std::sync::{
            atomic::{AtomicBool, Ordering::SeqCst},
            Arc,
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let armed_here = Arc::clone(&armed);
        // Its own thread and runtime: the held reply is released on time whatever
        // the test's runtime does.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let armed = Arc::clone(&armed_here);
                    tokio::spawn(async move {
                        let Ok(server) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        let (mut from_client, mut to_client) = client.into_split();
                        let (mut from_server, mut to_server) = server.into_split();
                        let hold_next = Arc::new(AtomicBool::new(false));
                        let hold_set = Arc::clone(&hold_next);
                        let up = async move {
                            let mut buf = vec![0u8; 64 * 1024];
                            while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                                let chunk = &buf[..n];
                                if chunk.windows(marker.len()).any(|w| w == marker)
                                    && armed.swap(false, SeqCst)
                                {
                                    // Set before the command goes on: its reply is the
                                    // next one Redis sends.
                                    hold_set.store(true, SeqCst);
                                }
                                if to_server.write_all(chunk).await.is_err() {
                                    break;
                                }
                            }
                        };
                        let down = async move {
                            let mut buf = vec![0u8; 64 * 1024];
                            while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                                if hold_next.swap(false, SeqCst) {
                                    tokio::time::sleep(hold).await;
                                }
                                if to_client.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        };
                        tokio::join!(up, down);
                    });
                }
            });
        });
        Self { port, armed }
    }

    /// Holds back the reply to the next command naming the marker.
    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// #27 item 1: Redis marks the refresh token used but its answer comes 700 ms late;
/// the store gives up after its 100 ms (`503 auth_unavailable`), and the client
/// retries with the same refresh token. The retry gets the same pair, not a theft
/// verdict; outside the grace, the used token again is theft.
#[cfg(feature = "testing")]
#[actix_web::test]
async fn a_refresh_whose_redis_answer_is_late_is_retried_not_taken_for_theft() {
    use actix_tenancy::testing::FakeClock;
    let Some((_redis, port)) = own_redis() else {
        return;
    };
    let proxy = HoldingProxy::start(port, b"}used:", Duration::from_millis(700));
    let time = FakeClock::new();
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, &[3u8; 32]).unwrap()).unwrap();
    // The default store: 100 ms per call.
    let store = RedisRevocations::new(&format!("redis://127.0.0.1:{}", proxy.port)).unwrap();
    let config = SessionConfig::new("https://auth.test", "api").clock(time.clock());
    let sessions = SessionManager::new(config, keys).with_store(store);
    // Warm: the connection made, the scripts loaded.
    let warm = sessions.issue(&acme(), "user-0", Grant::new()).unwrap();
    sessions.refresh(&warm.refresh_token).await.unwrap();

    let pair = sessions.issue(&acme(), "user-1", Grant::new()).unwrap();
    proxy.arm();
    let lost = sessions.refresh(&pair.refresh_token).await;
    assert!(matches!(lost, Err(SessionError::Store(_))), "{lost:?}");
    // Redis did mark it used: two marks, the warm-up's and this one.
    let direct = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut direct = direct.get_multiplexed_async_connection().await.unwrap();
    let marks: Vec<String> = redis::cmd("KEYS")
        .arg("*used:*")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(marks.len(), 2, "{marks:?}");

    // The client retries once the late answer has gone by.
    tokio::time::sleep(Duration::from_millis(800)).await;
    time.advance(Duration::from_secs(1));
    let retry = sessions
        .refresh(&pair.refresh_token)
        .await
        .expect("a retry of a refresh whose answer was late");
    let again = sessions.refresh(&pair.refresh_token).await.unwrap();
    assert_eq!(
        (&again.access_token, &again.refresh_token),
        (&retry.access_token, &retry.refresh_token),
        "the same pair each time"
    );
    assert!(sessions.verify(&retry.access_token).await.is_ok());

    // Outside the grace (30 s), the used token again is theft.
    time.advance(Duration::from_secs(30));
    assert!(matches!(
        sessions.refresh(&pair.refresh_token).await,
        Err(SessionError::RefreshReused)
    ));
    assert!(matches!(
        sessions.verify(&retry.access_token).await,
        Err(SessionError::Revoked)
    ));
}
