//! [`TenantTx`]: the extractor.

use std::{
    fmt,
    ops::{Deref, DerefMut},
};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use sqlx::{PgConnection, Postgres, Transaction};

use super::{Model, TenantData};
use crate::core::{
    error::{respond_err, ProblemJson, TenancyError},
    resolution::Resolution,
    TenantId,
};

/// A transaction scoped to the request's resolved tenant, as a handler argument: its
/// schema or database, with `app.tenant_id` set for row-level security. It derefs to
/// the connection (`&mut *tx` is an executor); [`commit`](Self::commit) it, or it
/// rolls back when dropped.
///
/// It is built from the resolved tenant only: without the resolver's middleware the
/// answer is a `500` that says so, without a tenant (an exempt path) `400
/// tenant_missing`, without `web::Data<TenantData>` a `500`; a tenant whose database
/// or schema cannot be had is `503 tenant_unavailable`.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    model: Model,
    /// The hold on a tenant database's pool (database model), released with the
    /// transaction.
    _pool: Option<super::pools::Use>,
}

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant", &self.tenant)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl TenantTx {
    pub(crate) fn new(
        tx: Transaction<'static, Postgres>,
        tenant: TenantId,
        model: Model,
        pool: Option<super::pools::Use>,
    ) -> Self {
        Self {
            tx,
            tenant,
            model,
            _pool: pool,
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The model the tenant's data is in.
    pub fn model(&self) -> Model {
        self.model
    }

    /// Commits; a failure is logged and answered `500` with no detail (the
    /// database's message names tables and constraints).
    pub async fn commit(self) -> Result<(), actix_web::Error> {
        self.tx.commit().await.map_err(super::sql_error)
    }

    /// The transaction itself.
    pub fn into_inner(self) -> Transaction<'static, Postgres> {
        self.tx
    }
}

impl Deref for TenantTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

impl FromRequest for TenantTx {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let misconfigured = |what| {
                respond_err(
                    TenancyError::Misconfigured(what),
                    &ProblemJson::default(),
                    &req,
                )
            };
            let Some(resolution) = Resolution::of(&req) else {
                tracing::error!(
                    target: "actix_tenancy",
                    path = %req.path(),
                    "TenantTx found no tenant resolution: wrap the app or scope in \
                     actix_tenancy::Tenancy (or TenantResolver) before routing"
                );
                return Err(misconfigured("TenantResolver middleware missing"));
            };
            let Some(ctx) = resolution.tenant else {
                return Err(respond_err(
                    TenancyError::TenantMissing,
                    &*resolution.responder,
                    &req,
                ));
            };
            let Some(data) = req.app_data::<web::Data<TenantData>>() else {
                tracing::error!(target: "actix_tenancy", "TenantTx needs app_data(web::Data<TenantData>)");
                return Err(misconfigured("TenantData missing"));
            };
            match data.begin_scoped(&ctx).await {
                Ok(tx) => Ok(tx),
                Err(e) => {
                    tracing::warn!(target: "actix_tenancy::storage", "{e}");
                    let err = TenancyError::TenantUnavailable {
                        retry_after: None,
                        reason: e.0.into(),
                    };
                    Err(respond_err(err, &*resolution.responder, &req))
                }
            }
        })
    }
}
