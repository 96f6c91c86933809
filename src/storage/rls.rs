//! Row-level security: transactions scoped to the resolved tenant.

use std::{fmt, sync::Arc};

use sqlx::{PgPool, Postgres, Transaction};

use crate::backend::sql::is_sql_identifier as is_identifier;
use crate::core::{error::ConfigError, TenantId};

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
/// clone, meant to be shared as `web::Data<TenantDb>`.
///
/// ```no_run
/// use actix_tenancy::{storage::TenantDb, Tenant};
/// use actix_web::{error::ErrorInternalServerError, web, HttpResponse};
///
/// async fn notes(db: web::Data<TenantDb>, tenant: Tenant) -> actix_web::Result<HttpResponse> {
///     let mut tx = db.begin(tenant.id()).await.map_err(ErrorInternalServerError)?;
///     // No `where tenant_id = ...`: the policy on `notes` adds it.
///     let bodies: Vec<String> = sqlx::query_scalar("select body from notes order by id")
///         .fetch_all(&mut *tx)
///         .await
///         .map_err(ErrorInternalServerError)?;
///     tx.commit().await.map_err(ErrorInternalServerError)?;
///     Ok(HttpResponse::Ok().json(bodies))
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
            return Err(crate::backend::sql::bad_name("role", role));
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
