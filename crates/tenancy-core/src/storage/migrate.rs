//! [`TenantMigrations`]: the application's migrations, applied to every tenant's
//! schema or database.

use std::{fmt, sync::Arc};

use futures_util::StreamExt as _;
use sqlx::{Connection as _, PgConnection, PgPool};

use super::{data::Target, quoted, TenantData};
use crate::{TenantId, TenantRecord};

/// One tenant done (or the shared schema of the pooled model, `tenant: None`).
#[derive(Debug)]
#[non_exhaustive]
pub struct Progress<'a> {
    /// The tenant; `None` for the pooled model's shared schema.
    pub tenant: Option<&'a TenantId>,
    /// How many targets are done, this one included.
    pub done: usize,
    /// How many there are.
    pub total: usize,
    /// Migrations applied to this target now (0: it was up to date).
    pub applied: usize,
    /// Why it failed, if it did.
    pub error: Option<&'a str>,
}

/// What a run did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Each tenant migrated, with how many migrations it took now.
    pub applied: Vec<(TenantId, usize)>,
    /// Each tenant that failed, and why; the others are not held back, and a second
    /// run resumes where each stopped.
    pub failed: Vec<(TenantId, String)>,
    /// The pooled model's shared schema: migrations applied, or why it failed.
    pub shared: Option<Result<usize, String>>,
}

impl MigrationReport {
    /// Whether every target is up to date.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && !matches!(self.shared, Some(Err(_)))
    }
}

type OnProgress = dyn Fn(&Progress<'_>) + Send + Sync;

/// Migrations by name, applied in order to each tenant's schema (created when
/// missing) or database, and once to the pooled model's shared schema. Each migration
/// runs in its own transaction and is recorded in the target's `_tenancy_migrations`
/// table, so a run that stops (or a tenant that fails) resumes at the next run; a
/// transaction-scoped advisory lock per target keeps two processes from applying the
/// same migration at once.
///
/// ```no_run
/// use tenancy_core::storage::{TenantData, TenantMigrations};
///
/// # async fn run(data: TenantData, records: Vec<tenancy_core::TenantRecord>) {
/// let report = TenantMigrations::new()
///     .add("0001_notes", "create table notes (id bigserial primary key, body text not null)")
///     .concurrency(8)
///     .on_progress(|p| eprintln!("{}/{} {:?}: {} applied", p.done, p.total, p.tenant, p.applied))
///     .run(&data, &records)
///     .await;
/// assert!(report.is_complete(), "{:?}", report.failed);
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct TenantMigrations {
    steps: Vec<(String, String)>,
    concurrency: usize,
    progress: Option<Arc<OnProgress>>,
}

impl fmt::Debug for TenantMigrations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.steps.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TenantMigrations")
            .field("steps", &names)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl Default for TenantMigrations {
    fn default() -> Self {
        Self::new()
    }
}

impl TenantMigrations {
    /// No migrations yet; 4 tenants at a time.
    pub fn new() -> Self {
        Self {
            steps: Vec::new(),
            concurrency: 4,
            progress: None,
        }
    }

    /// Adds a migration: a unique name and its SQL (several statements allowed).
    pub fn add(mut self, name: impl Into<String>, sql: impl Into<String>) -> Self {
        self.steps.push((name.into(), sql.into()));
        self
    }

    /// How many tenants are migrated at once (default 4).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Called after each target, e.g. to print a progress line or move a bar.
    pub fn on_progress(mut self, f: impl Fn(&Progress<'_>) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Migrates the tenants of `records` (as `data` places each: its model, schema or
    /// database), and the shared schema once if any of them is pooled.
    pub async fn run(&self, data: &TenantData, records: &[TenantRecord]) -> MigrationReport {
        let mut report = MigrationReport::default();
        let mut targets = Vec::new();
        let mut pooled = false;
        for record in records {
            match data.target(record) {
                Ok(Some(target)) => targets.push((record.id().clone(), target)),
                Ok(None) => pooled = true,
                Err(e) => report.failed.push((record.id().clone(), e.0)),
            }
        }
        let total = targets.len() + usize::from(pooled);
        let mut done = 0;
        if let (true, Some(pool)) = (pooled, data.pooled_pool()) {
            let result = match own_connection(pool).await {
                Ok(mut conn) => self.apply(&mut conn, None, false, None).await,
                Err(e) => Err(e),
            };
            done += 1;
            self.report(None, done, total, &result);
            report.shared = Some(result);
        }
        let roles = data.schema_roles();
        let mut runs = futures_util::stream::iter(targets)
            .map(|(tenant, target)| async move {
                // Each target on a connection of its own, made when its turn comes: the
                // request pools (and their bound) are not used.
                let result = match target {
                    Target::Schema(pool, schema) => match own_connection(&pool).await {
                        Ok(mut conn) => {
                            self.apply(&mut conn, Some(&schema), roles, Some(&tenant))
                                .await
                        }
                        Err(e) => Err(e),
                    },
                    Target::Database(url) => match PgConnection::connect(&url).await {
                        Ok(mut conn) => {
                            let r = self.apply(&mut conn, None, false, Some(&tenant)).await;
                            let _ = conn.close().await;
                            r
                        }
                        Err(e) => Err(format!("cannot connect to the tenant's database: {e}")),
                    },
                };
                (tenant, result)
            })
            .buffer_unordered(self.concurrency);
        while let Some((tenant, result)) = runs.next().await {
            done += 1;
            self.report(Some(&tenant), done, total, &result);
            match result {
                Ok(n) => report.applied.push((tenant, n)),
                Err(e) => report.failed.push((tenant, e)),
            }
        }
        report
    }

    fn report(
        &self,
        tenant: Option<&TenantId>,
        done: usize,
        total: usize,
        r: &Result<usize, String>,
    ) {
        match r {
            Ok(n) => {
                tracing::info!(target: "tenancy::storage", tenant = tenant.map(TenantId::as_str), done, total, applied = n, "migrated")
            }
            Err(e) => {
                tracing::warn!(target: "tenancy::storage", tenant = tenant.map(TenantId::as_str), done, total, "migration failed: {e}")
            }
        }
        if let Some(f) = &self.progress {
            f(&Progress {
                tenant,
                done,
                total,
                applied: *r.as_ref().unwrap_or(&0),
                error: r.as_ref().err().map(String::as_str),
            });
        }
    }

    /// Applies the migrations not yet recorded in the target: the pooled schema
    /// (`schema` and `tenant` `None`), a tenant's schema, or a tenant's database
    /// (`tenant` only, which is then marked as the tenant's).
    async fn apply(
        &self,
        conn: &mut PgConnection,
        schema: Option<&str>,
        roles: bool,
        tenant: Option<&TenantId>,
    ) -> Result<usize, String> {
        let err = |e: sqlx::Error| e.to_string();
        let lock = schema.unwrap_or("(database)");
        // The target itself, under its lock: the schema (and its role), the ledger the
        // migrator owns, and for a database the mark of its tenant.
        let mut tx = conn.begin().await.map_err(err)?;
        advisory_lock(&mut tx, lock).await?;
        let ledger = match schema {
            Some(schema) => {
                let q = quoted(schema);
                let setup = if roles {
                    // `schema` is `[a-z0-9_]` (from `schema_name`): safe as a literal. A
                    // role that exists and could log in or bypass security is refused,
                    // never adopted.
                    format!(
                        "do $$ begin \
                           if not exists (select 1 from pg_roles where rolname = '{schema}') then \
                             create role {q} nologin; \
                           end if; \
                         exception when duplicate_object or unique_violation then null; end $$; \
                         do $$ begin \
                           if exists (select 1 from pg_roles where rolname = '{schema}' and \
                               (rolsuper or rolbypassrls or rolcreaterole or rolcanlogin)) then \
                             raise exception 'the role {schema} is privileged: not a tenant role'; \
                           end if; \
                         end $$; \
                         grant {q} to current_user; \
                         create schema if not exists {q} authorization {q};"
                    )
                } else {
                    format!("create schema if not exists {q}")
                };
                sqlx::raw_sql(&setup).execute(&mut *tx).await.map_err(err)?;
                format!("{q}._tenancy_migrations")
            }
            None => "_tenancy_migrations".to_owned(),
        };
        sqlx::raw_sql(&format!(
            "create table if not exists {ledger} \
             (name text primary key, applied_at timestamptz not null default now())"
        ))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        if let (None, Some(tenant)) = (schema, tenant) {
            sqlx::raw_sql("create table if not exists _tenancy_tenant (id text primary key)")
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            sqlx::query(
                "insert into _tenancy_tenant (id) select $1 \
                 where not exists (select 1 from _tenancy_tenant)",
            )
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            let owned: Option<bool> = sqlx::query_scalar(
                "select count(*) = 1 and bool_and(id = $1) from _tenancy_tenant",
            )
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
            if owned != Some(true) {
                return Err("the database is marked as another tenant's".into());
            }
        }
        tx.commit().await.map_err(err)?;

        let mut applied = 0;
        for (name, sql) in &self.steps {
            let mut tx = conn.begin().await.map_err(err)?;
            advisory_lock(&mut tx, lock).await?;
            let txid: i64 = sqlx::query_scalar("select txid_current()")
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
            let done: bool = sqlx::query_scalar(&format!(
                "select exists(select 1 from {ledger} where name = $1)"
            ))
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
            if done {
                continue;
            }
            // The migration's scope: the tenant, its schema, its role.
            let role = match (schema, roles) {
                (Some(schema), true) => schema,
                _ => "none",
            };
            let path = schema.map(|s| format!("{}, pg_temp", quoted(s)));
            sqlx::query(
                "select set_config('app.tenant_id', $1, true), \
                        set_config('search_path', coalesce($2, current_setting('search_path')), true), \
                        set_config('role', $3, true)",
            )
            .bind(tenant.map_or("", TenantId::as_str))
            .bind(path)
            .bind(role)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            // A migration that ended its transaction ran out of scope: not recorded.
            let same: bool = sqlx::query_scalar("select txid_current() = $1")
                .bind(txid)
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
            if !same {
                return Err(format!(
                    "{name}: it ended its transaction (no COMMIT in a migration)"
                ));
            }
            sqlx::query("select set_config('role', 'none', true)")
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            sqlx::query(&format!("insert into {ledger} (name) values ($1)"))
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
            applied += 1;
        }
        Ok(applied)
    }
}

/// A connection of `pool`'s that is closed, not returned, when done: whatever a
/// migration left on its session never reaches a request.
async fn own_connection(
    pool: &PgPool,
) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, String> {
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    conn.close_on_drop();
    Ok(conn)
}

async fn advisory_lock(tx: &mut PgConnection, target: &str) -> Result<(), String> {
    sqlx::query("select pg_advisory_xact_lock(hashtext('actix-tenancy migrations ' || $1))")
        .bind(target)
        .execute(tx)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
