//! Tenant data (features `postgres` and `axum`): [`TenantTx`], a PostgreSQL transaction
//! scoped to the request's resolved tenant, as an axum handler argument. The models,
//! their migrations and row-level security are the core's (`tenancy_core::storage`,
//! re-exported here), the same as actix-tenancy's `TenantTx` begins.
//!
//! The extractor finds the [`TenantData`] in the request extensions: add it with
//! axum's `Extension` layer, outside the tenancy layer or inside it.
//!
//! ```no_run
//! use axum::{routing::get, Extension, Router};
//! use tower_tenancy::{
//!     storage::{sql_error, Model, TenantData, TenantTx},
//!     TenancyError,
//! };
//!
//! async fn notes(mut tx: TenantTx) -> Result<String, TenancyError> {
//!     // No tenant in the query: the transaction is the tenant's.
//!     let notes: Vec<String> = sqlx::query_scalar("select body from notes order by id")
//!         .fetch_all(&mut *tx)
//!         .await
//!         .map_err(sql_error)?;
//!     tx.commit().await?;
//!     Ok(notes.join("\n"))
//! }
//!
//! # fn app(pool: sqlx::PgPool, layer: tower_tenancy::TenancyLayer) -> Result<Router, Box<dyn std::error::Error>> {
//! let data = TenantData::builder()
//!     .schemas(pool, "tenant_")
//!     .default_model(Model::Schema)
//!     .build()?;
//! Ok(Router::new()
//!     .route("/notes", get(notes))
//!     .layer(layer)
//!     .layer(Extension(data)))
//! # }
//! ```

use std::{
    fmt,
    ops::{Deref, DerefMut},
};

use axum_core::extract::FromRequestParts;
use http::request::Parts;
use sqlx::{PgConnection, Postgres, Transaction};
pub use tenancy_core::storage::{
    begin_for_tenant, schema_name, sql_error, DatabaseUrls, MigrationReport, Model, Progress,
    ScopedTx, TenantData, TenantDataBuilder, TenantDb, TenantMigrations,
};
use tenancy_core::{
    error::{ProblemJson, TenancyError},
    TenantId,
};

use crate::tenant::{reject, Resolution, TenantRejection};

/// A transaction scoped to the request's resolved tenant, as an axum handler argument:
/// its schema or database, with `app.tenant_id` set for row-level security. It derefs
/// to the connection (`&mut *tx` is an executor); [`commit`](Self::commit) it, or it
/// rolls back when dropped.
///
/// It is built from the resolved tenant only: without the [`TenancyLayer`](crate::TenancyLayer)
/// the answer is `500`, without a tenant (a request the layer let through without one)
/// `401 tenant_missing`, without a [`TenantData`] in the extensions `500`; a tenant
/// whose database or schema cannot be had is `503 tenant_unavailable`. Each in the
/// layer's problem body, saying nothing of why.
pub struct TenantTx(ScopedTx);

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TenantTx").field(&self.0).finish()
    }
}

impl From<ScopedTx> for TenantTx {
    /// A transaction begun with [`TenantData::begin`], as the extractor's.
    fn from(tx: ScopedTx) -> Self {
        Self(tx)
    }
}

impl TenantTx {
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        self.0.tenant()
    }

    /// The model the tenant's data is in.
    pub fn model(&self) -> Model {
        self.0.model()
    }

    /// Commits; a failure is logged and is `500 internal_error` with no detail (the
    /// database's message names tables and constraints).
    pub async fn commit(self) -> Result<(), TenancyError> {
        self.0.commit().await.map_err(sql_error)
    }

    /// The transaction itself.
    pub fn into_inner(self) -> Transaction<'static, Postgres> {
        self.0.into_inner()
    }
}

impl Deref for TenantTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.0
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TenantTx {
    type Rejection = TenantRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(resolution) = parts.extensions.get::<Resolution>().cloned() else {
            tracing::error!(
                target: "tower_tenancy",
                "TenantTx found no tenant resolution: put the handler behind a TenancyLayer"
            );
            let err = TenancyError::Misconfigured("TenancyLayer missing");
            return Err(reject(&err, &ProblemJson::default(), parts));
        };
        let Some(tenant) = resolution.tenant else {
            return Err(reject(
                &TenancyError::TenantMissing,
                &resolution.responder,
                parts,
            ));
        };
        let Some(data) = parts.extensions.get::<TenantData>().cloned() else {
            tracing::error!(
                target: "tower_tenancy",
                "TenantTx needs the TenantData in the extensions (axum's Extension layer)"
            );
            let err = TenancyError::Misconfigured("TenantData missing");
            return Err(reject(&err, &resolution.responder, parts));
        };
        match data.begin(&tenant).await {
            Ok(tx) => Ok(Self(tx)),
            Err(why) => Err(reject(
                &tenancy_core::storage::unavailable(why),
                &resolution.responder,
                parts,
            )),
        }
    }
}
