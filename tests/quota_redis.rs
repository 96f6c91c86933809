//! `RedisQuota` (feature `redis`). Tests that need a Redis run when `REDIS_URL` is set
//! (CI sets it); the outage tests point at a closed port and always run, and freeze or
//! start a `redis-server` of their own (skipped without one outside CI).

use std::{
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_tenancy::Moment;
use actix_tenancy::{
    prelude::*,
    quota::{
        Charge, FailureMode, Period, QuotaManager, QuotaPlan, QuotaPlans, RedisQuota, TenantQuota,
    },
};
use actix_web::{test, web, App};
use futures_util::future::join_all;
use std::future::IntoFuture as _;

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
    pub mod stack;
}

use common::services::service_url;

fn redis_url() -> Option<String> {
    service_url("REDIS_URL")
}

/// A key prefix no other test or run shares.
fn prefix(test: &str) -> String {
    common::services::unique_prefix("", test)
}

use common::stack::context as ctx;

fn plans(plan: QuotaPlan) -> QuotaPlans {
    QuotaPlans::builder().tier("pro", plan).build().unwrap()
}

#[actix_web::test]
async fn exactly_the_burst_passes_under_concurrency() {
    let Some(url) = redis_url() else { return };
    let q = RedisQuota::builder(url, plans(QuotaPlan::per_minute(20)))
        .prefix(prefix("burst"))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let t = ctx("acme", "pro");
    let answers =
        join_all((0..100).map(|_| q.check(&t, 1, &mut Moment::now()).into_future())).await;
    let passed = answers
        .into_iter()
        .filter(|a| a.as_ref().unwrap().allowed)
        .count();
    assert_eq!(passed, 20);
    let refused = q.check(&t, 1, &mut Moment::now()).await.unwrap();
    let wait = refused.retry_after.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(3),
        "{wait:?}"
    );
    // Another tenant is untouched.
    assert!(
        q.check(&ctx("globex", "pro"), 1, &mut Moment::now())
            .await
            .unwrap()
            .allowed
    );
}

#[actix_web::test]
async fn two_apps_sharing_redis_enforce_one_quota() {
    let Some(url) = redis_url() else { return };
    let shared = prefix("two-apps");
    let app = |url: String, prefix: String| async move {
        let registry = InMemoryRegistry::new()
            .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
        let quota = RedisQuota::builder(url, plans(QuotaPlan::per_minute(10)))
            .prefix(prefix)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let tenancy = Tenancy::builder()
            .resolver(
                TenantResolver::builder(registry)
                    .source(Source::header())
                    .build()
                    .unwrap(),
            )
            .quota(TenantQuota::new(quota))
            .build()
            .unwrap();
        test::init_service(
            App::new()
                .wrap(tenancy)
                .route("/", web::get().to(|| async { "ok" })),
        )
        .await
    };
    let a = app(url.clone(), shared.clone()).await;
    let b = app(url, shared).await;
    let mut passed = 0;
    for i in 0..30 {
        let req = test::TestRequest::get()
            .uri("/")
            .insert_header(("x-tenant-id", "acme"))
            .to_request();
        let res = if i % 2 == 0 {
            test::call_service(&a, req).await
        } else {
            test::call_service(&b, req).await
        };
        if res.status() == 200 {
            passed += 1;
        } else {
            assert_eq!(res.status(), 429);
        }
    }
    assert_eq!(passed, 10, "one quota for both replicas, not 10 each");
}

#[actix_web::test]
async fn budgets_admit_with_the_rate_and_settle_corrects_them() {
    let Some(url) = redis_url() else { return };
    let q = RedisQuota::builder(url, plans(QuotaPlan::per_minute(3).budget(10, Period::Day)))
        .prefix(prefix("budget"))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let t = ctx("acme", "pro");
    let first = q.check(&t, 3, &mut Moment::now()).await.unwrap();
    assert!(first.allowed);
    assert_eq!(first.budget.unwrap().remaining, 7);
    assert_eq!(first.rate.unwrap().remaining, 0);
    // Refused by the rate: the budget keeps its units.
    assert!(!q.check(&t, 1, &mut Moment::now()).await.unwrap().allowed);
    // Refused by the budget (cost 8 > 7 left), without consuming rate: never mind the
    // rate, it is exhausted anyway; the budget state says why.
    let over = q.check(&t, 8, &mut Moment::now()).await.unwrap();
    assert!(!over.allowed);
    assert_eq!(over.budget.unwrap().remaining, 7);
    let reset = over.retry_after.unwrap();
    assert!(reset <= Duration::from_secs(86_400));
    // Charged 3, actually used 1: two units back.
    q.settle(&t, Charge::new(3), 1).await.unwrap();
    let more = q.check(&t, 11, &mut Moment::now()).await.unwrap();
    assert!(
        !more.allowed && more.retry_after.is_none(),
        "more than the budget: never"
    );
    assert_eq!(more.budget.unwrap().remaining, 9);
}

#[actix_web::test]
async fn a_rate_of_requests_beside_a_budget_of_units() {
    let Some(url) = redis_url() else { return };
    let plan = QuotaPlan::per_minute(2)
        .rate_counts_requests(true)
        .budget(1_000, Period::Day);
    let q = RedisQuota::builder(url, plans(plan))
        .prefix(prefix("per-request"))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let t = ctx("acme", "pro");
    assert!(q.check(&t, 400, &mut Moment::now()).await.unwrap().allowed);
    let d = q.check(&t, 400, &mut Moment::now()).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.budget.unwrap().remaining, 200);
    let d = q.check(&t, 1, &mut Moment::now()).await.unwrap();
    assert!(!d.allowed, "two requests used the rate");
    assert!(d.retry_after.is_some());
}

/// An app whose quota is a `RedisQuota` on `url` with the default timeout (50 ms) and
/// failure mode (fail closed), and the mode changes it reported.
async fn fail_closed_app(
    url: String,
    test: &str,
) -> (
    impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    Arc<Mutex<Vec<bool>>>,
) {
    let modes: Arc<Mutex<Vec<bool>>> = Arc::default();
    let seen = Arc::clone(&modes);
    let q = RedisQuota::builder(url, plans(QuotaPlan::per_minute(10)))
        .prefix(prefix(test))
        .on_mode_change(move |degraded| seen.lock().unwrap().push(degraded))
        .build()
        .unwrap();
    let registry =
        InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
    let tenancy = Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .quota(TenantQuota::new(q))
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .route("/", web::get().to(|| async { "ok" })),
    )
    .await;
    (app, modes)
}

/// `RedisQuota`'s default timeout, as documented.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// How much later than due an answer may come: past the timeout the crate only builds
/// a `503`, microseconds of work; the slack is for the scheduler of a loaded 2-core
/// machine, which can hold a runnable thread back for tens, rarely hundreds, of
/// milliseconds (as in `tests/faults.rs`).
const SLACK: Duration = Duration::from_secs(1);

/// One request for acme: its status and how long it took.
async fn timed<S, B>(app: &S) -> (u16, Duration, serde_json::Value)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let started = Instant::now();
    let req = test::TestRequest::get()
        .uri("/")
        .insert_header(("x-tenant-id", "acme"))
        .to_request();
    let res = test::call_service(app, req).await;
    let took = started.elapsed();
    let status = res.status().as_u16();
    let body = serde_json::from_slice(&test::read_body(res).await).unwrap_or_default();
    (status, took, body)
}

/// Redis down both ways, on the default timeout and failure mode: a port that refuses
/// connections is a `503` at once; a server that accepts them and never answers (one
/// of the test's own, frozen with `SIGSTOP`) is a `503` once the 50 ms timeout has
/// run, no sooner, and no later than [`SLACK`] after it.
#[actix_web::test]
async fn redis_down_fails_closed_within_the_timeout() {
    let (app, modes) = fail_closed_app("redis://127.0.0.1:1".into(), "down").await;
    for _ in 0..3 {
        let (status, took, body) = timed(&app).await;
        assert_eq!(status, 503);
        assert_eq!(body["code"], "quota_unavailable");
        assert!(took < SLACK, "refused: answered in {took:?}");
    }
    assert_eq!(
        *modes.lock().unwrap(),
        vec![true],
        "one switch, logged once"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(server) = common::services::spawn_redis(&["--port", &port.to_string()], port) else {
        return;
    };
    let server = OwnRedis(server);
    let (app, modes) = fail_closed_app(format!("redis://127.0.0.1:{port}"), "frozen").await;
    let (status, took, _) = timed(&app).await;
    assert_eq!(status, 200, "served while Redis answers");
    assert!(took < SLACK, "{took:?}");
    server.signal("-STOP");
    for i in 0..3 {
        let (status, took, body) = timed(&app).await;
        assert_eq!(status, 503, "frozen, request {i}");
        assert_eq!(body["code"], "quota_unavailable");
        assert!(
            (DEFAULT_TIMEOUT..DEFAULT_TIMEOUT + SLACK).contains(&took),
            "frozen, request {i}: answered in {took:?}, not at the {DEFAULT_TIMEOUT:?} timeout"
        );
    }
    server.signal("-CONT");
    assert_eq!(
        *modes.lock().unwrap(),
        vec![true],
        "one switch, logged once"
    );
}

/// A `redis-server` of the test's own: thawed and killed when dropped.
struct OwnRedis(std::process::Child);

impl OwnRedis {
    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        // No assertion here: a drop while a failed test unwinds must not panic again.
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_web::test]
async fn redis_down_falls_back_to_a_divided_local_plan() {
    let q = RedisQuota::builder("redis://127.0.0.1:1", plans(QuotaPlan::per_minute(10)))
        .prefix(prefix("fallback"))
        .failure_mode(FailureMode::FallbackLocal {
            replicas: NonZeroU32::new(2).unwrap(),
        })
        .build()
        .unwrap();
    let t = ctx("acme", "pro");
    let mut passed = 0;
    for _ in 0..20 {
        if q.check(&t, 1, &mut Moment::now()).await.unwrap().allowed {
            passed += 1;
        }
    }
    assert_eq!(passed, 5, "10 per minute shared by 2 replicas");
    assert!(q.is_degraded());
}

#[actix_web::test]
async fn recovers_when_redis_comes_back() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but redis-server is not installed"
        );
        eprintln!("redis-server is not installed: skipping");
        return;
    }
    // A port nobody listens on now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let modes: Arc<Mutex<Vec<bool>>> = Arc::default();
    let seen = Arc::clone(&modes);
    let q = RedisQuota::builder(
        format!("redis://127.0.0.1:{port}"),
        plans(QuotaPlan::per_minute(100)),
    )
    .prefix(prefix("recover"))
    .timeout(Duration::from_millis(500))
    .on_mode_change(move |degraded| seen.lock().unwrap().push(degraded))
    .build()
    .unwrap();
    let t = ctx("acme", "pro");
    assert!(
        q.check(&t, 1, &mut Moment::now()).await.is_err(),
        "down: fail closed"
    );
    assert!(q.is_degraded());

    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if q.check(&t, 1, &mut Moment::now()).await.is_ok() {
            recovered = true;
            break;
        }
    }
    server.kill().ok();
    server.wait().ok();
    assert!(recovered, "the manager reconnects on its own");
    assert!(!q.is_degraded());
    assert_eq!(*modes.lock().unwrap(), vec![true, false]);
}

#[actix_web::test]
async fn a_refusal_names_its_limit_and_reports_every_limits_real_remaining() {
    use actix_tenancy::quota::QuotaLimit;
    let Some(url) = redis_url() else { return };
    let q = RedisQuota::builder(
        url,
        plans(QuotaPlan::per_minute(50).budget(100, Period::Day)),
    )
    .prefix(prefix("limit-named"))
    .timeout(Duration::from_secs(2))
    .build()
    .unwrap();
    let t = ctx("acme", "pro");
    let first = q.check(&t, 30, &mut Moment::now()).await.unwrap();
    assert!(first.allowed && first.refused_by.is_none());
    let rate_left = first.rate.unwrap().remaining;
    assert_eq!(rate_left, 20);
    // Refused by the day: the rate, uncharged, reports what it has left.
    let over = q.check(&t, 80, &mut Moment::now()).await.unwrap();
    assert!(!over.allowed);
    assert_eq!(over.refused_by, Some(QuotaLimit::Budget(Period::Day)));
    assert_eq!(over.budget.unwrap().remaining, 70);
    assert!(over.rate.unwrap().remaining >= rate_left, "{:?}", over.rate);
    // Refused by the rate (21 > 20 left): the day, uncharged, reports its 70.
    let fast = q.check(&t, 21, &mut Moment::now()).await.unwrap();
    assert!(!fast.allowed);
    assert_eq!(fast.refused_by, Some(QuotaLimit::Rate));
    assert_eq!(fast.budget.unwrap().remaining, 70);
    assert!(fast.rate.unwrap().remaining >= 20, "{:?}", fast.rate);
}
