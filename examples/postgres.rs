// Tenants in PostgreSQL, kept fresh across replicas, with row-level security.
//
//     DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//         cargo run --example postgres --features postgres
//     curl -s localhost:8080/notes -H 'X-Tenant-ID: acme'
//     curl -s localhost:8080/notes -H 'X-Tenant-ID: acme' -d 'buy milk'
//     curl -s localhost:8080/notes -H 'X-Tenant-ID: globex'     # not acme's notes
//     curl -s localhost:8080/notes -H 'X-Tenant-ID: initech'    # suspended: 403
//
// On start it applies the registry migration and the example RLS migration
// (`examples/notes_rls.sql`), creates the role `tenancy_app` the queries run as (RLS
// does not bind a superuser), and adds the tenants `acme`, `globex` and, suspended,
// `initech`, unless they exist. Suspend or reactivate a tenant from psql, on any
// replica, and every running copy of this example notices within about a second:
//
//     update tenants set status = 'suspended' where id = 'acme';
//     select pg_notify('actix_tenancy_tenants', 'acme');
//
// Listens on 127.0.0.1:8080 unless `BIND_ADDR` says otherwise.

use std::time::Duration;

use actix_tenancy::{
    prelude::*,
    registry::postgres::{AdminError, PostgresRegistry, TenantDb},
};
use actix_web::{
    error::ErrorInternalServerError, middleware::Logger, web, App, HttpResponse, HttpServer,
};
use sqlx::postgres::PgPoolOptions;

const NOTES_RLS: &str = include_str!("notes_rls.sql");
const APP_ROLE: &str = "tenancy_app";

/// The tenant's notes: no `where tenant_id = ...`, the RLS policy adds it.
async fn list_notes(db: web::Data<TenantDb>, tenant: Tenant) -> actix_web::Result<HttpResponse> {
    let mut tx = db
        .begin(tenant.id())
        .await
        .map_err(ErrorInternalServerError)?;
    let notes: Vec<String> = sqlx::query_scalar("select body from notes order by id")
        .fetch_all(&mut *tx)
        .await
        .map_err(ErrorInternalServerError)?;
    tx.commit().await.map_err(ErrorInternalServerError)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tenant": tenant.id(), "notes": notes })))
}

/// Adds a note; `tenant_id` defaults to the transaction's tenant.
async fn add_note(
    db: web::Data<TenantDb>,
    tenant: Tenant,
    body: String,
) -> actix_web::Result<HttpResponse> {
    let mut tx = db
        .begin(tenant.id())
        .await
        .map_err(ErrorInternalServerError)?;
    sqlx::query("insert into notes (body) values ($1)")
        .bind(body)
        .execute(&mut *tx)
        .await
        .map_err(ErrorInternalServerError)?;
    tx.commit().await.map_err(ErrorInternalServerError)?;
    Ok(HttpResponse::Created().finish())
}

/// Creates a tenant unless it exists.
async fn ensure(registry: &PostgresRegistry, record: TenantRecord) -> Result<(), AdminError> {
    match registry.create(&record).await {
        Ok(_) | Err(AdminError::AlreadyExists) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn setup(registry: &PostgresRegistry) -> Result<(), Box<dyn std::error::Error>> {
    registry.migrate().await?;
    let pool = registry.pool();
    sqlx::raw_sql(NOTES_RLS).execute(pool).await?;
    sqlx::raw_sql(&format!(
        "do $$ begin create role {APP_ROLE} nologin; \
         exception when duplicate_object or unique_violation then null; end $$; \
         grant usage on schema public to {APP_ROLE}; \
         grant select, insert on notes to {APP_ROLE}; \
         grant usage on sequence notes_id_seq to {APP_ROLE};"
    ))
    .execute(pool)
    .await?;
    let id = |s: &str| TenantId::parse(s);
    ensure(registry, TenantRecord::new(id("acme")?, "pro")).await?;
    ensure(registry, TenantRecord::new(id("globex")?, "free")).await?;
    ensure(
        registry,
        TenantRecord::new(id("initech")?, "pro").with_status(TenantStatus::Suspended),
    )
    .await?;
    Ok(())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/test")?;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await?;
    let registry = PostgresRegistry::new(pool.clone());
    setup(&registry).await?;

    // Once per process, outside `HttpServer::new`'s closure: one cache, one listener.
    // `_listener` lives as long as `main`; dropping it would stop the invalidations.
    let (cache, _listener) =
        registry.cached(CacheConfig::default().ttl(Duration::from_secs(30)))?;
    let resolver = TenantResolver::builder(cache)
        .source(Source::header())
        .exempt("/health")
        .build()?;
    let db = web::Data::new(TenantDb::new(pool).with_role(APP_ROLE)?);

    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    println!("postgres example listening on http://{addr}");
    HttpServer::new(move || {
        App::new()
            .app_data(db.clone())
            .wrap(resolver.clone())
            .wrap(Logger::default())
            .route("/health", web::get().to(HttpResponse::Ok))
            .route("/notes", web::get().to(list_notes))
            .route("/notes", web::post().to(add_note))
    })
    .bind(addr)?
    .run()
    .await?;
    Ok(())
}
