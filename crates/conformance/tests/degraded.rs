//! The Redis quota on both adapters: when Redis does not answer, the same answers
//! (fail closed, or the local fallback) and the same audit events through actix-tenancy
//! and tower-tenancy; and, with `REDIS_URL` set, one plan held exactly by an actix
//! replica and an axum replica sharing one Redis.

use std::{num::NonZeroU32, time::Duration};

use actix_web::{test as atest, web, App};
use axum::routing::get;
use tenancy_core::quota::{FailureMode, QuotaPlan, QuotaPlans, RedisQuota};
use tower::ServiceExt as _;

#[allow(dead_code, unreachable_pub)]
mod common;

use common::*;

fn plans() -> QuotaPlans {
    QuotaPlans::builder()
        .tier("pro", QuotaPlan::per_second(2))
        .tier("free", QuotaPlan::per_minute(5))
        .build()
        .unwrap()
}

/// A Redis quota on `url` (a port nothing listens on, or a real Redis).
fn redis(url: &str, prefix: &str, mode: FailureMode) -> RedisQuota {
    RedisQuota::builder(url, plans())
        .prefix(prefix)
        .timeout(Duration::from_millis(200))
        .failure_mode(mode)
        .build()
        .unwrap()
}

/// An actix app over `quota`; `send` runs `reqs` through it.
async fn actix_run(quota: RedisQuota, reqs: &[Req]) -> Vec<Got> {
    let audit = Recorder::default();
    let resolver = actix_tenancy::TenantResolver::builder(Registry::new())
        .source(actix_tenancy::Source::header())
        .build()
        .unwrap();
    let tenancy = actix_tenancy::Tenancy::builder()
        .resolver(resolver)
        .quota(actix_tenancy::quota::TenantQuota::new(quota))
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<actix_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let app = atest::init_service(App::new().wrap(tenancy).route("/whoami", web::to(whoami))).await;
    let mut answers = Vec::new();
    for req in reqs {
        let res = atest::call_service(&app, actix_request(req)).await;
        answers.push(actix_answer(res, &audit).await);
    }
    answers
}

fn axum_app(quota: RedisQuota, audit: &Recorder) -> axum::Router {
    let layer = tower_tenancy::TenancyLayer::builder(Registry::new())
        .source(tower_tenancy::Source::header())
        .quota(tower_tenancy::TenantQuota::new(quota))
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<tower_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    axum::Router::new()
        .route("/whoami", get(whoami))
        .layer(layer)
}

async fn axum_run(quota: RedisQuota, reqs: &[Req]) -> Vec<Got> {
    let audit = Recorder::default();
    let app = axum_app(quota, &audit);
    let mut answers = Vec::new();
    for req in reqs {
        let res = app.clone().oneshot(axum_request(req)).await.unwrap();
        answers.push(axum_answer(res, &audit).await);
    }
    answers
}

/// Nothing listens on port 1 of the loopback: every connection is refused at once.
const DOWN: &str = "redis://127.0.0.1:1";

fn three() -> Vec<Req> {
    (0..3)
        .map(|_| get_("/whoami").h("x-tenant-id", "acme"))
        .collect()
}

#[actix_web::test]
async fn with_redis_down_both_adapters_fail_closed_the_same() {
    let on_actix = actix_run(redis(DOWN, "down", FailureMode::FailClosed), &three()).await;
    let on_axum = axum_run(redis(DOWN, "down", FailureMode::FailClosed), &three()).await;
    for (i, (a, x)) in on_actix.iter().zip(&on_axum).enumerate() {
        let want = Want::Refused(503, "quota_unavailable");
        check(&format!("request {i}"), &want, a, "actix");
        check(&format!("request {i}"), &want, x, "axum");
        assert_eq!(a, x, "request {i}: the adapters differ");
    }
    // The reason is for the logs, never the body.
    assert!(!on_axum[0].body.contains("127.0.0.1"), "{:?}", on_axum[0]);
}

#[actix_web::test]
async fn with_redis_down_the_local_fallback_holds_the_plan_on_both_adapters() {
    let fallback = || FailureMode::FallbackLocal {
        replicas: NonZeroU32::new(1).unwrap(),
    };
    let on_actix = actix_run(redis(DOWN, "fallback", fallback()), &three()).await;
    let on_axum = axum_run(redis(DOWN, "fallback", fallback()), &three()).await;
    let statuses = |got: &[Got]| got.iter().map(|g| g.status).collect::<Vec<_>>();
    assert_eq!(statuses(&on_actix), [200, 200, 429], "{on_actix:#?}");
    assert_eq!(on_actix, on_axum, "the adapters differ");
}

/// An actix replica and an axum replica share one Redis: together they admit the
/// plan's burst exactly (5 a minute for `stark`), whichever serves each request.
#[actix_web::test]
async fn an_actix_and_an_axum_replica_share_one_plan_in_redis() {
    let Some(url) = redis_url() else { return };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let prefix = format!("conformance-{}-{}", std::process::id(), now.as_nanos());
    let stark = || get_("/whoami").h("x-tenant-id", "stark");
    let mode = || FailureMode::FailClosed;
    let audit = Recorder::default();
    let axum = axum_app(redis(&url, &prefix, mode()), &audit);
    let resolver = actix_tenancy::TenantResolver::builder(Registry::new())
        .source(actix_tenancy::Source::header())
        .build()
        .unwrap();
    let tenancy = actix_tenancy::Tenancy::builder()
        .resolver(resolver)
        .quota(actix_tenancy::quota::TenantQuota::new(redis(
            &url,
            &prefix,
            mode(),
        )))
        .build()
        .unwrap();
    let actix = atest::init_service(
        App::new()
            .wrap(tenancy)
            .route("/whoami", web::to(|| async { "ok" })),
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let status = if i % 2 == 0 {
            let res = atest::call_service(&actix, actix_request(&stark())).await;
            res.status().as_u16()
        } else {
            let res = axum.clone().oneshot(axum_request(&stark())).await.unwrap();
            res.status().as_u16()
        };
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 5, "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
}

/// `REDIS_URL`, or `None` (the test skips) outside CI; under `CI=true` it must be set.
fn redis_url() -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true but REDIS_URL is not set: the tests that need it cannot be skipped in CI"
            );
            None
        }
    }
}
