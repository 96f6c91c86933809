//! [`TenantTx`]: the extractor.

use std::{
    fmt,
    ops::{Deref, DerefMut},
};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use sqlx::{PgConnection, Postgres, Transaction};

use super::{Model, ScopedTx, TenantData};
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
/// answer is a `500` that says so, without a tenant (an exempt path) `401
/// tenant_missing`, without `web::Data<TenantData>` a `500`; a tenant whose database
/// or schema cannot be had is `503 tenant_unavailable`.
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

    /// Commits; a failure is logged and answered `500` with no detail (the
    /// database's message names tables and constraints).
    pub async fn commit(self) -> Result<(), actix_web::Error> {
        self.0.commit().await.map_err(super::sql_error)
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
            match data.begin(&ctx).await {
                Ok(tx) => Ok(Self(tx)),
                Err(why) => Err(respond_err(
                    tenancy_core::storage::unavailable(why),
                    &*resolution.responder,
                    &req,
                )),
            }
        })
    }
}
