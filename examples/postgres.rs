// Tenants in PostgreSQL, kept fresh across replicas, and their data scoped to them:
// acme's notes are rows under row-level security (the pooled model), globex's live in
// a schema of its own (its record says `"isolation": "schema"`).
//
//     DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//         cargo run --example postgres --features postgres
//     DATABASE_URL=... cargo run --example postgres --features postgres -- migrate
//     curl -s localhost:8080/notes -H 'X-Tenant-ID: acme'
//     curl -s localhost:8080/notes -H 'X-Tenant-ID: acme' -d 'buy milk'
//     curl -s localhost:8080/notes -H 'X-Tenant-ID: globex'     # not acme's notes
//     curl -s localhost:8080/notes -H 'X-Tenant-ID: initech'    # suspended: 403
//
// On start it applies the registry migration and the example RLS migration
// (`examples/notes_rls.sql`), creates the role `tenancy_app` the pooled queries run as
// (RLS does not bind a superuser), adds the tenants `acme`, `globex` (in its own
// schema) and, suspended, `initech`, unless they exist, and migrates every tenant's
// schema (`migrate` does only that, with a line per tenant, or a bar on a terminal). Suspend or reactivate a tenant from psql, on any
// replica, and every running copy of this example notices within about a second:
//
//     update tenants set status = 'suspended' where id = 'acme';
//     select pg_notify('actix_tenancy_tenants', 'acme');
//
// Listens on 127.0.0.1:8080 unless `BIND_ADDR` says otherwise.

use std::{io::IsTerminal as _, time::Duration};

use actix_tenancy::{
    prelude::*,
    registry::postgres::{AdminError, PostgresRegistry},
    storage::{sql_error, MigrationReport, Model, TenantData, TenantMigrations, TenantTx},
};
use actix_web::{middleware::Logger, web, App, HttpResponse, HttpServer};
use sqlx::{postgres::PgPoolOptions, PgPool};

const NOTES_RLS: &str = include_str!("notes_rls.sql");
const APP_ROLE: &str = "tenancy_app";
/// The schema of a tenant whose record says `"isolation": "schema"`: `tenant_<id>`.
pub const SCHEMA_PREFIX: &str = "tenant_";

/// The tenant's notes: no `where tenant_id = ...`; the transaction is the tenant's
/// (row-level security adds the filter in the pooled model, the schema does in the
/// other).
/// JSON ending in a newline, so a shell prompt after `curl` starts on its own line.
fn json(value: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(value.to_string() + "\n")
}

async fn list_notes(mut tx: TenantTx, tenant: Tenant) -> actix_web::Result<HttpResponse> {
    let notes: Vec<String> = sqlx::query_scalar("select body from notes order by id")
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_error)?;
    tx.commit().await?;
    Ok(json(
        serde_json::json!({ "tenant": tenant.id(), "notes": notes }),
    ))
}

/// Adds a note (in the pooled model `tenant_id` defaults to the transaction's tenant).
async fn add_note(mut tx: TenantTx, body: String) -> actix_web::Result<HttpResponse> {
    sqlx::query("insert into notes (body) values ($1)")
        .bind(body)
        .execute(&mut *tx)
        .await
        .map_err(sql_error)?;
    tx.commit().await?;
    Ok(HttpResponse::Created().finish())
}

/// The routes; the app data must hold `web::Data<TenantData>`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(HttpResponse::Ok))
        .route("/notes", web::get().to(list_notes))
        .route("/notes", web::post().to(add_note));
}

/// Creates a tenant unless it exists.
async fn ensure(registry: &PostgresRegistry, record: TenantRecord) -> Result<(), AdminError> {
    match registry.create(&record).await {
        Ok(_) | Err(AdminError::AlreadyExists) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where each tenant's data is: pooled by default, or a schema of its own.
pub fn tenant_data(pool: PgPool) -> Result<TenantData, actix_tenancy::error::ConfigError> {
    TenantData::builder()
        .pooled(pool.clone())
        .role(APP_ROLE)
        .schemas(pool, SCHEMA_PREFIX)
        .schema_roles(true)
        .default_model(Model::Pooled)
        .model_attribute("isolation")
        .build()
}

/// The registry and the pooled notes table, the role, and the demo tenants.
pub async fn setup(registry: &PostgresRegistry) -> Result<(), Box<dyn std::error::Error>> {
    registry.migrate().await?;
    let pool = registry.pool();
    sqlx::raw_sql(NOTES_RLS).execute(pool).await?;
    sqlx::raw_sql(&format!(
        "do $$ begin create role {APP_ROLE} nologin; \
         exception when duplicate_object or unique_violation then null; end $$; \
         do $$ begin execute format('grant usage on schema %I to {APP_ROLE}', current_schema()); end $$; \
         grant select, insert on notes to {APP_ROLE}; \
         grant usage on sequence notes_id_seq to {APP_ROLE};"
    ))
    .execute(pool)
    .await?;
    let id = |s: &str| TenantId::parse(s);
    ensure(registry, TenantRecord::new(id("acme")?, "pro")).await?;
    let own_schema = TenantRecord::new(id("globex")?, "free").with_attribute("isolation", "schema");
    ensure(registry, own_schema).await?;
    ensure(
        registry,
        TenantRecord::new(id("initech")?, "pro").with_status(TenantStatus::Suspended),
    )
    .await?;
    Ok(())
}

/// The tenant schemas' migrations, applied to every tenant in the registry: a line per
/// tenant, or a bar on a terminal.
pub async fn migrate(
    registry: &PostgresRegistry,
    data: &TenantData,
) -> Result<MigrationReport, Box<dyn std::error::Error>> {
    let tenants = registry.list().await?;
    let bar = std::io::stderr().is_terminal();
    let report = TenantMigrations::new()
        .add(
            "0001_notes",
            "create table if not exists notes (id bigserial primary key, body text not null)",
        )
        .on_progress(move |p| {
            let who = p.tenant.map_or("(shared schema)", |t| t.as_str());
            let what = p.error.map_or_else(
                || format!("{} applied", p.applied),
                |e| format!("failed: {e}"),
            );
            if bar {
                let filled = p.done * 30 / p.total.max(1);
                eprint!(
                    "\r[{}{}] {}/{} {who}: {what}\x1b[K",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    p.done,
                    p.total
                );
                if p.done == p.total {
                    eprintln!();
                }
            } else {
                eprintln!("migrate {}/{} {who}: {what}", p.done, p.total);
            }
        })
        .run(data, &tenants)
        .await;
    for (tenant, why) in &report.failed {
        eprintln!("migration failed for {tenant}: {why}");
    }
    Ok(report)
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
    let data = tenant_data(pool)?;
    let report = migrate(&registry, &data).await?;
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        std::process::exit(if report.is_complete() { 0 } else { 1 });
    }

    // Once per process, outside `HttpServer::new`'s closure: one cache, one listener.
    // `_listener` lives as long as `main`; dropping it would stop the invalidations.
    let (cache, _listener) =
        registry.cached(CacheConfig::default().ttl(Duration::from_secs(30)))?;
    let resolver = TenantResolver::builder(cache)
        .source(Source::header())
        .exempt("/health")
        .build()?;
    let data = web::Data::new(data);

    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(resolver.clone())
            .wrap(Logger::default())
            .configure(routes)
    })
    .bind(addr)?;
    for bound in server.addrs() {
        println!("postgres example listening on http://{bound}");
    }
    server.run().await?;
    Ok(())
}
