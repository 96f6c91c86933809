//! [`TenantMigrations`]: the application's migrations, applied to every tenant's
//! schema or database.

use std::{fmt, sync::Arc};

use futures_util::StreamExt as _;
use sqlx::PgPool;

use super::{data::scope_schema, quoted, TenantData};
use crate::core::{TenantId, TenantRecord};

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
/// use actix_tenancy::storage::{TenantData, TenantMigrations};
///
/// # async fn run(data: TenantData, records: Vec<actix_tenancy::registry::TenantRecord>) {
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
            let result = self.apply(pool, None, false, "shared").await;
            done += 1;
            self.report(None, done, total, &result);
            report.shared = Some(result);
        }
        let roles = data.schema_roles();
        let mut runs = futures_util::stream::iter(targets)
            .map(|(tenant, (pool, schema))| async move {
                let result = self
                    .apply(&pool, schema.as_deref(), roles, tenant.as_str())
                    .await;
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
                tracing::info!(target: "actix_tenancy::storage", tenant = tenant.map(TenantId::as_str), done, total, applied = n, "migrated")
            }
            Err(e) => {
                tracing::warn!(target: "actix_tenancy::storage", tenant = tenant.map(TenantId::as_str), done, total, "migration failed: {e}")
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

    /// Applies the migrations not yet recorded in the target.
    async fn apply(
        &self,
        pool: &PgPool,
        schema: Option<&str>,
        roles: bool,
        lock: &str,
    ) -> Result<usize, String> {
        let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
        if let Some(schema) = schema {
            let q = quoted(schema);
            let setup = if roles {
                // The schema's own role (`schema_roles`), owning the schema.
                format!(
                    "do $$ begin create role {q} nologin; \
                     exception when duplicate_object then null; end $$; \
                     grant {q} to current_user; \
                     create schema if not exists {q} authorization {q}; \
                     alter schema {q} owner to {q};"
                )
            } else {
                format!("create schema if not exists {q}")
            };
            sqlx::raw_sql(&setup)
                .execute(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut applied = 0;
        for (name, sql) in &self.steps {
            let mut tx = sqlx::Connection::begin(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(schema) = schema {
                scope_schema(&mut tx, schema, roles)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            sqlx::query(
                "select pg_advisory_xact_lock(hashtext('actix-tenancy migrations ' || $1))",
            )
            .bind(lock)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
            sqlx::raw_sql(
                "create table if not exists _tenancy_migrations \
                 (name text primary key, applied_at timestamptz not null default now())",
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
            let done: bool = sqlx::query_scalar(
                "select exists(select 1 from _tenancy_migrations where name = $1)",
            )
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
            if done {
                continue;
            }
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            sqlx::query("insert into _tenancy_migrations (name) values ($1)")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())?;
            applied += 1;
        }
        Ok(applied)
    }
}
