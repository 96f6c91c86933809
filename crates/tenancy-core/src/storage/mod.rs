//! Tenant data (feature `postgres`): PostgreSQL transactions scoped to one tenant,
//! in one of three isolation models, chosen per deployment and, where the registry
//! record says so, per tenant:
//!
//! | model | scope | for |
//! | --- | --- | --- |
//! | [`Model::Pooled`] | one schema for all; row-level security on `app.tenant_id` (`set_config(.., true)`) as an ordinary role | many small tenants, one migration |
//! | [`Model::Schema`] | a schema per tenant: `set local search_path` to the tenant's schema (also `app.tenant_id`) | tens to thousands of tenants that need their own tables, one database |
//! | [`Model::Database`] | a database per tenant, its URL from a template or its record; pools opened lazily, bounded, idle ones closed | tenants that pay for their own database, or must be restored, moved or deleted alone |
//!
//! A schema or database that does not exist, or a pool that cannot connect, is `503
//! tenant_unavailable`: never a fall-through to a shared database. [`TenantData`]
//! begins a tenant's [`ScopedTx`]; each adapter's `TenantTx` extractor begins one for
//! the request's resolved tenant (actix-tenancy's and tower-tenancy's). [`TenantMigrations`]
//! applies the application's migrations to every tenant's schema or database. Outside
//! the request path (a job, a script), [`TenantData::begin`], [`TenantDb`] and
//! [`begin_for_tenant`] open the same transactions on your own.
//!
//! ```no_run
//! use tenancy_core::{storage::{Model, TenantData}, TenantContext};
//!
//! # async fn run(pool: sqlx::PgPool, tenant: TenantContext) -> Result<(), Box<dyn std::error::Error>> {
//! let data = TenantData::builder()
//!     .schemas(pool, "tenant_")
//!     .default_model(Model::Schema)
//!     .build()?;
//! let mut tx = data.begin(&tenant).await?;
//! // No tenant in the query: the transaction is the tenant's.
//! let notes: Vec<String> = sqlx::query_scalar("select body from notes order by id")
//!     .fetch_all(&mut *tx)
//!     .await?;
//! tx.commit().await?;
//! # let _ = notes; Ok(()) }
//! ```

mod data;
mod migrate;
mod pools;
mod rls;
mod tx;

pub use data::{DatabaseUrls, Model, TenantData, TenantDataBuilder};
pub use migrate::{MigrationReport, Progress, TenantMigrations};
pub use rls::{begin_for_tenant, TenantDb};
pub use tx::ScopedTx;

use crate::error::TenancyError;

/// The longest schema name PostgreSQL keeps (`NAMEDATALEN - 1`).
const MAX_IDENT: usize = 63;

/// The schema of `tenant` under `prefix`: `prefix` then the id, with `[a-z0-9]` kept
/// and every other byte written as `_` and two hex digits, so that two ids never share
/// a schema (`my-co` → `tenant_my_2dco`). `None` when that is over 63 bytes.
///
/// ```
/// use tenancy_core::{storage::schema_name, TenantId};
///
/// let id = TenantId::parse("acme").unwrap();
/// assert_eq!(schema_name("tenant_", &id).as_deref(), Some("tenant_acme"));
/// let id = TenantId::parse("my-co").unwrap();
/// assert_eq!(schema_name("tenant_", &id).as_deref(), Some("tenant_my_2dco"));
/// ```
pub fn schema_name(prefix: &str, tenant: &crate::TenantId) -> Option<String> {
    let mut name = String::with_capacity(prefix.len() + tenant.as_str().len());
    name.push_str(prefix);
    for b in tenant.as_str().bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("_{b:02x}"));
        }
    }
    (name.len() <= MAX_IDENT).then_some(name)
}

/// The rejection for a tenant whose transaction could not begin (`why`, from
/// [`TenantData::begin`]): logged with target `tenancy::storage`, and `503
/// tenant_unavailable` for the client, whose body says nothing of why.
pub fn unavailable(why: String) -> TenancyError {
    tracing::warn!(target: "tenancy::storage", "{why}");
    TenancyError::TenantUnavailable {
        retry_after: None,
        reason: why.into(),
    }
}

/// A query's error as a rejection: logged with target `tenancy::storage`, and `500
/// internal_error` for the client, whose body says nothing of it (the database's
/// message names tables, columns and constraints).
///
/// ```
/// # async fn count(tx: &mut tenancy_core::storage::ScopedTx) -> Result<i64, tenancy_core::error::TenancyError> {
/// use tenancy_core::storage::sql_error;
/// let n: i64 = sqlx::query_scalar("select count(*) from notes")
///     .fetch_one(&mut **tx)
///     .await
///     .map_err(sql_error)?;
/// # Ok(n) }
/// ```
pub fn sql_error(e: sqlx::Error) -> TenancyError {
    tracing::error!(target: "tenancy::storage", "query failed: {e}");
    TenancyError::Internal {
        reason: "a query failed".into(),
    }
}

/// `name` as a quoted SQL identifier (`"` doubled).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;

    #[test]
    fn schema_names_are_injective_and_bounded() {
        let name = |s: &str| schema_name("t_", &TenantId::parse(s).unwrap());
        assert_ne!(name("a-b"), name("a_b"));
        assert_ne!(name("a_2db"), name("a-b"));
        assert_eq!(name("a_b").as_deref(), Some("t_a_5fb"));
        assert!(name(&"a".repeat(61)).is_some(), "63 bytes with the prefix");
        assert!(name(&"a".repeat(62)).is_none());
        assert!(name(&format!("a{}", "-".repeat(20))).is_some(), "63 bytes");
        assert!(
            name(&format!("a{}", "-".repeat(21))).is_none(),
            "escapes count"
        );
        assert_eq!(quoted("we\"ird"), "\"we\"\"ird\"");
    }
}
