//! Tenant data through a real `App` and a real PostgreSQL (feature `postgres`): the
//! `TenantTx` extractor in the three isolation models, the pool bound of the
//! database-per-tenant model, a tenant moved to its own database, and migrations over
//! many tenant schemas. They run when `DATABASE_URL` is set (CI sets it).

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use actix_tenancy::{
    prelude::*,
    storage::{DatabaseUrls, Model, TenantData, TenantMigrations, TenantTx},
};
use actix_web::{test, web, App, HttpResponse};
use sqlx::{postgres::PgPoolOptions, PgPool};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
}

/// A name no other test or run shares: `st<pid>_<seq>_`.
fn unique(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "st{}_{}{tag}_",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `sql` (statements) as the administrator.
async fn exec(admin: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(admin).await.unwrap();
}

async fn admin() -> Option<(String, PgPool)> {
    let url = common::services::service_url("DATABASE_URL")?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("connect to DATABASE_URL");
    Some((url, pool))
}

fn records(ids: &[&str]) -> Vec<TenantRecord> {
    ids.iter()
        .map(|id| TenantRecord::new(TenantId::parse(id).unwrap(), "pro"))
        .collect()
}

async fn add(mut tx: TenantTx, body: String) -> actix_web::Result<HttpResponse> {
    sqlx::query("insert into notes (body) values ($1)")
        .bind(body)
        .execute(&mut *tx)
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    tx.commit().await?;
    Ok(HttpResponse::Created().finish())
}

async fn list(mut tx: TenantTx) -> actix_web::Result<HttpResponse> {
    let notes: Vec<String> = sqlx::query_scalar("select body from notes order by id")
        .fetch_all(&mut *tx)
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    Ok(HttpResponse::Ok().json(notes))
}

/// Runs the crafted query `sql` in the tenant's transaction: its rows, or `500` with
/// the database's refusal.
async fn crafted(mut tx: TenantTx, sql: web::Data<String>) -> HttpResponse {
    match sqlx::query_scalar::<_, String>(sql.as_str())
        .fetch_all(&mut *tx)
        .await
    {
        Ok(rows) => match tx.commit().await {
            Ok(()) => HttpResponse::Ok().json(rows),
            Err(_) => HttpResponse::InternalServerError().finish(),
        },
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

macro_rules! app {
    ($registry:expr, $data:expr, $crafted:expr) => {
        test::init_service(
            App::new()
                .wrap(
                    TenantResolver::builder($registry)
                        .source(Source::header())
                        .build()
                        .unwrap(),
                )
                .app_data(web::Data::new($data))
                .app_data(web::Data::new(String::from($crafted)))
                .route("/notes", web::post().to(add))
                .route("/notes", web::get().to(list))
                .route("/crafted", web::get().to(crafted)),
        )
        .await
    };
}

async fn call<S, B>(app: &S, method: &str, path: &str, tenant: &str, body: &str) -> (u16, String)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let req = match method {
        "POST" => test::TestRequest::post(),
        _ => test::TestRequest::get(),
    }
    .uri(path)
    .insert_header(("X-Tenant-ID", tenant))
    .set_payload(body.to_owned())
    .to_request();
    let res = test::call_service(app, req).await;
    let status = res.status().as_u16();
    (
        status,
        String::from_utf8(test::read_body(res).await.to_vec()).unwrap(),
    )
}

/// Each of two tenants writes and reads through the same handlers and sees only its
/// own notes.
async fn each_sees_only_its_own<S, B>(app: &S)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    assert_eq!(
        call(app, "POST", "/notes", "acme", "acme's plan").await.0,
        201
    );
    assert_eq!(
        call(app, "POST", "/notes", "globex", "globex's plan")
            .await
            .0,
        201
    );
    assert_eq!(
        call(app, "GET", "/notes", "acme", "").await,
        (200, r#"["acme's plan"]"#.into())
    );
    assert_eq!(
        call(app, "GET", "/notes", "globex", "").await,
        (200, r#"["globex's plan"]"#.into())
    );
}

#[actix_web::test]
async fn pooled_tenants_see_only_their_rows_and_a_crafted_query_gets_none() {
    let Some((_, admin)) = admin().await else {
        return;
    };
    let schema = unique("pool");
    let role = format!("{schema}app");
    let setup = format!(
        "create schema {schema};
         create table {schema}.notes (id bigserial primary key,
             tenant_id text not null default current_setting('app.tenant_id', true), body text not null);
         alter table {schema}.notes enable row level security;
         alter table {schema}.notes force row level security;
         create policy by_tenant on {schema}.notes using (tenant_id = current_setting('app.tenant_id', true))
             with check (tenant_id = current_setting('app.tenant_id', true));
         create role {role} nologin;
         grant usage on schema {schema} to {role};
         grant select, insert on {schema}.notes to {role};
         grant usage on all sequences in schema {schema} to {role};"
    );
    exec(&admin, &setup).await;
    let url = common::services::service_url("DATABASE_URL").unwrap();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let data = TenantData::builder()
        .pooled(pool)
        .role(&role)
        .build()
        .unwrap();
    let registry = InMemoryRegistry::from_records(records(&["acme", "globex"]));
    let app = app!(
        registry,
        data,
        "select body from notes where tenant_id = 'globex'"
    );
    each_sees_only_its_own(&app).await;
    assert_eq!(
        call(&app, "GET", "/crafted", "acme", "").await,
        (200, "[]".into())
    );
    exec(
        &admin,
        &format!("drop schema {schema} cascade; drop role {role};"),
    )
    .await;
}

#[actix_web::test]
async fn schema_tenants_are_apart_and_another_schema_is_a_permission_error() {
    let Some((_, admin)) = admin().await else {
        return;
    };
    let prefix = unique("sch");
    let data = TenantData::builder()
        .schemas(admin.clone(), &prefix)
        .schema_roles(true)
        .build()
        .unwrap();
    let tenants = records(&["acme", "globex"]);
    notes_table(&data, &tenants).await;
    let other = format!("select body from {prefix}globex.notes");
    let app = app!(
        InMemoryRegistry::from_records(tenants.clone()),
        data.clone(),
        other
    );
    each_sees_only_its_own(&app).await;
    let (status, body) = call(&app, "GET", "/crafted", "acme", "").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("permission denied"), "{body}");
    // A tenant whose schema was never made: 503, never another schema.
    let app = app!(
        InMemoryRegistry::from_records(records(&["acme", "initech"])),
        data,
        "select 'x'"
    );
    let (status, body) = call(&app, "GET", "/notes", "initech", "").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        !body.contains(&prefix),
        "no schema name in the answer: {body}"
    );
    drop_schemas(&admin, &prefix, &["acme", "globex"], true).await;
}

async fn drop_schemas(admin: &PgPool, prefix: &str, ids: &[&str], roles: bool) {
    for id in ids {
        let name =
            actix_tenancy::storage::schema_name(prefix, &TenantId::parse(id).unwrap()).unwrap();
        let mut sql = format!("drop schema if exists \"{name}\" cascade;");
        if roles {
            sql.push_str(&format!(
                "drop owned by \"{name}\"; drop role if exists \"{name}\";"
            ));
        }
        exec(admin, &sql).await;
    }
}

/// Migrates `tenants` to a `notes` table, which must succeed.
async fn notes_table(data: &TenantData, tenants: &[TenantRecord]) {
    let report = TenantMigrations::new()
        .add(
            "0001_notes",
            "create table notes (id bigserial primary key, body text not null)",
        )
        .run(data, tenants)
        .await;
    assert!(report.is_complete(), "{report:?}");
}

/// Creates databases named `{base}{id}` and returns the URL template for them.
async fn databases(admin: &PgPool, url: &str, base: &str, ids: &[&str]) -> String {
    for id in ids {
        exec(admin, &format!("create database \"{base}{id}\"")).await;
    }
    let (server, _) = url.rsplit_once('/').unwrap();
    format!("{server}/{base}{{tenant}}")
}

async fn drop_databases(admin: &PgPool, base: &str, ids: &[&str]) {
    for id in ids {
        exec(
            admin,
            &format!("drop database if exists \"{base}{id}\" with (force)"),
        )
        .await;
    }
}

#[actix_web::test]
async fn database_tenants_are_apart_and_a_moved_tenant_goes_to_its_new_database() {
    let Some((url, admin)) = admin().await else {
        return;
    };
    let base = unique("db");
    let ids = ["acme", "globex", "acme2", "initech"];
    let template = databases(&admin, &url, &base, &ids).await;
    // The pooled tenants' notes, in a schema of this test's.
    let shared = format!("{base}pooled");
    exec(
        &admin,
        &format!("create schema {shared}; create table {shared}.notes (id bigserial primary key, body text not null)"),
    )
    .await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let pooled = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", shared.as_str())]))
        .await
        .unwrap();
    let data = TenantData::builder()
        .pooled(pooled.clone())
        .databases(DatabaseUrls::Attribute("database_url".into()))
        .default_model(Model::Pooled)
        .model_attribute("isolation")
        .build()
        .unwrap();
    let on_db = |id: &str, db: &str| {
        TenantRecord::new(TenantId::parse(id).unwrap(), "enterprise")
            .with_attribute("isolation", "database")
            .with_attribute("database_url", template.replace("{tenant}", db))
    };
    let registry = std::sync::Arc::new(
        InMemoryRegistry::new()
            .with(on_db("acme", "acme"))
            .with(on_db("globex", "globex"))
            .with(TenantRecord::new(
                TenantId::parse("initech").unwrap(),
                "free",
            )),
    );
    let report = TenantMigrations::new()
        .add(
            "0001_notes",
            "create table notes (id bigserial primary key, body text not null)",
        )
        .run(
            &data,
            &[
                on_db("acme", "acme"),
                on_db("globex", "globex"),
                // acme's next database, provisioned before the move.
                on_db("acme", "acme2"),
                on_db("initech", "initech"),
            ],
        )
        .await;
    assert!(report.is_complete(), "{report:?}");
    let app = app!(registry.clone(), data.clone(), "select 'x'");
    each_sees_only_its_own(&app).await;
    // acme moves to its new database: new requests go there, none to the old one.
    registry.insert(on_db("acme", "acme2"));
    assert_eq!(
        call(&app, "GET", "/notes", "acme", "").await,
        (200, "[]".into())
    );
    assert_eq!(
        call(&app, "POST", "/notes", "acme", "after the move")
            .await
            .0,
        201
    );
    let old: Vec<String> = sqlx::query_scalar("select body from notes")
        .fetch_all(
            &PgPoolOptions::new()
                .connect(&template.replace("{tenant}", "acme"))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(old, ["acme's plan"], "nothing written to the old database");
    // initech, pooled, moves to a database of its own.
    assert_eq!(
        call(&app, "POST", "/notes", "initech", "pooled note")
            .await
            .0,
        201
    );
    registry.insert(on_db("initech", "initech"));
    assert_eq!(
        call(&app, "GET", "/notes", "initech", "").await,
        (200, "[]".into())
    );
    assert_eq!(
        call(&app, "POST", "/notes", "initech", "own note").await.0,
        201
    );
    let left: Vec<String> = sqlx::query_scalar("select body from notes")
        .fetch_all(&pooled)
        .await
        .unwrap();
    assert_eq!(
        left,
        ["pooled note"],
        "nothing more written to the shared schema"
    );
    // A record naming another tenant's database: 503, never that tenant's data.
    registry.insert(on_db("globex", "acme"));
    assert_eq!(call(&app, "GET", "/notes", "globex", "").await.0, 503);
    // A database that does not exist: 503.
    registry.insert(on_db("acme", "missing"));
    assert_eq!(call(&app, "GET", "/notes", "acme", "").await.0, 503);
    drop(app);
    drop(data);
    drop_databases(&admin, &base, &ids).await;
    exec(&admin, &format!("drop schema {shared} cascade")).await;
}

/// Connections of this test's tenant pools, by their application name.
async fn connections(admin: &PgPool, tag: &str) -> i64 {
    sqlx::query_scalar("select count(*) from pg_stat_activity where application_name like $1")
        .bind(format!("actix-tenancy:{tag}%"))
        .fetch_one(admin)
        .await
        .unwrap()
}

#[actix_web::test]
async fn two_hundred_tenant_databases_stay_within_the_pool_bound_and_idle_pools_close() {
    let Some((url, admin)) = admin().await else {
        return;
    };
    // 200 tenants, each on a database of its own, marked as its own by a migration.
    let tag = unique("pb").replace('_', "-");
    let ids: Vec<String> = (0..200).map(|i| format!("{tag}{i:03}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let template = databases(&admin, &url, "", &id_refs).await;
    eprintln!("200 tenant databases created in {:?}", started.elapsed());
    let data = TenantData::builder()
        .databases(DatabaseUrls::Attribute("database_url".into()))
        .max_pools(20)
        .connections_per_pool(2)
        .idle_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let tenants: Vec<TenantRecord> = ids
        .iter()
        .map(|id| {
            TenantRecord::new(TenantId::parse(id).unwrap(), "free")
                .with_attribute("database_url", template.replace("{tenant}", id))
        })
        .collect();
    // More tenant databases than pools: migrations use connections of their own.
    let report = TenantMigrations::new()
        .add("0001_probe", "create table storage_pool_probe (x int)")
        .concurrency(8)
        .run(&data, &tenants)
        .await;
    assert!(report.is_complete(), "{:?}", report.failed);
    let registry = std::sync::Arc::new(InMemoryRegistry::from_records(tenants));
    let app = test::init_service(
        App::new()
            .wrap(
                TenantResolver::builder(registry)
                    .source(Source::header())
                    .build()
                    .unwrap(),
            )
            .app_data(web::Data::new(data.clone()))
            .route(
                "/probe",
                web::get().to(|mut tx: TenantTx| async move {
                    sqlx::query("select count(*) from storage_pool_probe")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    HttpResponse::Ok().finish()
                }),
            ),
    )
    .await;
    let probe = |id: &str| {
        let req = test::TestRequest::get()
            .uri("/probe")
            .insert_header(("X-Tenant-ID", id))
            .to_request();
        test::call_service(&app, req)
    };
    let mut peak = 0;
    for round in 0..2 {
        for chunk in ids.chunks(20) {
            for res in futures_util::future::join_all(chunk.iter().map(|id| probe(id))).await {
                assert_eq!(res.status().as_u16(), 200, "round {round}");
            }
            peak = peak.max(connections(&admin, &tag).await);
            assert!(data.open_pools() <= 20);
            // Room for the closed pools to close their connections.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // 21 tenants at once for 20 pools: one is refused, none gets an extra pool.
    let statuses: Vec<u16> = futures_util::future::join_all(ids[..21].iter().map(|id| probe(id)))
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        1,
        "{statuses:?}"
    );
    assert!(data.open_pools() <= 20);
    eprintln!(
        "200 tenants, 400 requests in chunks of 20: at most {peak} connections open (bound 40)"
    );
    assert!(peak <= 40, "{peak} connections for a bound of 20 pools x 2");
    assert!(peak > 0, "the tenants' pools connected");
    // Idle: pools unused for the idle time close (at the next use of the pools).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(probe(&ids[0]).await.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(data.open_pools(), 1, "only the pool just used is open");
    assert!(connections(&admin, &tag).await <= 2);
    drop(app);
    drop(data);
    drop_databases(&admin, "", &id_refs).await;
}

#[actix_web::test]
async fn migrations_over_a_hundred_schemas_survive_one_failure_and_resume() {
    let Some((_, admin)) = admin().await else {
        return;
    };
    let prefix = unique("mig");
    let data = TenantData::builder()
        .schemas(admin.clone(), &prefix)
        .build()
        .unwrap();
    let ids: Vec<String> = (0..100).map(|i| format!("t{i:03}")).collect();
    let tenants: Vec<TenantRecord> = ids
        .iter()
        .map(|id| TenantRecord::new(TenantId::parse(id).unwrap(), "free"))
        .collect();
    // One tenant already has a view where the migration wants a table.
    let broken = format!("{prefix}t042");
    exec(
        &admin,
        &format!("create schema \"{broken}\"; create view \"{broken}\".notes as select 1 as id"),
    )
    .await;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&lines);
    let migrations = TenantMigrations::new()
        .add(
            "0001_notes",
            "create table notes (id bigserial primary key, body text not null)",
        )
        .add("0002_index", "create index notes_body on notes (body)")
        .concurrency(8)
        .on_progress(move |p| {
            seen.lock().unwrap().push(format!(
                "{}/{} {:?} {}",
                p.done, p.total, p.tenant, p.applied
            ))
        });
    let first = migrations.run(&data, &tenants).await;
    assert_eq!(first.failed.len(), 1, "{:?}", first.failed);
    assert_eq!(first.failed[0].0.as_str(), "t042");
    assert_eq!(first.applied.len(), 99);
    assert!(first.applied.iter().all(|(_, n)| *n == 2));
    assert_eq!(
        lines.lock().unwrap().len(),
        100,
        "a progress line per tenant"
    );
    // Fixed, a second run finishes the rest and applies nothing twice.
    exec(&admin, &format!("drop view \"{broken}\".notes")).await;
    let second = migrations.run(&data, &tenants).await;
    assert!(second.is_complete(), "{:?}", second.failed);
    let applied: usize = second.applied.iter().map(|(_, n)| n).sum();
    assert_eq!(applied, 2, "only t042's two migrations");
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    drop_schemas(&admin, &prefix, &id_refs, false).await;
}

#[actix_web::test]
async fn without_the_resolver_or_the_data_the_extractor_says_what_is_missing() {
    let Some((_, admin)) = admin().await else {
        return;
    };
    let data = TenantData::builder().pooled(admin).build().unwrap();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(data))
            .route("/notes", web::get().to(list)),
    )
    .await;
    let res = test::call_service(&app, test::TestRequest::get().uri("/notes").to_request()).await;
    assert_eq!(res.status().as_u16(), 500);
    let registry = InMemoryRegistry::from_records(records(&["acme"]));
    let app = test::init_service(
        App::new()
            .wrap(
                TenantResolver::builder(registry)
                    .source(Source::header())
                    .build()
                    .unwrap(),
            )
            .route("/notes", web::get().to(list)),
    )
    .await;
    assert_eq!(
        call(&app, "GET", "/notes", "acme", "").await.0,
        500,
        "no TenantData"
    );
}

#[actix_web::test]
async fn configurations_that_cannot_work_are_refused() {
    let pool = PgPoolOptions::new()
        .connect_lazy("postgres://x@127.0.0.1:1/x")
        .unwrap();
    assert!(TenantData::builder().build().is_err(), "no model");
    assert!(TenantData::builder()
        .pooled(pool.clone())
        .default_model(Model::Schema)
        .build()
        .is_err());
    assert!(TenantData::builder()
        .schemas(pool.clone(), "Bad-Prefix")
        .build()
        .is_err());
    assert!(TenantData::builder()
        .pooled(pool.clone())
        .role("no;role")
        .build()
        .is_err());
    assert!(TenantData::builder()
        .databases(DatabaseUrls::Template("postgres://db/x".into()))
        .build()
        .is_err());
    assert!(
        TenantData::builder()
            .pooled(pool.clone())
            .schemas(pool, "t_")
            .build()
            .is_err(),
        "two models, no default"
    );
}

/// One row of `sql` on `pool` (outside any tenant's transaction), as text.
async fn scalar(pool: &PgPool, sql: &str) -> Option<String> {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[actix_web::test]
async fn session_state_of_one_request_never_reaches_the_next_tenant() {
    let Some((url, admin)) = admin().await else {
        return;
    };
    let prefix = unique("leak");
    let role = format!("{prefix}sess");
    exec(&admin, &format!("create role \"{role}\" nologin")).await;
    // One connection, so the later requests get the first one's session.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let session_user = scalar(&pool, "select session_user::text").await.unwrap();
    let data = TenantData::builder()
        .schemas(pool.clone(), &prefix)
        .build()
        .unwrap();
    let tenants = records(&["acme", "globex"]);
    notes_table(&data, &tenants).await;
    let registry = std::sync::Arc::new(InMemoryRegistry::from_records(tenants));

    // acme leaves a temporary table named like the tenant tables on the session...
    let shadow = "create temp table notes as select 'acme, shadowing' as body";
    let app = app!(std::sync::Arc::clone(&registry), data.clone(), shadow);
    assert_eq!(
        call(&app, "GET", "/crafted", "acme", "").await,
        (200, "[]".into()),
        "acme's request creates the temporary table"
    );
    let planted: Vec<String> = sqlx::query_scalar("select body from pg_temp.notes")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(planted, ["acme, shadowing"], "the session keeps it");

    // ...and a session role (`set_config(.., false)` is `SET`, not `SET LOCAL`: it
    // outlives the transaction, which commits).
    let set_role = format!("select set_config('role', '{role}', false)");
    let app = app!(std::sync::Arc::clone(&registry), data.clone(), set_role);
    assert_eq!(
        call(&app, "GET", "/crafted", "acme", "").await,
        (200, format!("[\"{role}\"]")),
        "acme's request sets the session role"
    );
    assert_eq!(
        scalar(&pool, "select current_user::text").await.as_deref(),
        Some(role.as_str()),
        "the session keeps the role"
    );

    // globex, on that very session, sees neither: its own (empty) notes, not acme's
    // table, and the pool's own user, not acme's role.
    let whoami = "select current_user::text";
    let app = app!(registry, data, whoami);
    assert_eq!(
        call(&app, "GET", "/notes", "globex", "").await,
        (200, "[]".into())
    );
    assert_eq!(
        call(&app, "GET", "/crafted", "globex", "").await,
        (200, format!("[\"{session_user}\"]"))
    );
    // The requests above ran on the session acme left: it still holds both.
    assert_eq!(
        scalar(&pool, "select current_user::text").await.as_deref(),
        Some(role.as_str())
    );
    assert!(
        scalar(&pool, "select to_regclass('pg_temp.notes')::text")
            .await
            .is_some(),
        "acme's temporary table is still on the session"
    );
    pool.close().await;
    drop_schemas(&admin, &prefix, &["acme", "globex"], false).await;
    exec(&admin, &format!("drop role \"{role}\"")).await;
}

#[actix_web::test]
async fn a_migration_that_commits_or_a_privileged_role_is_refused() {
    let Some((_, admin)) = admin().await else {
        return;
    };
    let prefix = unique("esc");
    let data = TenantData::builder()
        .schemas(admin.clone(), &prefix)
        .schema_roles(true)
        .build()
        .unwrap();
    let tenants = records(&["acme"]);
    let escaping = TenantMigrations::new()
        .add(
            "0001_escape",
            "commit; create table escaped (x int); begin;",
        )
        .run(&data, &tenants)
        .await;
    assert_eq!(escaping.failed.len(), 1, "{escaping:?}");
    assert!(
        escaping.failed[0].1.contains("ended its transaction"),
        "{escaping:?}"
    );
    // A role that could log in is never adopted as a tenant's.
    let admin_role = format!("{prefix}admin");
    exec(&admin, &format!("create role \"{admin_role}\" login")).await;
    let adopted = TenantMigrations::new()
        .add(
            "0001_notes",
            "create table notes (id bigserial primary key)",
        )
        .run(&data, &records(&["admin"]))
        .await;
    assert_eq!(adopted.failed.len(), 1, "{adopted:?}");
    assert!(adopted.failed[0].1.contains("privileged"), "{adopted:?}");
    exec(
        &admin,
        &format!("drop table if exists escaped; drop role \"{admin_role}\""),
    )
    .await;
    drop_schemas(&admin, &prefix, &["acme"], true).await;
}
