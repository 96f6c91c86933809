//! PostgreSQL behind both adapters (the core's, feature `postgres`), with
//! `DATABASE_URL` set:
//! - one registry in a schema of this test's own, cached on each adapter with its
//!   NOTIFY listener; the same answers before and after a back office suspends a
//!   tenant, which both caches learn without waiting for their TTL;
//! - tenant data: each adapter's `TenantTx` in a schema per tenant, one tenant's
//!   writes through one adapter read through the other, and the same refusals for a
//!   tenant without a schema or with a model nobody configured.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{test as atest, web, App};
use axum::routing::get;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tenancy_core::{
    registry::{postgres::PostgresRegistry, CacheConfig, InMemoryRegistry},
    storage::{schema_name, TenantData, TenantMigrations},
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

#[actix_web::test]
async fn both_adapters_scope_a_tenant_transaction_alike() {
    let Some(url) = database_url() else { return };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("cf{}_{}_", std::process::id(), nanos % 1_000_000);
    let admin = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(url.parse::<PgConnectOptions>().unwrap())
        .await
        .unwrap();
    let data = TenantData::builder()
        .schemas(admin.clone(), prefix.as_str())
        .model_attribute("model")
        .build()
        .unwrap();
    let record = |id: &str| TenantRecord::new(TenantId::parse(id).unwrap(), "pro");
    let migrated = [record("acme"), record("stark")];
    let report = TenantMigrations::new()
        .add(
            "0001_notes",
            "create table notes (id bigserial primary key, body text not null)",
        )
        .run(&data, &migrated)
        .await;
    assert!(report.is_complete(), "{report:?}");
    // initech has no schema; wayne's record names a model this deployment lacks.
    let registry = || {
        InMemoryRegistry::from_records(migrated.iter().cloned().chain([
            record("initech"),
            record("wayne").with_attribute("model", "database"),
        ]))
    };

    async fn actix_add(
        mut tx: actix_tenancy::storage::TenantTx,
        body: web::Path<String>,
    ) -> actix_web::Result<String> {
        sqlx::query("insert into notes (body) values ($1)")
            .bind(body.into_inner())
            .execute(&mut *tx)
            .await
            .map_err(actix_tenancy::storage::sql_error)?;
        tx.commit().await?;
        Ok("added".to_owned())
    }
    async fn actix_list(mut tx: actix_tenancy::storage::TenantTx) -> actix_web::Result<String> {
        let notes: Vec<String> = sqlx::query_scalar("select body from notes order by id")
            .fetch_all(&mut *tx)
            .await
            .map_err(actix_tenancy::storage::sql_error)?;
        Ok(format!("{} {}", tx.tenant(), notes.join(",")))
    }
    let actix = atest::init_service(
        App::new()
            .app_data(web::Data::new(data.clone()))
            .wrap(
                actix_tenancy::Tenancy::builder()
                    .resolver(
                        actix_tenancy::TenantResolver::builder(registry())
                            .source(actix_tenancy::Source::header())
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .route("/notes", web::get().to(actix_list))
            .route("/notes/{body}", web::post().to(actix_add)),
    )
    .await;

    use tower_tenancy::{
        storage::{sql_error, TenantTx},
        TenancyError,
    };
    async fn axum_add(
        mut tx: TenantTx,
        axum::extract::Path(body): axum::extract::Path<String>,
    ) -> Result<String, TenancyError> {
        sqlx::query("insert into notes (body) values ($1)")
            .bind(body)
            .execute(&mut *tx)
            .await
            .map_err(sql_error)?;
        tx.commit().await?;
        Ok("added".to_owned())
    }
    async fn axum_list(mut tx: TenantTx) -> Result<String, TenancyError> {
        let notes: Vec<String> = sqlx::query_scalar("select body from notes order by id")
            .fetch_all(&mut *tx)
            .await
            .map_err(sql_error)?;
        Ok(format!("{} {}", tx.tenant(), notes.join(",")))
    }
    let axum = axum::Router::new()
        .route("/notes", get(axum_list))
        .route("/notes/{body}", axum::routing::post(axum_add))
        .layer(
            tower_tenancy::TenancyLayer::builder(registry())
                .source(tower_tenancy::Source::header())
                .build()
                .unwrap(),
        )
        .layer(axum::Extension(data));

    let on_actix = |req: Req| {
        let actix = &actix;
        async move {
            let res = atest::call_service(actix, actix_request(&req)).await;
            actix_answer(res, &Recorder::default()).await
        }
    };
    let on_axum = |req: Req| {
        let axum = axum.clone();
        async move {
            let res = axum.oneshot(axum_request(&req)).await.unwrap();
            axum_answer(res, &Recorder::default()).await
        }
    };
    let write =
        |uri: &'static str, tenant: &'static str| get_(uri).method("POST").h("x-tenant-id", tenant);
    let read = |tenant: &'static str| get_("/notes").h("x-tenant-id", tenant);

    // Writes through one adapter, read through both.
    for (got, adapter) in [
        (on_actix(write("/notes/a1", "acme")).await, "actix"),
        (on_axum(write("/notes/s1", "stark")).await, "axum"),
        (on_axum(write("/notes/a2", "acme")).await, "axum"),
    ] {
        check("a write", &Want::Served("added"), &got, adapter);
    }
    for (tenant, want) in [
        ("acme", Want::Served("acme a1,a2")),
        ("stark", Want::Served("stark s1")),
        ("initech", Want::Refused(503, "tenant_unavailable")),
        ("wayne", Want::Refused(503, "tenant_unavailable")),
        ("nobody", Want::Refused(403, "tenant_forbidden")),
    ] {
        let (a, x) = (on_actix(read(tenant)).await, on_axum(read(tenant)).await);
        check(tenant, &want, &a, "actix");
        check(tenant, &want, &x, "axum");
        assert_eq!(a, x, "{tenant}: the adapters differ");
        assert!(!a.body.contains(&prefix), "no schema in the answer: {a:?}");
    }
    // Without a tenant: both refuse before any query.
    let (a, x) = (
        on_actix(get_("/notes")).await,
        on_axum(get_("/notes")).await,
    );
    check(
        "no tenant",
        &Want::Refused(401, "tenant_missing"),
        &a,
        "actix",
    );
    assert_eq!(a, x, "no tenant: the adapters differ");

    for id in ["acme", "stark"] {
        let name = schema_name(&prefix, &TenantId::parse(id).unwrap()).unwrap();
        sqlx::query(&format!("drop schema if exists \"{name}\" cascade"))
            .execute(&admin)
            .await
            .unwrap();
    }
}
