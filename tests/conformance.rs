//! The test kit's conformance suites (feature `testing`) against the crate's own
//! backends: the in-memory and cached registries, `PostgresRegistry` (with
//! `DATABASE_URL`, and down), `InMemoryRevocations` and `RedisRevocations` (with
//! `REDIS_URL`), `LocalQuota` and `RedisQuota`. Users run the same suites against their own implementations.

use std::{sync::Arc, time::Duration};

use actix_tenancy::{
    prelude::*,
    quota::{
        Charge, LocalQuota, Period, QuotaDecision, QuotaError, QuotaManager, QuotaPlan, QuotaPlans,
        RedisQuota,
    },
    registry::postgres::PostgresRegistry,
    session::{InMemoryRevocations, RedisRevocations},
    testing, Answer, Moment,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
}

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

#[actix_web::test]
async fn the_in_memory_and_cached_registries_conform() {
    let memory = Arc::new(InMemoryRegistry::new().with(TenantRecord::new(id("acme"), "pro")));
    testing::registry_conformance(&memory, &id("acme"), &id("nobody")).await;
    let cached = CachedRegistry::new(Arc::clone(&memory), CacheConfig::default());
    testing::registry_conformance(&cached, &id("acme"), &id("nobody")).await;
    // Twice: the second pass answers from the cache.
    testing::registry_conformance(&cached, &id("acme"), &id("nobody")).await;
}

#[actix_web::test]
async fn the_postgres_registry_conforms_up_and_down() {
    // Down: a closed port answers Err, never "not found".
    let down = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    testing::registry_unavailable(&PostgresRegistry::new(down), &id("acme")).await;

    let Some(url) = common::services::service_url("DATABASE_URL") else {
        return;
    };
    let schema = format!("tenancy_conformance_{}", std::process::id());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "drop schema if exists {schema} cascade; create schema {schema}"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let options: PgConnectOptions = url.parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let registry = PostgresRegistry::new(pool);
    registry.migrate().await.unwrap();
    registry
        .create(&TenantRecord::new(id("acme"), "pro"))
        .await
        .unwrap();
    testing::registry_conformance(&registry, &id("acme"), &id("nobody")).await;
    sqlx::raw_sql(&format!("drop schema {schema} cascade"))
        .execute(&admin)
        .await
        .unwrap();
}

#[actix_web::test]
async fn the_revocation_stores_conform() {
    testing::revocation_conformance(&InMemoryRevocations::new(), "mem-").await;
    let Some(url) = common::services::service_url("REDIS_URL") else {
        return;
    };
    let prefix = common::services::unique_prefix("conformance:", "rev") + ":";
    let store = RedisRevocations::with_options(&url, &prefix, Duration::from_secs(2)).unwrap();
    testing::revocation_conformance(&store, "redis-").await;
}

fn quota_plans() -> QuotaPlans {
    QuotaPlans::builder()
        .tier("rate", QuotaPlan::per_minute(6))
        .tier(
            "budget",
            QuotaPlan::per_minute(1_000).budget(8, Period::Day),
        )
        .build()
        .unwrap()
}

#[actix_web::test]
async fn the_local_and_redis_quotas_conform() {
    let (rate, budget) = (
        testing::tenant("acme", "rate"),
        testing::tenant("globex", "budget"),
    );
    let local = LocalQuota::new(quota_plans());
    testing::quota_conformance(&local, (&rate, 6), Some((&budget, 8))).await;
    // On a fake clock too, and it never moves by itself.
    let fake = LocalQuota::with_clock(quota_plans(), testing::FakeClock::new().clock());
    testing::quota_conformance(&fake, (&rate, 6), Some((&budget, 8))).await;

    let Some(url) = common::services::service_url("REDIS_URL") else {
        return;
    };
    let redis = RedisQuota::builder(url, quota_plans())
        .prefix(common::services::unique_prefix("conformance:", "quota"))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    testing::quota_conformance(&redis, (&rate, 6), Some((&budget, 8))).await;
}

/// The suite is not vacuous: a manager that admits everything fails it.
#[actix_web::test]
#[should_panic(expected = "concurrent checks against a burst of 6 admitted 24")]
async fn a_manager_that_admits_everything_fails_the_quota_suite() {
    struct Open;
    impl QuotaManager for Open {
        fn check<'a>(
            &'a self,
            _: &'a TenantContext,
            _: u32,
            _: &mut Moment,
        ) -> Answer<'a, Result<QuotaDecision, QuotaError>> {
            Answer::later(async { Ok(QuotaDecision::allow()) })
        }
        fn settle<'a>(
            &'a self,
            _: &'a TenantContext,
            _: Charge,
            _: u32,
        ) -> Answer<'a, Result<(), QuotaError>> {
            Answer::Now(Ok(()))
        }
    }
    testing::quota_conformance(&Open, (&testing::tenant("acme", "rate"), 6), None).await;
}
