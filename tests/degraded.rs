//! The Redis quota's degraded mode, measured: four replicas (four `App`s, each with its
//! own `RedisQuota` in `FallbackLocal` mode) share a Redis of the test's own, which is
//! frozen (SIGSTOP) in the middle of a budget period or a rate window and thawed
//! again. The total admitted across the four before, during and after the outage must
//! stay within the plan; the fallback of earlier versions (a fresh local plan divided
//! by a fixed count, nothing charged back) runs beside it on the same server and its
//! total is printed for comparison.
//!
//! Needs `redis-server` (skips without it outside CI; fails under `CI=true`).

use std::{
    future::IntoFuture as _,
    num::NonZeroU32,
    time::{Duration, Instant},
};

use actix_tenancy::quota::{
    FailureMode, Period, QuotaManager as _, QuotaPlan, QuotaPlans, RedisQuota, TenantQuota,
};
use actix_tenancy::Moment;
use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceResponse},
    test, web, App,
};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
    pub mod stack;
}

/// The test's own Redis on a free port: the server (stopped when dropped, also when
/// the test fails) and its URL.
fn own_redis() -> Option<(OwnRedis, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = common::services::spawn_redis(&["--port", &port.to_string()], port)?;
    Some((OwnRedis(child), format!("redis://127.0.0.1:{port}")))
}

/// A `redis-server` this test started: thawed and killed when dropped.
struct OwnRedis(std::process::Child);

impl std::ops::Deref for OwnRedis {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

const BEAT: Duration = Duration::from_millis(100);

fn quota(url: &str, prefix: &str, plan: QuotaPlan, follow: bool) -> RedisQuota {
    let plans = QuotaPlans::builder().tier("pro", plan).build().unwrap();
    let b = RedisQuota::builder(url, plans)
        .prefix(prefix)
        .timeout(Duration::from_millis(50))
        .heartbeat(BEAT)
        .failure_mode(FailureMode::FallbackLocal {
            // The earlier design's fixed count; the heartbeat's count replaces it.
            replicas: NonZeroU32::new(if follow { 1 } else { 4 }).unwrap(),
        });
    if follow { b } else { b.unfollowed_fallback() }
        .build()
        .unwrap()
}

/// Four replicas: four apps, each with its own quota manager on the same keys.
async fn replicas(
    url: &str,
    prefix: &str,
    plan: &QuotaPlan,
    follow: bool,
) -> Vec<
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
> {
    let mut apps = Vec::new();
    let mut quotas = Vec::new();
    for _ in 0..4 {
        let q = std::sync::Arc::new(quota(url, prefix, plan.clone(), follow));
        quotas.push(std::sync::Arc::clone(&q));
        let tenancy = common::stack::on_header(common::stack::acme_on("pro"))
            .quota(TenantQuota::new(q))
            .build()
            .unwrap();
        apps.push(
            test::init_service(
                App::new()
                    .wrap(tenancy)
                    .route("/", web::get().to(|| async { "ok" })),
            )
            .await,
        );
    }
    // Every replica has counted the four before the test goes on (a loaded machine
    // may delay a beat; the count, once seen, only falls after three low beats).
    let started = Instant::now();
    while quotas.iter().any(|q| q.replicas() != Some(4)) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the heartbeats did not count four replicas: {:?}",
            quotas.iter().map(|q| q.replicas()).collect::<Vec<_>>()
        );
        tokio::time::sleep(BEAT).await;
    }
    apps
}

/// `n` requests round-robin over the apps, `gap` apart; how many were admitted.
async fn admitted<S, B>(apps: &[S], n: usize, gap: Duration) -> usize
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut passed = 0;
    for i in 0..n {
        let req = test::TestRequest::get()
            .uri("/")
            .insert_header(("x-tenant-id", "acme"))
            .to_request();
        match test::call_service(&apps[i % apps.len()], req)
            .await
            .status()
            .as_u16()
        {
            200 => passed += 1,
            429 | 503 => {}
            s => panic!("unexpected status {s}"),
        }
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    passed
}

/// Before, during and after an outage of Redis: the totals admitted.
struct Run {
    before: usize,
    during: usize,
    after: usize,
    elapsed: Duration,
}

impl Run {
    fn total(&self) -> usize {
        self.before + self.during + self.after
    }
}

/// One outage scenario on `plan`: `before` requests on Redis, then Redis frozen for
/// `during` requests, then thawed and `after` requests.
async fn outage(
    redis: &std::process::Child,
    url: &str,
    test: &str,
    plan: &QuotaPlan,
    follow: bool,
    (before, during, after): (usize, usize, usize),
) -> Run {
    let prefix = common::services::unique_prefix("degraded:", test);
    let apps = replicas(url, &prefix, plan, follow).await;
    let started = Instant::now();
    let before = admitted(&apps, before, Duration::ZERO).await;
    signal(redis, "-STOP");
    let during = admitted(&apps, during, Duration::ZERO).await;
    signal(redis, "-CONT");
    // Spread over a second and a half: the replicas pay what they owe and come back.
    let gap = Duration::from_millis(1500) / u32::try_from(after).unwrap();
    let after = admitted(&apps, after, gap).await;
    Run {
        before,
        during,
        after,
        elapsed: started.elapsed(),
    }
}

#[actix_web::test]
async fn a_budget_frozen_mid_period_holds_in_total_across_four_replicas() {
    let Some((redis, url)) = own_redis() else {
        return;
    };
    let plan = QuotaPlan::per_second(10_000).budget(100, Period::Day);
    let load = (60, 100, 200);
    let now = outage(&redis, &url, "budget", &plan, true, load).await;
    let then = outage(&redis, &url, "budget-then", &plan, false, load).await;
    eprintln!(
        "degraded, budget 100/day, 4 replicas, Redis frozen after 60: admitted {} + {} + {} = {} \
         (the earlier fallback: {} + {} + {} = {})",
        now.before,
        now.during,
        now.after,
        now.total(),
        then.before,
        then.during,
        then.after,
        then.total()
    );
    assert_eq!(now.before, 60);
    assert!(
        now.total() <= 100,
        "admitted {} of a budget of 100",
        now.total()
    );
    // The shares of what was left were used: 40 left, 10 a replica.
    assert!(
        now.during >= 30,
        "only {} admitted during the outage",
        now.during
    );
    // The comparison is real: the earlier design overshoots on the same server.
    assert!(
        then.total() > 100,
        "the earlier fallback admitted {}",
        then.total()
    );
}

#[actix_web::test]
async fn a_rate_frozen_mid_window_holds_in_total_across_four_replicas() {
    let Some((redis, url)) = own_redis() else {
        return;
    };
    // A burst of 40, refilled at 40 a minute (one every 1.5 s).
    let plan = QuotaPlan::per_minute(40);
    let load = (20, 100, 200);
    let now = outage(&redis, &url, "rate", &plan, true, load).await;
    let then = outage(&redis, &url, "rate-then", &plan, false, load).await;
    // Burst plus what refills over the elapsed time, at 40 a minute.
    let bound = |run: &Run| 40 + (run.elapsed.as_secs_f64() * 40.0 / 60.0).ceil() as usize;
    eprintln!(
        "degraded, rate 40/min (burst 40), 4 replicas, Redis frozen after 20: admitted \
         {} + {} + {} = {} over {:?}, bound {} (the earlier fallback: {} + {} + {} = {})",
        now.before,
        now.during,
        now.after,
        now.total(),
        now.elapsed,
        bound(&now),
        then.before,
        then.during,
        then.after,
        then.total()
    );
    assert_eq!(now.before, 20);
    assert!(
        now.total() <= bound(&now),
        "admitted {} against a bound of {}",
        now.total(),
        bound(&now)
    );
    assert!(
        now.during >= 12,
        "only {} admitted during the outage",
        now.during
    );
    assert!(
        then.total() > bound(&then),
        "the earlier fallback admitted {}",
        then.total()
    );
}

/// One replica in `FallbackLocal` mode whose tiers `pro` and `basic` both have a day
/// budget of `units` (and a rate that never binds first).
fn one_replica(url: &str, prefix: &str, units: u64) -> RedisQuota {
    let plan = || QuotaPlan::per_second(10_000).budget(units, Period::Day);
    let plans = QuotaPlans::builder()
        .tier("pro", plan())
        .tier("basic", plan())
        .build()
        .unwrap();
    RedisQuota::builder(url, plans)
        .prefix(prefix)
        .timeout(Duration::from_millis(50))
        .heartbeat(BEAT)
        .failure_mode(FailureMode::FallbackLocal {
            replicas: NonZeroU32::new(1).unwrap(),
        })
        .build()
        .unwrap()
}

/// Freezes `redis`, and has `q` find out with a check of a bystander (which times
/// out: from then on the replica decides locally).
async fn freeze(redis: &std::process::Child, q: &RedisQuota) {
    signal(redis, "-STOP");
    let bystander = common::stack::context("bystander", "pro");
    q.check(&bystander, 1, &mut Moment::now()).await.unwrap();
}

/// Thaws `redis` and waits for the replica to pay its debts and go back to Redis
/// (the grace is two beats).
async fn thaw(redis: &std::process::Child) {
    signal(redis, "-CONT");
    tokio::time::sleep(BEAT * 15).await;
}

/// What Redis says is left of `tenant`'s day budget after one more unit.
async fn left_after_one(q: &RedisQuota, tenant: &actix_tenancy::TenantContext) -> u64 {
    let d = q.check(tenant, 1, &mut Moment::now()).await.unwrap();
    assert!(d.allowed, "{d:?}");
    d.budget.unwrap().remaining
}

#[actix_web::test]
async fn a_cost_corrected_during_an_outage_for_a_charge_redis_admitted_reaches_redis() {
    let Some((redis, url)) = own_redis() else {
        return;
    };
    let q = one_replica(
        &url,
        &common::services::unique_prefix("degraded", "up"),
        10_000,
    );
    let acme = common::stack::context("acme", "pro");
    // Charged 1 by Redis; the request turns out to cost 5,000 (an LLM's tokens),
    // and settles while Redis is frozen.
    let charged = q.check(&acme, 1, &mut Moment::now()).await.unwrap();
    assert!(charged.allowed && charged.charged_at.is_some());
    freeze(&redis, &q).await;
    q.settle(&acme, charged.charge(1), 5_000).await.unwrap();
    thaw(&redis).await;
    assert_eq!(left_after_one(&q, &acme).await, 10_000 - 5_000 - 1);

    // The reverse: charged 100 by Redis, refunded to 0 during the outage.
    let q = one_replica(
        &url,
        &common::services::unique_prefix("degraded", "down"),
        10_000,
    );
    let charged = q.check(&acme, 100, &mut Moment::now()).await.unwrap();
    freeze(&redis, &q).await;
    q.settle(&acme, charged.charge(100), 0).await.unwrap();
    thaw(&redis).await;
    assert_eq!(left_after_one(&q, &acme).await, 10_000 - 1);
}

#[actix_web::test]
async fn a_change_of_tier_during_an_outage_keeps_the_debt() {
    let Some((redis, url)) = own_redis() else {
        return;
    };
    let q = one_replica(
        &url,
        &common::services::unique_prefix("degraded", "tier"),
        100,
    );
    let pro = common::stack::context("acme", "pro");
    let basic = common::stack::context("acme", "basic");
    assert!(q.check(&pro, 1, &mut Moment::now()).await.unwrap().allowed);
    freeze(&redis, &q).await;
    for _ in 0..10 {
        assert!(q.check(&pro, 1, &mut Moment::now()).await.unwrap().allowed);
    }
    // Moved to another tier mid-outage: neither a fresh local share nor a debt forgotten.
    assert!(
        q.check(&basic, 1, &mut Moment::now())
            .await
            .unwrap()
            .allowed
    );
    thaw(&redis).await;
    assert_eq!(left_after_one(&q, &basic).await, 100 - 12 - 1);
}

// `test` is actix-web's module here: the standard attribute, spelled in full.
#[::core::prelude::v1::test]
fn a_heartbeat_its_runtime_never_polled_does_not_pin_the_replica_locally() {
    let Some((redis, url)) = own_redis() else {
        return;
    };
    let prefix = common::services::unique_prefix("degraded", "unpolled");
    // Built inside a short-lived runtime: the heartbeat is spawned there and dropped
    // with it, never polled.
    let q = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { one_replica(&url, &prefix, 100) });
    actix_web::rt::System::new().block_on(async {
        let acme = common::stack::context("acme", "pro");
        assert!(q.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
        freeze(&redis, &q).await;
        assert!(q.is_degraded());
        thaw(&redis).await;
        // A heartbeat runs (started again by a check on this runtime): the replica
        // goes back to Redis after the grace; Redis answers (acme's two units).
        assert_eq!(left_after_one(&q, &acme).await, 100 - 2);
        assert!(!q.is_degraded(), "pinned in local mode");
    });
}

/// A `FailClosed` manager whose day budget is `units`, waiting `timeout` for Redis.
fn fail_closed(url: &str, prefix: &str, units: u64, timeout: Duration) -> RedisQuota {
    let plans = QuotaPlans::builder()
        .tier(
            "pro",
            QuotaPlan::per_second(10_000).budget(units, Period::Day),
        )
        .build()
        .unwrap();
    RedisQuota::builder(url, plans)
        .prefix(prefix)
        .timeout(timeout)
        .build()
        .unwrap()
}

#[actix_web::test]
async fn a_check_whose_answer_came_too_late_leaves_no_charge() {
    let Some((redis, url)) = own_redis() else {
        return;
    };
    let prefix = common::services::unique_prefix("degraded", "late");
    let q = fail_closed(&url, &prefix, 3, Duration::from_millis(50));
    let acme = common::stack::context("acme", "pro");
    assert!(q.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
    // Redis runs the next check only once it thaws: its answer comes too late, the
    // request is refused (503), and the charge Redis made then is given back.
    signal(&redis, "-STOP");
    assert!(q.check(&acme, 1, &mut Moment::now()).await.is_err());
    thaw(&redis).await;
    assert!(q.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
    assert!(
        q.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed,
        "the 503 cost nothing"
    );
    assert!(!q.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);

    // A request dropped while its check waits (the client went away) costs nothing
    // either.
    let prefix = common::services::unique_prefix("degraded", "gone");
    let q = fail_closed(&url, &prefix, 2, Duration::from_secs(5));
    assert!(q.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
    signal(&redis, "-STOP");
    let gone = tokio::time::timeout(
        Duration::from_millis(50),
        q.check(&acme, 1, &mut Moment::now()).into_future(),
    )
    .await;
    assert!(gone.is_err(), "dropped while waiting");
    thaw(&redis).await;
    assert!(q.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
    assert!(!q.check(&acme, 1, &mut Moment::now()).await.unwrap().allowed);
}
