//! Admin operations: each validated before any SQL, each one transaction that also
//! sends a `NOTIFY` with the tenant id (delivered when, and only if, it commits).

use std::fmt;

use sqlx::{
    postgres::{PgArguments, PgRow},
    query::Query,
    types::Json,
    Postgres,
};

use super::{is_label, record_from_row, returning_record, PostgresRegistry};
use crate::{InvalidTenantId, RevokeSessions, TenantRecord, TenantStatus};

/// Why an admin operation on a [`PostgresRegistry`] did not happen.
///
/// Validation errors are returned before any SQL is sent.
#[derive(Debug)]
#[non_exhaustive]
pub enum AdminError {
    /// The tenant id fails the registry's [`TenantIdRule`](crate::TenantIdRule).
    InvalidId(InvalidTenantId),
    /// The parent id fails the rule, or names the tenant itself.
    InvalidParent(Option<InvalidTenantId>),
    /// A tier must be 1 to 64 bytes of `[a-z0-9_-]`, starting with a letter or digit.
    InvalidTier,
    /// A region follows the same rule as a tier.
    InvalidRegion,
    /// No tenant has this id.
    NotFound,
    /// A tenant with this id exists already.
    AlreadyExists,
    /// The parent tenant does not exist.
    ParentNotFound,
    /// The tenant is the parent of other tenants; delete or move them first.
    HasChildren,
    /// The database failed; nothing was changed.
    Database(sqlx::Error),
    /// [`suspend_and_revoke`](PostgresRegistry::suspend_and_revoke): the tenant *is*
    /// suspended, but revoking its sessions failed; retry the call.
    Sessions(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidId(e) => write!(f, "invalid tenant id: {e}"),
            Self::InvalidParent(Some(e)) => write!(f, "invalid parent id: {e}"),
            Self::InvalidParent(None) => f.write_str("a tenant cannot be its own parent"),
            Self::InvalidTier => f.write_str(
                "invalid tier: use 1 to 64 bytes of [a-z0-9_-], starting with a letter or digit",
            ),
            Self::InvalidRegion => f.write_str(
                "invalid region: use 1 to 64 bytes of [a-z0-9_-], starting with a letter or digit",
            ),
            Self::NotFound => f.write_str("no such tenant"),
            Self::AlreadyExists => f.write_str("a tenant with this id exists already"),
            Self::ParentNotFound => f.write_str("the parent tenant does not exist"),
            Self::HasChildren => f.write_str("the tenant has child tenants"),
            Self::Database(e) => write!(f, "database error: {e}"),
            Self::Sessions(e) => write!(f, "suspended, but its sessions were not revoked: {e}"),
        }
    }
}

impl std::error::Error for AdminError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidId(e) => Some(e),
            Self::InvalidParent(Some(e)) => Some(e),
            Self::Database(e) => Some(e),
            Self::Sessions(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for AdminError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

/// The SQLSTATE of a database error, if it is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

const FOREIGN_KEY_VIOLATION: &str = "23503";
const UNIQUE_VIOLATION: &str = "23505";

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

impl PostgresRegistry {
    /// Adds a tenant with the record's status, tier, region, parent and attributes.
    ///
    /// [`AdminError::AlreadyExists`] if the id is taken, [`AdminError::ParentNotFound`]
    /// if the parent is unknown.
    pub async fn create(&self, record: &TenantRecord) -> Result<TenantRecord, AdminError> {
        let id = self.valid_id(record.id())?;
        if !is_label(record.tier()) {
            return Err(AdminError::InvalidTier);
        }
        if record.region().is_some_and(|r| !is_label(r)) {
            return Err(AdminError::InvalidRegion);
        }
        if let Some(parent) = record.parent() {
            self.shared
                .id_rule
                .check(parent)
                .map_err(|e| AdminError::InvalidParent(Some(e)))?;
            if parent.as_str() == id {
                return Err(AdminError::InvalidParent(None));
            }
        }
        let query = sqlx::query(returning_record!(
            "insert into tenants (id, status, tier, region, parent, attributes)"
            " values ($1, $2, $3, $4, $5, $6) on conflict (id) do nothing returning"
        ))
        .bind(id)
        .bind(record.status().as_str())
        .bind(record.tier())
        .bind(record.region())
        .bind(record.parent().map(|p| p.as_str()))
        .bind(Json(record.attributes()));
        match self.write(id, query).await {
            Err(AdminError::NotFound) => Err(AdminError::AlreadyExists),
            Err(AdminError::Database(e))
                if sqlstate(&e).as_deref() == Some(FOREIGN_KEY_VIOLATION) =>
            {
                Err(AdminError::ParentNotFound)
            }
            other => other,
        }
    }

    /// Every tenant, by id (e.g. to migrate each tenant's data with
    /// actix-tenancy's `storage::TenantMigrations`). A row this crate cannot
    /// read is a [`AdminError::Database`] error.
    pub async fn list(&self) -> Result<Vec<TenantRecord>, AdminError> {
        let rows = sqlx::query(concat!(
            returning_record!("select"),
            " from tenants order by id"
        ))
        .fetch_all(&self.shared.pool)
        .await
        .map_err(AdminError::Database)?;
        rows.iter()
            .map(|row| {
                record_from_row(row, &self.shared.id_rule)
                    .map_err(|e| AdminError::Database(sqlx::Error::Decode(e.into())))
            })
            .collect()
    }

    /// Sets the status to [`TenantStatus::Suspended`]: the resolver answers
    /// `403 tenant_forbidden`, as for an unknown tenant.
    pub async fn suspend(&self, id: &str) -> Result<TenantRecord, AdminError> {
        self.set_status(id, TenantStatus::Suspended).await
    }

    /// Suspends the tenant and revokes every session token issued to it until now
    /// through `sessions` (a [`RevokeSessions`], such as the JWT stage's
    /// `SessionManager`), in one call. The suspension commits first: if the revocation
    /// then fails, the tenant is still refused everywhere, and the error says to retry.
    pub async fn suspend_and_revoke(
        &self,
        id: &str,
        sessions: &dyn RevokeSessions,
    ) -> Result<TenantRecord, AdminError> {
        let record = self.suspend(id).await?;
        sessions
            .revoke_sessions(record.id())
            .await
            .map_err(AdminError::Sessions)?;
        Ok(record)
    }

    /// Sets the status back to [`TenantStatus::Active`].
    pub async fn reactivate(&self, id: &str) -> Result<TenantRecord, AdminError> {
        self.set_status(id, TenantStatus::Active).await
    }

    /// Sets any status (see [`StatusRules`](crate::registry::StatusRules) for what each
    /// one gets).
    pub async fn set_status(
        &self,
        id: &str,
        status: TenantStatus,
    ) -> Result<TenantRecord, AdminError> {
        let id = self.valid_id(id)?;
        let sql = returning_record!(
            "update tenants set status = $2, updated_at = now() where id = $1 returning"
        );
        let query = sqlx::query(sql).bind(id).bind(status.as_str());
        self.write(id, query).await
    }

    /// Moves the tenant to another tier.
    pub async fn set_tier(&self, id: &str, tier: &str) -> Result<TenantRecord, AdminError> {
        let id = self.valid_id(id)?;
        if !is_label(tier) {
            return Err(AdminError::InvalidTier);
        }
        let sql = returning_record!(
            "update tenants set tier = $2, updated_at = now() where id = $1 returning"
        );
        self.write(id, sqlx::query(sql).bind(id).bind(tier)).await
    }

    /// Pins the tenant to a region, or unpins it with `None`.
    pub async fn set_region(
        &self,
        id: &str,
        region: Option<&str>,
    ) -> Result<TenantRecord, AdminError> {
        let id = self.valid_id(id)?;
        if region.is_some_and(|r| !is_label(r)) {
            return Err(AdminError::InvalidRegion);
        }
        let sql = returning_record!(
            "update tenants set region = $2, updated_at = now() where id = $1 returning"
        );
        self.write(id, sqlx::query(sql).bind(id).bind(region)).await
    }

    /// Replaces the tenant's attributes.
    pub async fn set_attributes(
        &self,
        id: &str,
        attributes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<TenantRecord, AdminError> {
        let id = self.valid_id(id)?;
        let sql = returning_record!(
            "update tenants set attributes = $2, updated_at = now() where id = $1 returning"
        );
        self.write(id, sqlx::query(sql).bind(id).bind(Json(attributes)))
            .await
    }

    /// Removes the tenant's row and returns its last record; lookups then answer "not
    /// found". To keep the row, use [`set_status`](Self::set_status) with
    /// [`TenantStatus::Deleted`] instead. [`AdminError::HasChildren`] while other
    /// tenants name it as their parent.
    pub async fn delete(&self, id: &str) -> Result<TenantRecord, AdminError> {
        let id = self.valid_id(id)?;
        let sql = returning_record!("delete from tenants where id = $1 returning");
        match self.write(id, sqlx::query(sql).bind(id)).await {
            Err(AdminError::Database(e))
                if sqlstate(&e).as_deref() == Some(FOREIGN_KEY_VIOLATION) =>
            {
                Err(AdminError::HasChildren)
            }
            other => other,
        }
    }

    fn valid_id<'a>(&self, id: &'a str) -> Result<&'a str, AdminError> {
        self.shared
            .id_rule
            .check(id)
            .map(|()| id)
            .map_err(AdminError::InvalidId)
    }

    /// Runs `query` (which returns the changed row, or none when `id` does not exist)
    /// and the `NOTIFY` in one transaction. No row: [`AdminError::NotFound`], and the
    /// transaction is rolled back.
    async fn write(&self, id: &str, query: PgQuery<'_>) -> Result<TenantRecord, AdminError> {
        let mut tx = self.shared.pool.begin().await?;
        let changed = async {
            let row: Option<PgRow> = query.fetch_optional(&mut *tx).await.map_err(|e| {
                if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) {
                    AdminError::AlreadyExists
                } else {
                    AdminError::Database(e)
                }
            })?;
            let Some(row) = row else {
                return Err(AdminError::NotFound);
            };
            let record = record_from_row(&row, &self.shared.id_rule)
                .map_err(|e| AdminError::Database(sqlx::Error::Decode(e.into())))?;
            sqlx::query("select pg_notify($1, $2)")
                .bind(&self.shared.channel)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(record)
        }
        .await;
        match changed {
            Ok(record) => {
                tx.commit().await?;
                Ok(record)
            }
            Err(e) => {
                // Roll back now: a dropped transaction is rolled back later, by a task
                // of the runtime; until that runs, the connection sits idle in
                // transaction holding its locks (a blocked runtime never runs it).
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}
