//! `examples/postgres.rs` through its own routes and setup, against a real PostgreSQL
//! (feature `postgres`, `DATABASE_URL`): acme's notes in the pooled model, globex's in
//! its own schema, both migrated by the example's `migrate`, and a suspended tenant.

use actix_tenancy::{prelude::*, registry::postgres::PostgresRegistry};
use actix_web::{test, web, App};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
}

#[allow(dead_code, unreachable_pub)]
mod example {
    include!("../examples/postgres.rs");
}

#[actix_web::test]
async fn the_postgres_example_keeps_each_tenants_notes_apart() {
    let Some(url) = common::services::service_url("DATABASE_URL") else {
        return;
    };
    // A schema of its own for the example's registry and pooled notes.
    let schema = format!("tenancy_example_{}", std::process::id());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let cleanup = format!(
        "drop schema if exists {schema} cascade; drop schema if exists tenant_globex cascade;"
    );
    sqlx::raw_sql(&cleanup).execute(&admin).await.unwrap();
    sqlx::raw_sql(&format!("create schema {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let options: PgConnectOptions = url.parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let registry = PostgresRegistry::new(pool.clone());
    example::setup(&registry).await.unwrap();
    let data = example::tenant_data(pool).unwrap();
    let report = example::migrate(&registry, &data).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.applied.len(), 1, "globex's own schema");
    assert!(
        matches!(report.shared, Some(Ok(_))),
        "the pooled tenants' shared schema"
    );

    let resolver = TenantResolver::builder(registry)
        .source(Source::header())
        .exempt("/health")
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(data))
            .wrap(resolver)
            .configure(example::routes),
    )
    .await;
    let call = |method: &str, tenant: &str, body: &str| {
        let req = match method {
            "POST" => test::TestRequest::post(),
            _ => test::TestRequest::get(),
        };
        req.uri("/notes")
            .insert_header(("X-Tenant-ID", tenant))
            .set_payload(body.to_owned())
            .to_request()
    };
    for (tenant, note) in [("acme", "acme's note"), ("globex", "globex's note")] {
        let res = test::call_service(&app, call("POST", tenant, note)).await;
        assert_eq!(res.status().as_u16(), 201, "{tenant}");
    }
    for (tenant, note) in [("acme", "acme's note"), ("globex", "globex's note")] {
        let body: serde_json::Value =
            test::call_and_read_body_json(&app, call("GET", tenant, "")).await;
        assert_eq!(
            body,
            serde_json::json!({ "tenant": tenant, "notes": [note] })
        );
    }
    let res = test::call_service(&app, call("GET", "initech", "")).await;
    assert_eq!(res.status().as_u16(), 403, "suspended");
    sqlx::raw_sql(&format!("{cleanup} drop owned by tenant_globex;"))
        .execute(&admin)
        .await
        .unwrap();
}
