//! The PostgreSQL registry (the core's, feature `postgres`) behind both adapters:
//! with `DATABASE_URL` set, one registry in a schema of this test's own, cached on each
//! adapter with its NOTIFY listener; the same answers before and after a back office
//! suspends a tenant, which both caches learn without waiting for their TTL.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{test as atest, web, App};
use axum::routing::get;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tenancy_core::{
    registry::{postgres::PostgresRegistry, CacheConfig},
    TenantId, TenantRecord,
};
use tower::ServiceExt as _;

#[allow(dead_code, unreachable_pub)]
mod common;

use common::*;

/// `DATABASE_URL`, or `None` (the test skips) outside CI; under `CI=true` it must be
/// set.
fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true but DATABASE_URL is not set: the tests that need it cannot be skipped in CI"
            );
            None
        }
    }
}

#[actix_web::test]
async fn both_adapters_serve_from_one_postgres_registry_and_learn_a_suspension() {
    let Some(url) = database_url() else { return };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!(
        "conformance_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000
    );
    let base: PgConnectOptions = url.parse().unwrap();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone())
        .await
        .unwrap();
    sqlx::query(&format!("create schema {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(base.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    // One registry a replica (each with its cache and listener), and the back office's.
    let replica = || {
        PostgresRegistry::builder(pool.clone())
            .channel(schema.as_str())
            .build()
            .unwrap()
    };
    let registry = replica();
    registry.migrate().await.unwrap();
    for (id, tier) in [("acme", "pro"), ("stark", "free")] {
        let record = TenantRecord::new(TenantId::parse(id).unwrap(), tier);
        registry.create(&record).await.unwrap();
    }
    let ttl = CacheConfig::default().ttl(Duration::from_secs(300));
    let (actix_cache, _actix_listener) = replica().cached(ttl).unwrap();
    let (axum_cache, _axum_listener) = replica().cached(ttl).unwrap();

    let resolver = actix_tenancy::TenantResolver::builder(actix_cache)
        .source(actix_tenancy::Source::header())
        .build()
        .unwrap();
    async fn whoami(t: Option<actix_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let actix = atest::init_service(
        App::new()
            .wrap(
                actix_tenancy::Tenancy::builder()
                    .resolver(resolver)
                    .build()
                    .unwrap(),
            )
            .route("/whoami", web::to(whoami)),
    )
    .await;
    async fn axum_whoami(t: Option<tower_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let axum = axum::Router::new()
        .route("/whoami", get(axum_whoami))
        .layer(
            tower_tenancy::TenancyLayer::builder(axum_cache)
                .source(tower_tenancy::Source::header())
                .build()
                .unwrap(),
        );
    let ask = |tenant: &'static str| get_("/whoami").h("x-tenant-id", tenant);
    let both = |tenant: &'static str| {
        let (actix, axum) = (&actix, axum.clone());
        async move {
            let res = atest::call_service(actix, actix_request(&ask(tenant))).await;
            let a = actix_answer(res, &Recorder::default()).await;
            let res = axum.oneshot(axum_request(&ask(tenant))).await.unwrap();
            let x = axum_answer(res, &Recorder::default()).await;
            (a, x)
        }
    };

    for (tenant, want) in [
        ("acme", Want::Served("acme header")),
        ("stark", Want::Served("stark header")),
        ("nobody", Want::Refused(403, "tenant_forbidden")),
    ] {
        let (a, x) = both(tenant).await;
        check(tenant, &want, &a, "actix");
        check(tenant, &want, &x, "axum");
        assert_eq!(a, x, "{tenant}: the adapters differ");
    }

    // A back office suspends acme: both caches (TTL five minutes) hear of it.
    registry.suspend("acme").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (a, x) = both("acme").await;
        if a.status == 403 && x.status == 403 {
            assert_eq!(a, x, "the adapters differ after the suspension");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the suspension did not reach both caches within 10 s: {a:?} {x:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((_actix_listener, _axum_listener));
    sqlx::query(&format!("drop schema if exists {schema} cascade"))
        .execute(&admin)
        .await
        .unwrap();
}
