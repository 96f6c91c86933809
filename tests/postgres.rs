//! `PostgresRegistry` (feature `postgres`) against a real PostgreSQL.
//!
//! Tests that need a database run when `DATABASE_URL` is set (CI sets it, and fails if
//! it is missing); each works in a schema of its own, created for it and dropped after,
//! with a `NOTIFY` channel of its own, so they run in parallel. The outage tests point
//! at a closed port and always run.

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
}

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix_tenancy::Moment;
use actix_tenancy::{
    prelude::*,
    registry::{
        postgres::{AdminError, InvalidationListener, PostgresRegistry, PostgresRegistryBuilder},
        TenantRegistry,
    },
    storage::{begin_for_tenant, TenantDb},
    InvalidTenantId, TenantIdRule,
};
use actix_web::{body::MessageBody, dev::ServiceResponse, test, web, App};
use sqlx::{
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
    PgPool,
};

const NOTES_RLS: &str = include_str!("../examples/notes_rls.sql");
const APP_ROLE: &str = "tenancy_app";

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

fn database_url() -> Option<String> {
    common::services::service_url("DATABASE_URL")
}

/// A schema of its own for one test (and a channel of the same name).
struct TestDb {
    base: PgConnectOptions,
    schema: String,
    admin: PgPool,
}

impl TestDb {
    async fn new(test: &str) -> Option<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let url = database_url()?;
        let base: PgConnectOptions = url.parse().expect("DATABASE_URL parses");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "tenancy_{test}_{}_{}_{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        assert!(schema.len() <= 63, "schema name too long: {schema}");
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(base.clone())
            .await
            .expect("connect to DATABASE_URL");
        sqlx::query(&format!("create schema {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        Some(Self {
            base,
            schema,
            admin,
        })
    }

    /// Connections with this test's schema first on the `search_path`, named after it.
    fn options(&self) -> PgConnectOptions {
        self.base
            .clone()
            .options([("search_path", self.schema.as_str())])
            .application_name(&self.schema)
    }

    async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(self.options())
            .await
            .unwrap()
    }

    /// A registry builder on a pool of its own (one replica), on this test's own
    /// NOTIFY channel: parallel tests never hear each other.
    async fn builder(&self) -> PostgresRegistryBuilder {
        PostgresRegistry::builder(self.pool().await).channel(self.schema.as_str())
    }

    /// A registry on a pool of its own: one replica.
    async fn registry(&self) -> PostgresRegistry {
        self.builder().await.build().unwrap()
    }

    /// A migrated registry.
    async fn migrated(&self) -> PostgresRegistry {
        let reg = self.registry().await;
        reg.migrate().await.unwrap();
        reg
    }

    async fn cleanup(self) {
        self.admin.close().await;
        // `Drop` drops the schema.
    }
}

/// Drops the test's schema, also when the test fails (on a thread of its own: this may
/// run while the test's runtime unwinds).
impl Drop for TestDb {
    fn drop(&mut self) {
        let options = self.base.clone();
        let sql = format!("drop schema if exists {} cascade", self.schema);
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect_with(&options).await?;
                sqlx::query(&sql).execute(&mut conn).await?;
                conn.close().await
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop schema {}", self.schema);
        }
    }
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn rec(id: &str, tier: &str) -> TenantRecord {
    TenantRecord::new(tid(id), tier)
}

fn resolver(registry: impl TenantRegistry) -> TenantResolver {
    TenantResolver::builder(registry)
        .source(Source::header())
        .build()
        .unwrap()
}

macro_rules! app {
    ($resolver:expr) => {
        test::init_service(
            App::new()
                .wrap($resolver)
                .default_service(web::to(|t: Tenant| async move { t.id().to_string() })),
        )
        .await
    };
}

/// The status and the problem `code` (or the body) of a request for `$tenant`.
macro_rules! get {
    ($app:expr, $tenant:expr) => {
        outcome(
            test::call_service(
                &$app,
                test::TestRequest::get()
                    .uri("/x")
                    .insert_header(("x-tenant-id", $tenant))
                    .to_request(),
            )
            .await,
        )
        .await
    };
}

async fn outcome<B: MessageBody>(res: ServiceResponse<B>) -> (u16, String) {
    let status = res.status().as_u16();
    let body = test::read_body(res).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or(text);
    (status, code)
}

/// Polls `$app` until `$tenant` gets `$want`, for at most `$within`; how long it took.
macro_rules! until_status {
    ($app:expr, $tenant:expr, $want:expr, $within:expr) => {{
        let start = Instant::now();
        loop {
            let (status, code) = get!($app, $tenant);
            if status == $want {
                break start.elapsed();
            }
            assert!(
                start.elapsed() < $within,
                "{}: still {status} {code} after {:?}, want {}",
                $tenant,
                $within,
                $want
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

async fn ready(listener: &InvalidationListener) {
    tokio::time::timeout(Duration::from_secs(10), listener.ready())
        .await
        .expect("the invalidation listener starts listening");
}

/// A pool on a closed port: every query fails quickly.
fn unreachable_pool() -> PgPool {
    let opts = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(1)
        .username("postgres")
        .database("test");
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(opts)
}

const HOSTILE: [&str; 8] = [
    "'; drop table tenants; --",
    "acme' or '1'='1",
    "ａｃｍｅ",
    "acmé",
    "Acme",
    "acme\0",
    "",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", // 65 bytes
];

// ---------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn migration_from_empty_is_idempotent_and_enforces_the_schema() {
    let Some(db) = TestDb::new("migrate").await else {
        return;
    };
    let reg = db.registry().await;
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_schema = $1",
    )
    .bind(&db.schema)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(tables, 0, "the schema starts empty");

    // Replicas starting together: concurrent migrations, then once more.
    let replicas = [
        db.registry().await,
        db.registry().await,
        db.registry().await,
    ];
    let results = futures_util::future::join_all(replicas.iter().map(|r| r.migrate())).await;
    for r in results {
        r.unwrap();
    }
    reg.migrate().await.unwrap();

    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "select column_name::text, data_type::text, is_nullable::text from information_schema.columns \
         where table_schema = $1 and table_name = 'tenants' order by ordinal_position",
    )
    .bind(&db.schema)
    .fetch_all(&db.admin)
    .await
    .unwrap();
    let cols: Vec<(&str, &str, &str)> = columns
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        cols,
        [
            ("id", "text", "NO"),
            ("status", "text", "NO"),
            ("tier", "text", "NO"),
            ("region", "text", "YES"),
            ("parent", "text", "YES"),
            ("attributes", "jsonb", "NO"),
            ("created_at", "timestamp with time zone", "NO"),
            ("updated_at", "timestamp with time zone", "NO"),
        ]
    );

    // The table refuses what the Rust side would refuse, even when SQL bypasses it.
    let pool = reg.pool();
    sqlx::query("insert into tenants (id, tier) values ('ok', 'pro')")
        .execute(pool)
        .await
        .unwrap();
    for bad in [
        "insert into tenants (id, tier) values ('a b', 'pro')",
        "insert into tenants (id, tier) values ('ａｃｍｅ', 'pro')",
        "insert into tenants (id, tier) values ('', 'pro')",
        "insert into tenants (id, tier, status) values ('x1', 'pro', 'zombie')",
        "insert into tenants (id, tier) values ('x2', 'Pro')",
        "insert into tenants (id, tier, region) values ('x3', 'pro', 'EU')",
        "insert into tenants (id, tier, attributes) values ('x4', 'pro', '[]')",
        "insert into tenants (id, tier, parent) values ('x5', 'pro', 'nobody')",
        "insert into tenants (id, tier, parent) values ('x6', 'pro', 'x6')",
        "insert into tenants (id, tier) values ('ok', 'free')",
    ] {
        assert!(sqlx::query(bad).execute(pool).await.is_err(), "{bad}");
    }
    let rec = reg
        .lookup(&tid("ok"), &mut Moment::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status(), TenantStatus::Active);
    assert!(rec.attributes().is_empty());
    db.cleanup().await;
}

// ---------------------------------------------------------------------------------
// Admin operations
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn every_admin_operation_validates_commits_and_notifies() {
    let Some(db) = TestDb::new("admin").await else {
        return;
    };
    let reg = db.migrated().await;
    let mut notes = PgListener::connect_with(&db.pool().await).await.unwrap();
    notes.listen(reg.channel()).await.unwrap();

    // create
    let acme = rec("acme", "pro")
        .with_region("eu")
        .with_attribute("seats", 5)
        .with_attribute("sso", serde_json::json!({ "idp": "okta" }));
    let created = reg.create(&acme).await.unwrap();
    assert_eq!(created, acme);
    assert_eq!(
        *reg.lookup(&tid("acme"), &mut Moment::now())
            .await
            .unwrap()
            .unwrap(),
        acme
    );
    assert!(matches!(
        reg.create(&rec("acme", "free")).await,
        Err(AdminError::AlreadyExists)
    ));
    assert!(matches!(
        reg.create(&rec("child", "free").with_parent(tid("nobody")))
            .await,
        Err(AdminError::ParentNotFound)
    ));
    assert!(matches!(
        reg.create(&rec("child", "free").with_parent(tid("child")))
            .await,
        Err(AdminError::InvalidParent(None))
    ));
    assert!(matches!(
        reg.create(&rec("bad", "Pro")).await,
        Err(AdminError::InvalidTier)
    ));
    assert!(matches!(
        reg.create(&rec("bad", "pro").with_region("eu west")).await,
        Err(AdminError::InvalidRegion)
    ));
    let child = rec("acme-dev", "free")
        .with_parent(tid("acme"))
        .with_status(TenantStatus::Provisioning);
    assert_eq!(reg.create(&child).await.unwrap(), child);

    // suspend, reactivate, any status
    assert_eq!(
        reg.suspend("acme").await.unwrap().status(),
        TenantStatus::Suspended
    );
    assert_eq!(
        reg.lookup(&tid("acme"), &mut Moment::now())
            .await
            .unwrap()
            .unwrap()
            .status(),
        TenantStatus::Suspended
    );
    assert_eq!(
        reg.reactivate("acme").await.unwrap().status(),
        TenantStatus::Active
    );
    assert_eq!(
        reg.set_status("acme-dev", TenantStatus::InArrears)
            .await
            .unwrap()
            .status(),
        TenantStatus::InArrears
    );

    // tier
    let moved = reg.set_tier("acme", "enterprise").await.unwrap();
    assert_eq!(moved.tier(), "enterprise");
    assert_eq!(moved.region(), Some("eu"), "other fields unchanged");
    assert_eq!(moved.attribute("seats"), Some(&serde_json::json!(5)));
    for bad in ["", "Enterprise", "enter prise", "tier;drop", "ｐｒｏ"] {
        assert!(
            matches!(
                reg.set_tier("acme", bad).await,
                Err(AdminError::InvalidTier)
            ),
            "{bad:?}"
        );
    }

    // region
    assert_eq!(
        reg.set_region("acme", Some("us-east-1"))
            .await
            .unwrap()
            .region(),
        Some("us-east-1")
    );
    assert_eq!(reg.set_region("acme", None).await.unwrap().region(), None);
    assert!(matches!(
        reg.set_region("acme", Some("US")).await,
        Err(AdminError::InvalidRegion)
    ));

    // attributes
    let mut attrs = serde_json::Map::new();
    attrs.insert("seats".into(), serde_json::json!(50));
    attrs.insert("quote".into(), serde_json::json!("it's \"fine\"; --"));
    let updated = reg.set_attributes("acme", &attrs).await.unwrap();
    assert_eq!(updated.attributes(), &attrs);
    assert_eq!(
        reg.lookup(&tid("acme"), &mut Moment::now())
            .await
            .unwrap()
            .unwrap()
            .attributes(),
        &attrs
    );

    // updated_at moves, created_at does not
    let moved: bool =
        sqlx::query_scalar("select updated_at > created_at from tenants where id = 'acme'")
            .fetch_one(reg.pool())
            .await
            .unwrap();
    assert!(moved, "updated_at is later than created_at");

    // unknown ids
    for result in [
        reg.suspend("ghost").await,
        reg.reactivate("ghost").await,
        reg.set_tier("ghost", "pro").await,
        reg.set_region("ghost", None).await,
        reg.set_attributes("ghost", &attrs).await,
        reg.delete("ghost").await,
    ] {
        assert!(matches!(result, Err(AdminError::NotFound)), "{result:?}");
    }

    // delete: not while it has children
    assert!(matches!(
        reg.delete("acme").await,
        Err(AdminError::HasChildren)
    ));
    assert_eq!(reg.delete("acme-dev").await.unwrap().id(), "acme-dev");
    assert_eq!(reg.delete("acme").await.unwrap().id(), "acme");
    assert!(reg
        .lookup(&tid("acme"), &mut Moment::now())
        .await
        .unwrap()
        .is_none());

    // One notification per change that committed, in order, none for the refusals.
    let want = [
        "acme", "acme-dev", "acme", "acme", "acme-dev", "acme", "acme", "acme", "acme", "acme-dev",
        "acme",
    ];
    let mut got = Vec::new();
    while got.len() < want.len() {
        let n = tokio::time::timeout(Duration::from_secs(2), notes.recv())
            .await
            .expect("a notification per change")
            .unwrap();
        assert_eq!(n.channel(), reg.channel());
        got.push(n.payload().to_owned());
    }
    assert_eq!(got, want);
    let extra = tokio::time::timeout(Duration::from_millis(300), notes.recv()).await;
    assert!(extra.is_err(), "no notification for refused operations");
    db.cleanup().await;
}

#[actix_web::test]
async fn a_notification_is_sent_only_when_the_change_commits() {
    let Some(db) = TestDb::new("rollback").await else {
        return;
    };
    let reg = db.migrated().await;
    reg.create(&rec("acme", "pro")).await.unwrap();
    let mut notes = PgListener::connect_with(&db.pool().await).await.unwrap();
    notes.listen(reg.channel()).await.unwrap();

    // A row lock held elsewhere makes the update wait; the caller gives up (the future
    // is dropped), so the transaction never commits.
    let mut blocker = reg.pool().begin().await.unwrap();
    sqlx::query("select 1 from tenants where id = 'acme' for update")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(300), reg.suspend("acme")).await;
    assert!(gave_up.is_err());
    blocker.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        reg.lookup(&tid("acme"), &mut Moment::now())
            .await
            .unwrap()
            .unwrap()
            .status(),
        TenantStatus::Active
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notes.recv())
            .await
            .is_err(),
        "no notification without a commit"
    );
    db.cleanup().await;
}

#[cfg(feature = "jwt")]
#[actix_web::test]
async fn suspend_and_revoke_stops_the_tenants_tokens_in_one_call() {
    use actix_tenancy::session::{Grant, Key, KeySet, SessionConfig, SessionManager};
    let Some(db) = TestDb::new("revoke").await else {
        return;
    };
    let reg = db.migrated().await;
    reg.create(&rec("acme", "pro")).await.unwrap();
    reg.create(&rec("globex", "free")).await.unwrap();
    let key = Key::hmac("k1", jsonwebtoken::Algorithm::HS256, &[5u8; 32]).unwrap();
    let sessions = SessionManager::new(
        SessionConfig::new("https://auth.test", "api"),
        KeySet::signing(key).unwrap(),
    );
    let acme = sessions.issue(&tid("acme"), "u", Grant::new()).unwrap();
    let globex = sessions.issue(&tid("globex"), "u", Grant::new()).unwrap();
    let record = reg.suspend_and_revoke("acme", &sessions).await.unwrap();
    assert_eq!(record.status(), TenantStatus::Suspended);
    assert!(sessions.verify(&acme.access_token).await.is_err());
    assert!(sessions.refresh(&acme.refresh_token).await.is_err());
    assert!(sessions.verify(&globex.access_token).await.is_ok());
    assert!(reg.suspend_and_revoke("nobody", &sessions).await.is_err());
    db.cleanup().await;
}

// ---------------------------------------------------------------------------------
// Hostile ids
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn hostile_ids_are_refused_before_any_sql() {
    // No database: the pool points at a closed port, so anything that reached SQL
    // would come back as `AdminError::Database`, not `InvalidId`.
    let reg = PostgresRegistry::new(unreachable_pool());
    let attrs = serde_json::Map::new();
    for id in HOSTILE {
        for result in [
            reg.suspend(id).await,
            reg.reactivate(id).await,
            reg.set_status(id, TenantStatus::Active).await,
            reg.set_tier(id, "pro").await,
            reg.set_region(id, Some("eu")).await,
            reg.set_attributes(id, &attrs).await,
            reg.delete(id).await,
        ] {
            assert!(
                matches!(result, Err(AdminError::InvalidId(_))),
                "{id:?}: {result:?}"
            );
        }
    }
    // A record id the registry's (narrower) rule refuses never reaches SQL either.
    let narrow = PostgresRegistry::builder(unreachable_pool())
        .id_rule(TenantIdRule::custom(|s: &str| s.starts_with("t-")))
        .build()
        .unwrap();
    assert!(matches!(
        narrow.create(&rec("acme", "pro")).await,
        Err(AdminError::InvalidId(InvalidTenantId::Rejected))
    ));
    assert!(
        narrow
            .lookup(&tid("acme"), &mut Moment::now())
            .await
            .unwrap()
            .is_none(),
        "an id outside the rule is not found, without a query"
    );
    assert!(matches!(
        narrow.create(&rec("t-1", "pro")).await,
        Err(AdminError::Database(_))
    ));

    // Through the resolver: 400, and the registry is never asked.
    let app = app!(resolver(reg));
    for id in ["'; drop table tenants; --", "Acme", &"a".repeat(65), "acmé"] {
        let req = test::TestRequest::get()
            .uri("/x")
            .insert_header(("x-tenant-id", id))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), 400, "{id:?}");
    }
}

#[actix_web::test]
async fn quotes_and_semicolons_are_data_not_sql() {
    let Some(db) = TestDb::new("inject").await else {
        return;
    };
    db.migrated().await;
    // A permissive rule (the hard floor allows `'` and `;`): the values are bound
    // parameters, stored and found as they are, and the table survives.
    let reg = db
        .builder()
        .await
        .id_rule(TenantIdRule::custom(|_| true))
        .build()
        .unwrap();
    let rule = TenantIdRule::custom(|_| true);
    for raw in ["x';drop_table_tenants;--", "y'or'1'='1", "z\"$1\\"] {
        let id = rule.parse(raw).unwrap();
        reg.create(&TenantRecord::new(id.clone(), "pro"))
            .await
            .unwrap();
        assert_eq!(
            reg.lookup(&id, &mut Moment::now())
                .await
                .unwrap()
                .unwrap()
                .id(),
            &id
        );
        reg.suspend(raw).await.unwrap();
    }
    assert!(reg
        .lookup(
            &rule.parse("anything'or'1'='1").unwrap(),
            &mut Moment::now()
        )
        .await
        .unwrap()
        .is_none());
    let n: i64 = sqlx::query_scalar("select count(*) from tenants")
        .fetch_one(reg.pool())
        .await
        .unwrap();
    assert_eq!(n, 3);
    db.cleanup().await;
}

// ---------------------------------------------------------------------------------
// Replicas, NOTIFY and the listener
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn a_suspension_reaches_another_replica_within_a_second() {
    let Some(db) = TestDb::new("replica").await else {
        return;
    };
    let a = db.migrated().await;
    a.create(&rec("acme", "pro")).await.unwrap();
    a.create(&rec("globex", "free")).await.unwrap();

    // Replica B: its own pool, a long TTL, so only a notification can explain a change.
    let b = db.registry().await;
    let (cache, listener) = b
        .cached(CacheConfig::default().ttl(Duration::from_secs(60)))
        .unwrap();
    ready(&listener).await;
    let app = app!(resolver(Arc::clone(&cache)));
    assert_eq!(get!(app, "acme"), (200, "acme".to_owned()));
    assert_eq!(get!(app, "globex"), (200, "globex".to_owned()));
    assert!(
        cache.lookup("acme", &mut Moment::now()).now().is_some(),
        "acme is cached"
    );

    a.suspend("acme").await.unwrap();
    let took = until_status!(app, "acme", 403, Duration::from_secs(1));
    assert_eq!(get!(app, "acme").1, "tenant_forbidden");
    assert!(
        cache.lookup("globex", &mut Moment::now()).now().is_some(),
        "only the changed tenant is evicted"
    );
    eprintln!("suspension seen by the other replica after {took:?}");

    a.reactivate("acme").await.unwrap();
    until_status!(app, "acme", 200, Duration::from_secs(1));

    // A tenant created on A after B cached "not found" is served at once.
    assert_eq!(get!(app, "initech").0, 403);
    a.create(&rec("initech", "pro")).await.unwrap();
    until_status!(app, "initech", 200, Duration::from_secs(1));

    // Deleted on A: gone on B.
    a.delete("globex").await.unwrap();
    until_status!(app, "globex", 403, Duration::from_secs(1));

    assert_eq!(listener.connections(), 1);
    listener.stop();
    db.cleanup().await;
}

/// Kills the listen connection of the replica whose connections carry `db`'s name.
/// Kills the listener's connection and waits until the listener has noticed: from
/// then on, until it reconnects, no notification reaches it.
async fn kill_listener(db: &TestDb, listener: &InvalidationListener) {
    let killed: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where application_name = $1 and query like 'LISTEN %'",
    )
    .bind(&db.schema)
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(killed, [true], "exactly one listen connection");
    let start = Instant::now();
    while listener.is_listening() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the listener notices its connection is gone"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until_connections(listener: &InvalidationListener, n: u64) {
    let start = Instant::now();
    while !(listener.connections() >= n && listener.is_listening()) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the listener reconnects"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn while_the_listener_is_down_the_ttl_still_bounds_staleness() {
    let Some(db) = TestDb::new("down").await else {
        return;
    };
    let a = db.migrated().await;
    a.create(&rec("acme", "pro")).await.unwrap();

    // B reconnects only after 4 s: long enough to see the TTL act alone.
    let ttl = Duration::from_secs(1);
    let b = db
        .builder()
        .await
        .reconnect_backoff(Duration::from_secs(4), Duration::from_secs(8))
        .build()
        .unwrap();
    let (cache, listener) = b.cached(CacheConfig::default().ttl(ttl)).unwrap();
    ready(&listener).await;
    let app = app!(resolver(Arc::clone(&cache)));
    assert_eq!(get!(app, "acme").0, 200);
    let cached_at = Instant::now();

    kill_listener(&db, &listener).await;
    a.suspend("acme").await.unwrap(); // announced to nobody on B
    tokio::time::sleep((cached_at + ttl).saturating_duration_since(Instant::now())).await;
    assert!(!listener.is_listening(), "still disconnected");
    assert_eq!(get!(app, "acme"), (403, "tenant_forbidden".to_owned()));
    assert_eq!(listener.connections(), 1);

    until_connections(&listener, 2).await;
    a.reactivate("acme").await.unwrap();
    until_status!(app, "acme", 200, Duration::from_secs(1));
    db.cleanup().await;
}

#[actix_web::test]
async fn a_killed_listener_reconnects_and_forgets_what_it_may_have_missed() {
    let Some(db) = TestDb::new("kill").await else {
        return;
    };
    let a = db.migrated().await;
    a.create(&rec("acme", "pro")).await.unwrap();

    // A long TTL: only the listener can explain a change seen in time. It reconnects
    // 4 s after losing its connection: time enough (a suspension and a cached lookup
    // take milliseconds) to see the stale entry first, even on a loaded machine.
    let b = db
        .builder()
        .await
        .reconnect_backoff(Duration::from_secs(4), Duration::from_secs(8))
        .build()
        .unwrap();
    let (cache, listener) = b
        .cached(CacheConfig::default().ttl(Duration::from_secs(60)))
        .unwrap();
    ready(&listener).await;
    assert_eq!(listener.connections(), 1);
    let app = app!(resolver(Arc::clone(&cache)));
    assert_eq!(get!(app, "acme").0, 200);

    kill_listener(&db, &listener).await;
    // A change while it is down: its notification is lost, and the cache still holds
    // the old record. Reconnecting clears the cache; a listener that did so before the
    // stale entry was seen leaves nothing to check, and fails the test.
    a.suspend("acme").await.unwrap();
    let stale = get!(app, "acme").0;
    assert!(
        listener.connections() == 1 && !listener.is_listening(),
        "the listener reconnected within its 4 s backoff, before the check"
    );
    assert_eq!(stale, 200, "the notification was lost: the entry is stale");

    // On reconnecting it drops the whole cache, so the change shows at once.
    until_connections(&listener, 2).await;
    assert_eq!(get!(app, "acme"), (403, "tenant_forbidden".to_owned()));

    // And the new connection delivers notifications.
    a.reactivate("acme").await.unwrap();
    until_status!(app, "acme", 200, Duration::from_secs(1));
    drop(listener);
    db.cleanup().await;
}

#[actix_web::test]
async fn the_listener_task_ends_with_its_handle() {
    let Some(db) = TestDb::new("stop").await else {
        return;
    };
    let reg = db.migrated().await;
    let cache = Arc::new(CachedRegistry::new(reg.clone(), CacheConfig::default()));
    let listener = reg.listen(&cache).unwrap();
    ready(&listener).await;
    let listening = || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where application_name = $1 and query like 'LISTEN %'",
        )
        .bind(&db.schema)
        .fetch_one(&db.admin)
        .await
        .unwrap();
        n
    };
    assert_eq!(listening().await, 1);
    drop(listener);
    let start = Instant::now();
    while listening().await != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the listen connection closes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.cleanup().await;
}

#[actix_web::test]
async fn the_listener_task_ends_as_soon_as_its_cache_is_dropped() {
    let Some(db) = TestDb::new("cache_gone").await else {
        return;
    };
    let reg = db.migrated().await;
    let cache = Arc::new(CachedRegistry::new(reg.clone(), CacheConfig::default()));
    let listener = reg.listen(&cache).unwrap();
    ready(&listener).await;
    // No NOTIFY comes: the task must notice the cache is gone by itself.
    drop(cache);
    let start = Instant::now();
    while !listener.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the listener outlived its cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.cleanup().await;
}

// ---------------------------------------------------------------------------------
// Outages
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn an_unreachable_database_fails_closed() {
    let reg = PostgresRegistry::new(unreachable_pool());
    assert!(
        reg.lookup(&tid("acme"), &mut Moment::now()).await.is_err(),
        "an error, not None"
    );
    assert!(matches!(
        reg.create(&rec("acme", "pro")).await,
        Err(AdminError::Database(_))
    ));
    assert!(matches!(
        reg.suspend("acme").await,
        Err(AdminError::Database(_))
    ));

    // Bare and cached: 503 tenant_unavailable, never a pass, never "unknown".
    let app = app!(resolver(reg.clone()));
    assert_eq!(get!(app, "acme"), (503, "tenant_unavailable".into()));
    let (cache, listener) = reg.cached(CacheConfig::default()).unwrap();
    let app = app!(resolver(Arc::clone(&cache)));
    assert_eq!(get!(app, "acme"), (503, "tenant_unavailable".into()));
    assert_eq!(get!(app, "ghost"), (503, "tenant_unavailable".into()));

    // The listener keeps trying in the background; the app is not blocked by it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!listener.is_listening());
    assert!(!listener.is_finished());
    assert_eq!(listener.connections(), 0);
}

#[actix_web::test]
async fn stale_if_error_serves_the_cached_record_for_a_bounded_time() {
    let Some(db) = TestDb::new("stale").await else {
        return;
    };
    let reg = db.migrated().await;
    reg.create(&rec("acme", "pro")).await.unwrap();
    let ttl = Duration::from_millis(300);
    let window = Duration::from_millis(1500);
    let cache = Arc::new(CachedRegistry::new(
        reg.clone(),
        CacheConfig::default().ttl(ttl).stale_if_error(window),
    ));
    let app = app!(resolver(Arc::clone(&cache)));
    assert_eq!(get!(app, "acme").0, 200);
    let cached_at = Instant::now();

    // The database goes away.
    reg.pool().close().await;
    assert!(reg.lookup(&tid("acme"), &mut Moment::now()).await.is_err());

    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(get!(app, "acme").0, 200, "inside the window: stale");
    assert_eq!(
        get!(app, "ghost"),
        (503, "tenant_unavailable".into()),
        "an id never seen is unavailable, not a pass"
    );

    tokio::time::sleep(
        (cached_at + ttl + window + Duration::from_millis(100))
            .saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(
        get!(app, "acme"),
        (503, "tenant_unavailable".into()),
        "past the window: fail closed"
    );
    db.cleanup().await;
}

// ---------------------------------------------------------------------------------
// Row-level security
// ---------------------------------------------------------------------------------

/// The example RLS migration, and the ordinary role the app queries as.
async fn rls_setup(db: &TestDb, reg: &PostgresRegistry) {
    sqlx::raw_sql(NOTES_RLS).execute(reg.pool()).await.unwrap();
    // Roles are cluster-wide; tests in parallel may race to create it.
    sqlx::raw_sql(&format!(
        "do $$ begin create role {APP_ROLE} nologin; \
         exception when duplicate_object or unique_violation then null; end $$"
    ))
    .execute(&db.admin)
    .await
    .unwrap();
    let s = &db.schema;
    sqlx::raw_sql(&format!(
        "grant usage on schema {s} to {APP_ROLE}; \
         grant select, insert, update, delete on {s}.notes to {APP_ROLE}; \
         grant usage on sequence {s}.notes_id_seq to {APP_ROLE};"
    ))
    .execute(&db.admin)
    .await
    .unwrap();
    for id in ["acme", "globex"] {
        reg.create(&rec(id, "pro")).await.unwrap();
    }
}

async fn bodies(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(&mut **tx).await.unwrap()
}

#[actix_web::test]
async fn rls_scopes_every_query_to_the_transaction_tenant() {
    let Some(db) = TestDb::new("rls").await else {
        return;
    };
    let reg = db.migrated().await;
    rls_setup(&db, &reg).await;
    let tdb = TenantDb::new(reg.pool().clone())
        .with_role(APP_ROLE)
        .unwrap();

    for (tenant, body) in [("acme", "a1"), ("acme", "a2"), ("globex", "g1")] {
        let mut tx = tdb.begin(&tid(tenant)).await.unwrap();
        sqlx::query("insert into notes (body) values ($1)")
            .bind(body)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    let mut acme = tdb.begin(&tid("acme")).await.unwrap();
    assert_eq!(
        bodies(&mut acme, "select body from notes order by body").await,
        ["a1", "a2"]
    );
    assert!(
        bodies(
            &mut acme,
            "select body from notes where tenant_id = 'globex'"
        )
        .await
        .is_empty(),
        "asking for another tenant's rows by name finds none"
    );
    let touched = sqlx::query("update notes set body = 'x' where tenant_id = 'globex'")
        .execute(&mut *acme)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(touched, 0);
    let deleted = sqlx::query("delete from notes")
        .execute(&mut *acme)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 2, "acme's own rows only");
    acme.rollback().await.unwrap();

    // Writing a row for another tenant is refused.
    let mut acme = tdb.begin(&tid("acme")).await.unwrap();
    let forged = sqlx::query("insert into notes (tenant_id, body) values ('globex', 'forged')")
        .execute(&mut *acme)
        .await;
    assert!(forged.is_err(), "the policy's WITH CHECK refuses it");
    drop(acme);

    let mut globex = tdb.begin(&tid("globex")).await.unwrap();
    assert_eq!(bodies(&mut globex, "select body from notes").await, ["g1"]);
    globex.commit().await.unwrap();

    // No tenant set: no rows, even on a connection a tenant transaction used before.
    let one = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.options())
        .await
        .unwrap();
    let single = TenantDb::new(one.clone()).with_role(APP_ROLE).unwrap();
    let mut tx = single.begin(&tid("acme")).await.unwrap();
    assert_eq!(bodies(&mut tx, "select body from notes").await.len(), 2);
    tx.commit().await.unwrap();
    let mut bare = one.begin().await.unwrap();
    sqlx::query(&format!("set local role {APP_ROLE}"))
        .execute(&mut *bare)
        .await
        .unwrap();
    assert!(bodies(&mut bare, "select body from notes").await.is_empty());
    let setting: Option<String> =
        sqlx::query_scalar("select nullif(current_setting('app.tenant_id', true), '')")
            .fetch_one(&mut *bare)
            .await
            .unwrap();
    assert_eq!(setting, None, "the setting ended with its transaction");
    let orphan = sqlx::query("insert into notes (body) values ('orphan')")
        .execute(&mut *bare)
        .await;
    assert!(orphan.is_err(), "no tenant, no writes");
    bare.rollback().await.unwrap();

    // The superuser the tests connect as bypasses RLS: all three rows are there.
    let all: i64 = sqlx::query_scalar("select count(*) from notes")
        .fetch_one(reg.pool())
        .await
        .unwrap();
    assert_eq!(all, 3);
    db.cleanup().await;
}

#[actix_web::test]
async fn begin_for_tenant_sets_the_tenant_for_one_transaction() {
    let Some(db) = TestDb::new("begin").await else {
        return;
    };
    let one = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.options())
        .await
        .unwrap();
    let mut tx = begin_for_tenant(&one, &tid("acme")).await.unwrap();
    let seen: String = sqlx::query_scalar("select current_setting('app.tenant_id')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, "acme");
    tx.commit().await.unwrap();
    let after: Option<String> =
        sqlx::query_scalar("select nullif(current_setting('app.tenant_id', true), '')")
            .fetch_one(&one)
            .await
            .unwrap();
    assert_eq!(after, None, "the same connection, after commit: unset");

    assert!(TenantDb::new(one.clone()).with_role("x\"; drop").is_err());
    assert!(TenantDb::new(one.clone()).with_role("").is_err());
    db.cleanup().await;
}

#[actix_web::test]
async fn builder_refuses_bad_settings() {
    let pool = unreachable_pool();
    for bad in ["", "Tenants", "a-b", "a\"b", &"a".repeat(64)] {
        assert!(
            PostgresRegistry::builder(pool.clone())
                .channel(bad)
                .build()
                .is_err(),
            "{bad:?}"
        );
    }
    assert!(PostgresRegistry::builder(pool.clone())
        .reconnect_backoff(Duration::ZERO, Duration::from_secs(1))
        .build()
        .is_err());
    assert!(PostgresRegistry::builder(pool.clone())
        .reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1))
        .build()
        .is_err());
    // Outside a runtime, starting the listener is an error, not a panic.
    let reg = PostgresRegistry::new(pool);
    let outside = std::thread::spawn(move || reg.cached(CacheConfig::default()).is_err());
    assert!(outside.join().unwrap());
}
