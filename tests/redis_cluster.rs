//! The Redis backends on a Redis Cluster (feature `redis-cluster`): the quota and
//! revocation conformance suites, quotas and revocations through an `App`, a tenant's
//! keys in one slot and tenants spread over the shards, and a master killed under load.
//!
//! The shared cluster comes from `REDIS_CLUSTER_URLS` (comma-separated node URLs;
//! `.ci/run` starts three masters); the failover test starts a cluster of its own.
//! Outside CI, a missing cluster or `redis-server` skips; under `CI=true` it fails.

use std::time::{Duration, Instant};

use actix_tenancy::Moment;
use actix_tenancy::{
    prelude::*,
    quota::{FailureMode, Period, QuotaManager, QuotaPlan, QuotaPlans, RedisQuota, TenantQuota},
    session::{Key, KeySet, RedisRevocations, SessionConfig, SessionManager},
    testing, RedisConnection,
};
use actix_web::{http::header, test, web, App};
use jsonwebtoken::Algorithm;

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
    pub mod stack;
}

use common::services::{cluster_urls, unique_prefix};

fn plans() -> QuotaPlans {
    QuotaPlans::builder()
        .tier("rate", QuotaPlan::per_minute(6))
        .tier(
            "budget",
            QuotaPlan::per_minute(1_000).budget(8, Period::Day),
        )
        .tier("pro", QuotaPlan::per_minute(10))
        .build()
        .unwrap()
}

fn quota(nodes: &[String], prefix: &str) -> RedisQuota {
    RedisQuota::cluster(nodes, plans())
        .prefix(prefix)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// A plain connection to one node, for looking at where keys went.
async fn node(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[actix_web::test]
async fn the_quota_suite_passes_on_the_cluster() {
    let Some(nodes) = cluster_urls() else { return };
    let q = quota(&nodes, &unique_prefix("cluster:", "suite"));
    let rate = testing::tenant("acme", "rate");
    let budget = testing::tenant("globex", "budget");
    testing::quota_conformance(&q, (&rate, 6), Some((&budget, 8))).await;
    assert!(!q.is_degraded());
}

#[actix_web::test]
async fn the_revocation_suite_passes_on_the_cluster() {
    let Some(nodes) = cluster_urls() else { return };
    let prefix = unique_prefix("cluster:", "rev") + ":";
    let conn = RedisConnection::cluster(&nodes, Duration::from_secs(2)).unwrap();
    assert!(conn.is_cluster());
    let store = RedisRevocations::with_connection(conn, &prefix, Duration::from_secs(2));
    // Every check reads four keys in one MGET: on a cluster that is a CROSSSLOT error
    // unless they share a slot, so the suite passing shows they do.
    testing::revocation_conformance(&store, "cluster-").await;
}

#[actix_web::test]
async fn two_apps_on_the_cluster_enforce_one_quota() {
    let Some(nodes) = cluster_urls() else { return };
    let prefix = unique_prefix("cluster:", "apps");
    let app = || async {
        let tenancy = common::stack::on_header(common::stack::acme_on("pro"))
            .quota(TenantQuota::new(quota(&nodes, &prefix)))
            .build()
            .unwrap();
        test::init_service(
            App::new()
                .wrap(tenancy)
                .route("/", web::get().to(|| async { "ok" })),
        )
        .await
    };
    let (a, b) = (app().await, app().await);
    let req = || {
        test::TestRequest::get()
            .uri("/")
            .insert_header(("x-tenant-id", "acme"))
            .to_request()
    };
    let mut passed = 0;
    for i in 0..20 {
        let res = if i % 2 == 0 {
            test::call_service(&a, req()).await
        } else {
            test::call_service(&b, req()).await
        };
        match res.status().as_u16() {
            200 => passed += 1,
            429 => assert!(res.headers().contains_key("retry-after")),
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(passed, 10, "one quota of 10 for both apps, on the cluster");
}

#[actix_web::test]
async fn a_tenants_keys_share_a_slot_and_tenants_spread_over_the_masters() {
    let Some(nodes) = cluster_urls() else { return };
    let prefix = unique_prefix("cluster:", "spread");
    let q = quota(&nodes, &prefix);
    for i in 0..48 {
        let t = testing::tenant(&format!("t{i}"), "budget");
        assert!(q.check(&t, 1, &mut Moment::now()).await.unwrap().allowed);
    }
    let mut masters_with_keys = 0;
    for url in &nodes {
        let mut c = node(url).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut c)
            .await
            .unwrap();
        if keys.is_empty() {
            continue;
        }
        masters_with_keys += 1;
        // Each tenant's rate key and budget key: in one slot, on this master.
        for key in keys.iter().filter(|k| k.ends_with(":r")) {
            let budget = keys
                .iter()
                .find(|k| k.starts_with(&key[..key.len() - 1]) && k.contains(":b:"))
                .unwrap_or_else(|| panic!("the budget key of {key} is on another master"));
            let slot = |k: &str| {
                let k = k.to_owned();
                let mut c = c.clone();
                async move {
                    redis::cmd("CLUSTER")
                        .arg("KEYSLOT")
                        .arg(k)
                        .query_async::<i64>(&mut c)
                        .await
                        .unwrap()
                }
            };
            assert_eq!(slot(key).await, slot(budget).await);
        }
    }
    assert!(
        masters_with_keys >= 2,
        "48 tenants all landed on one master: the hash tag is not per tenant"
    );
}

#[actix_web::test]
async fn a_logout_on_the_cluster_is_seen_by_another_replica() {
    let Some(nodes) = cluster_urls() else { return };
    let prefix = unique_prefix("cluster:", "logout") + ":";
    let make = || {
        let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, &[3u8; 32]).unwrap()).unwrap();
        let store = RedisRevocations::with_connection(
            RedisConnection::cluster(&nodes, Duration::from_secs(2)).unwrap(),
            &prefix,
            Duration::from_secs(2),
        );
        SessionManager::new(SessionConfig::new("https://auth.test", "api"), keys).with_store(store)
    };
    let (a, b) = (make(), make());
    let app = |sessions: SessionManager| async move {
        let tenancy = common::stack::on_claim(common::stack::acme_on("pro"))
            .auth(actix_tenancy::session::TenantAuth::new(sessions))
            .build()
            .unwrap();
        test::init_service(App::new().wrap(tenancy).route(
            "/me",
            web::get().to(|t: Tenant| async move { t.id().to_string() }),
        ))
        .await
    };
    let (app_a, app_b) = (app(a.clone()).await, app(b.clone()).await);
    let acme = TenantId::parse("acme").unwrap();
    let pair = a
        .issue(&acme, "alice", actix_tenancy::session::Grant::new())
        .unwrap();
    let req = || {
        test::TestRequest::get()
            .uri("/me")
            .insert_header((
                header::AUTHORIZATION,
                format!("Bearer {}", pair.access_token),
            ))
            .to_request()
    };
    assert_eq!(test::call_service(&app_b, req()).await.status(), 200);
    let token = b.verify(&pair.access_token).await.unwrap();
    a.revoke(token.token_id().unwrap()).await.unwrap();
    assert_eq!(test::call_service(&app_b, req()).await.status(), 401);
    assert_eq!(test::call_service(&app_a, req()).await.status(), 401);
}

/// A master killed while requests flow, on a cluster of the test's own (three masters,
/// a replica each): every request is answered within the timeout by the failure mode,
/// and the service comes back by itself once a replica has taken over.
#[actix_web::test]
async fn a_master_killed_under_load_fails_closed_in_time_and_recovers() {
    let Some(mut cluster) = common::services::spawn_cluster(3, 1) else {
        return;
    };
    let nodes = cluster.urls();
    let prefix = unique_prefix("cluster:", "failover");
    let timeout = Duration::from_millis(200);
    let q = RedisQuota::cluster(&nodes, plans())
        .prefix(&prefix)
        .timeout(timeout)
        .failure_mode(FailureMode::FailClosed)
        .build()
        .unwrap();
    let tenancy = common::stack::on_header(common::stack::acme_on("budget"))
        .quota(TenantQuota::new(q))
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .route("/", web::get().to(|| async { "ok" })),
    )
    .await;
    let req = || {
        test::TestRequest::get()
            .uri("/")
            .insert_header(("x-tenant-id", "acme"))
            .to_request()
    };
    // One request answered, and how long it took.
    let call = || async {
        let started = Instant::now();
        let status = test::call_service(&app, req()).await.status().as_u16();
        (status, started.elapsed())
    };
    assert_eq!(call().await.0, 200);

    let master = cluster.master_for_key(&format!("{prefix}:{{acme}}"));
    cluster.kill(master);
    let started = Instant::now();
    // Back once three answers in a row come from the new master: a cluster client
    // may answer once from a slot map that is still settling, then not.
    let (mut refused, mut slowest, mut back, mut in_a_row) = (0, Duration::ZERO, None, 0);
    while started.elapsed() < Duration::from_secs(30) {
        let (status, took) = call().await;
        slowest = slowest.max(took);
        match status {
            503 => {
                refused += 1;
                in_a_row = 0;
            }
            // The budget of 8 a day: the test's first request and these.
            200 | 429 => {
                in_a_row += 1;
                if in_a_row == 3 {
                    back = Some(started.elapsed());
                    break;
                }
            }
            s => panic!("unexpected status {s} during the failover"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = back.expect("the service did not recover within 30 s of the failover");
    eprintln!(
        "failover: {refused} requests refused (503) while the master was down, \
         back after {back:?}, slowest answer {slowest:?}"
    );
    assert!(
        refused > 0,
        "the outage was not seen: the test proves nothing"
    );
    // Within the timeout, plus what a debug build and a loaded 2-core machine add.
    assert!(
        slowest < timeout + Duration::from_millis(800),
        "a request waited {slowest:?}"
    );
    // And it goes on working (within the day's budget of 8, or refused by it).
    assert!(matches!(call().await.0, 200 | 429));
}

/// A master frozen (SIGSTOP: its connections stay open, it answers nothing) while
/// requests flow, in fallback mode: every request is answered by the local share
/// within the timeout, nothing waits on the frozen shard, and once the master is
/// thawed the replica goes back to Redis by itself.
#[actix_web::test]
async fn a_frozen_master_is_answered_by_the_fallback_in_time_and_left_when_it_thaws() {
    let Some(mut cluster) = common::services::spawn_cluster(3, 0) else {
        return;
    };
    let nodes = cluster.urls();
    let prefix = unique_prefix("cluster:", "frozen");
    let timeout = Duration::from_millis(100);
    let q = std::sync::Arc::new(
        RedisQuota::cluster(&nodes, plans())
            .prefix(&prefix)
            .timeout(timeout)
            .heartbeat(Duration::from_millis(100))
            .failure_mode(FailureMode::FallbackLocal {
                replicas: std::num::NonZeroU32::new(1).unwrap(),
            })
            .build()
            .unwrap(),
    );
    let t = testing::tenant("acme", "budget");
    assert!(q.check(&t, 1, &mut Moment::now()).await.unwrap().allowed);
    let master = cluster.master_for_key(&format!("{prefix}:{{acme}}"));
    cluster.stop(master);
    let (mut slowest, mut admitted) = (Duration::ZERO, 0);
    for _ in 0..20 {
        let started = Instant::now();
        let d = q
            .check(&t, 1, &mut Moment::now())
            .await
            .expect("the fallback answers");
        slowest = slowest.max(started.elapsed());
        admitted += usize::from(d.allowed);
    }
    assert!(q.is_degraded());
    assert!(
        slowest < timeout + Duration::from_millis(400),
        "a check waited {slowest:?}"
    );
    // A budget of 8 a day, one spent before: seven are left, and the share says so.
    assert_eq!(
        admitted, 7,
        "the fallback starts from what Redis said was left"
    );
    cluster.cont(master);
    let started = Instant::now();
    while q.is_degraded() && started.elapsed() < Duration::from_secs(10) {
        let _ = q.check(&t, 1, &mut Moment::now()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !q.is_degraded(),
        "still degraded 10 s after the master thawed"
    );
    // What the fallback admitted was charged back: the day's budget is spent.
    assert!(!q.check(&t, 1, &mut Moment::now()).await.unwrap().allowed);
}
