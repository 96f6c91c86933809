//! Tenant data (feature `postgres`): a handler takes a [`TenantTx`], a PostgreSQL
//! transaction already scoped to the request's resolved tenant, in one of three
//! isolation models, chosen per deployment and, where the registry record says so, per
//! tenant:
//!
//! | model | scope | for |
//! | --- | --- | --- |
//! | [`Model::Pooled`] | one schema for all; row-level security on `app.tenant_id` (`set_config(.., true)`) as an ordinary role | many small tenants, one migration |
//! | [`Model::Schema`] | a schema per tenant: `set local search_path` to the tenant's schema (also `app.tenant_id`) | tens to thousands of tenants that need their own tables, one database |
//! | [`Model::Database`] | a database per tenant, its URL from a template or its record; pools opened lazily, bounded, idle ones closed | tenants that pay for their own database, or must be restored, moved or deleted alone |
//!
//! A schema or database that does not exist, or a pool that cannot connect, is `503
//! tenant_unavailable`: never a fall-through to a shared database. [`TenantMigrations`]
//! applies the application's migrations to every tenant's schema or database. Outside
//! the request path (a job, a script), [`TenantDb`] and [`begin_for_tenant`] open the
//! pooled model's transaction on a pool of your own.
//!
//! ```no_run
//! use actix_tenancy::storage::{Model, TenantData, TenantTx};
//! use actix_web::{web, App, HttpResponse};
//!
//! async fn notes(mut tx: TenantTx) -> actix_web::Result<HttpResponse> {
//!     // No tenant in the query: the transaction is the tenant's.
//!     let notes: Vec<String> = sqlx::query_scalar("select body from notes order by id")
//!         .fetch_all(&mut *tx)
//!         .await
//!         .map_err(actix_tenancy::storage::sql_error)?;
//!     tx.commit().await?;
//!     Ok(HttpResponse::Ok().json(notes))
//! }
//!
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let data = TenantData::builder()
//!     .schemas(pool, "tenant_")
//!     .default_model(Model::Schema)
//!     .build()?;
//! let app = App::new()
//!     .app_data(web::Data::new(data))
//!     .route("/notes", web::get().to(notes)); // behind Tenancy or TenantResolver
//! # let _ = app; Ok(()) }
//! ```

mod data;
mod migrate;
mod pools;
mod rls;
mod tx;

pub use data::{DatabaseUrls, Model, TenantData, TenantDataBuilder};
pub use migrate::{MigrationReport, Progress, TenantMigrations};
pub use rls::{begin_for_tenant, TenantDb};
pub use tx::TenantTx;

/// The longest schema name PostgreSQL keeps (`NAMEDATALEN - 1`).
const MAX_IDENT: usize = 63;

/// The schema of `tenant` under `prefix`: `prefix` then the id, with `[a-z0-9]` kept
/// and every other byte written as `_` and two hex digits, so that two ids never share
/// a schema (`my-co` → `tenant_my_2dco`). `None` when that is over 63 bytes.
///
/// ```
/// use actix_tenancy::{storage::schema_name, TenantId};
///
/// let id = TenantId::parse("acme").unwrap();
/// assert_eq!(schema_name("tenant_", &id).as_deref(), Some("tenant_acme"));
/// let id = TenantId::parse("my-co").unwrap();
/// assert_eq!(schema_name("tenant_", &id).as_deref(), Some("tenant_my_2dco"));
/// ```
pub fn schema_name(prefix: &str, tenant: &crate::core::TenantId) -> Option<String> {
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

/// A query's error as a handler's answer: logged, and `500` with no detail for the
/// client (the database's message names tables, columns and constraints).
///
/// ```
/// # async fn list(mut tx: actix_tenancy::storage::TenantTx) -> actix_web::Result<String> {
/// use actix_tenancy::storage::sql_error;
/// let n: i64 = sqlx::query_scalar("select count(*) from notes")
///     .fetch_one(&mut *tx)
///     .await
///     .map_err(sql_error)?;
/// # Ok(n.to_string()) }
/// ```
pub fn sql_error(e: sqlx::Error) -> actix_web::Error {
    tracing::error!(target: "actix_tenancy::storage", "query failed: {e}");
    actix_web::error::InternalError::new(
        "internal error",
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
    )
    .into()
}

/// `name` as a quoted SQL identifier (`"` doubled).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::TenantId;

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
