//! [`ScopedTx`]: a tenant's transaction, whatever framework asked for it.

use std::{
    fmt,
    ops::{Deref, DerefMut},
};

use sqlx::{PgConnection, Postgres, Transaction};

use super::{pools::Use, Model};
use crate::TenantId;

/// A PostgreSQL transaction scoped to one tenant: its schema or database, with
/// `app.tenant_id` set for row-level security. It derefs to the connection (`&mut
/// *tx` is an executor); [`commit`](Self::commit) it, or it rolls back when dropped.
///
/// [`TenantData::begin`](super::TenantData::begin) opens one; each adapter's
/// `TenantTx` extractor holds one, begun for the request's resolved tenant.
pub struct ScopedTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    model: Model,
    /// The hold on a tenant database's pool (database model), released with the
    /// transaction.
    _pool: Option<Use>,
}

impl fmt::Debug for ScopedTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedTx")
            .field("tenant", &self.tenant)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl ScopedTx {
    pub(super) fn new(
        tx: Transaction<'static, Postgres>,
        tenant: TenantId,
        model: Model,
        pool: Option<Use>,
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

    /// Commits. The error's message names tables and constraints: log it, and answer
    /// the client without it (each adapter's `sql_error` does both).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// The transaction itself (its connection keeps a tenant database's pool open
    /// until it ends).
    pub fn into_inner(self) -> Transaction<'static, Postgres> {
        self.tx
    }
}

impl Deref for ScopedTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for ScopedTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}
