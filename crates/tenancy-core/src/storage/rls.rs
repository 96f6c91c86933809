//! Row-level security: transactions scoped to the resolved tenant.

use std::{fmt, sync::Arc};

use sqlx::{PgPool, Postgres, Transaction};

use crate::{
    backend::sql::{bad_name, is_sql_identifier as is_identifier},
    error::ConfigError,
    TenantId,
};

/// Begins a transaction on `pool` with `app.tenant_id` set to `tenant` for that
/// transaction only (`set_config('app.tenant_id', $1, true)`), so row-level security
/// policies written as `tenant_id = current_setting('app.tenant_id', true)` let it see
/// that tenant's rows and no other's. The setting ends with the transaction: a pooled
/// connection never carries it into the next request.
///
/// RLS does not apply to superusers, to roles with `BYPASSRLS`, or to a table's owner
/// unless the table has `FORCE ROW LEVEL SECURITY`; connect as an ordinary role, or use
/// [`TenantDb::with_role`].
pub async fn begin_for_tenant(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("select set_config('app.tenant_id', $1, true)")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// A pool whose transactions are scoped to one tenant for row-level security; cheap to
/// clone, meant to be shared with the handlers (`web::Data<TenantDb>`, an axum
/// `Extension`), for a job or script outside the request path too.
///
/// ```no_run
/// use tenancy_core::{storage::TenantDb, TenantId};
///
/// async fn notes(db: &TenantDb, tenant: &TenantId) -> Result<Vec<String>, sqlx::Error> {
///     let mut tx = db.begin(tenant).await?;
///     // No `where tenant_id = ...`: the policy on `notes` adds it.
///     let bodies = sqlx::query_scalar("select body from notes order by id")
///         .fetch_all(&mut *tx)
///         .await?;
///     tx.commit().await?;
///     Ok(bodies)
/// }
/// ```
#[derive(Clone)]
pub struct TenantDb {
    pool: PgPool,
    role: Option<Arc<str>>,
}

impl fmt::Debug for TenantDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantDb")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl TenantDb {
    /// Transactions on `pool`, as the pool's own role.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, role: None }
    }

    /// Runs each transaction as `role` (`set local role`), for a pool that connects as
    /// the tables' owner or another role that row-level security does not bind. The
    /// pool's role must be a member of `role`. A role name is 1 to 63 bytes of
    /// `[a-z0-9_]`, starting with a letter or `_`.
    pub fn with_role(mut self, role: &str) -> Result<Self, ConfigError> {
        if !is_identifier(role) {
            return Err(bad_name("role", role));
        }
        self.role = Some(Arc::from(role));
        Ok(self)
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Begins a transaction scoped to `tenant` (see [`begin_for_tenant`]), as the
    /// configured role if there is one.
    pub async fn begin(
        &self,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = begin_for_tenant(&self.pool, tenant).await?;
        if let Some(role) = &self.role {
            // `role` is a checked identifier; quoted all the same.
            sqlx::query(&format!("set local role \"{role}\""))
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }
}
