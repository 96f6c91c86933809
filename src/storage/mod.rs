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
//! the request path (a job, a script), [`TenantData::begin`], [`TenantDb`] and
//! [`begin_for_tenant`] open the same transactions on your own.
//!
//! Everything here but the extractor and [`sql_error`] is `tenancy_core::storage`,
//! re-exported: tower-tenancy's `TenantTx` begins the same transactions for axum.
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

mod tx;

pub use tenancy_core::storage::{
    begin_for_tenant, schema_name, DatabaseUrls, MigrationReport, Model, Progress, ScopedTx,
    TenantData, TenantDataBuilder, TenantDb, TenantMigrations,
};
pub use tx::TenantTx;

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
