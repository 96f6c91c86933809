//! [`TenantData`]: the isolation models and how a tenant's transaction begins.

use std::{fmt, sync::Arc, time::Duration};

use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use super::{pools::Pools, quoted, schema_name, ScopedTx};
use crate::{
    backend::sql::{bad_name, is_sql_identifier},
    error::ConfigError,
    TenantContext, TenantId, TenantRecord,
};

/// An isolation model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// One schema for every tenant, rows told apart by row-level security.
    Pooled,
    /// A schema per tenant.
    Schema,
    /// A database per tenant.
    Database,
}

/// `url` with the password of its user info replaced by `***`.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for DatabaseUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Template(t) => f.debug_tuple("Template").field(&redacted(t)).finish(),
            Self::Attribute(a) => f.debug_tuple("Attribute").field(a).finish(),
        }
    }
}

impl Model {
    fn name(self) -> &'static str {
        match self {
            Self::Pooled => "pooled",
            Self::Schema => "schema",
            Self::Database => "database",
        }
    }
}

/// Where a tenant's database is, in the database-per-tenant model. Its `Debug` hides
/// passwords.
///
/// Whoever can write the record attribute decides which server the service connects
/// to with its credentials: keep attributes to your own administrators. Either way a
/// request is served only by a database that [`TenantMigrations`](super::TenantMigrations)
/// marked as the tenant's (a `_tenancy_tenant` table holding its id), so a URL naming
/// another tenant's database is `503`.
#[derive(Clone)]
pub enum DatabaseUrls {
    /// A URL with `{tenant}` in it, e.g. `postgres://app@db.internal/tenant_{tenant}`;
    /// the id is put in as it is, and an id with anything but `[A-Za-z0-9_-]` (which
    /// could change the URL's meaning: `%`, `?`, `/`) is refused (`503`).
    Template(String),
    /// The URL in this attribute of the tenant's registry record.
    Attribute(String),
}

/// Tenant-scoped transactions in the configured models; cheap to clone, shared with
/// each adapter's `TenantTx` extractor (actix-web: `web::Data<TenantData>`; axum: an
/// `Extension`).
///
/// A tenant's model is the record's [`model_attribute`](TenantDataBuilder::model_attribute)
/// (`"pooled"`, `"schema"` or `"database"`), else the
/// [`default_model`](TenantDataBuilder::default_model). A model the deployment does not
/// configure, or an attribute that names none, is `503`, never the default.
#[derive(Clone)]
pub struct TenantData(Arc<Inner>);

struct Inner {
    pooled: Option<PgPool>,
    schemas: Option<(PgPool, String)>,
    databases: Option<(DatabaseUrls, Pools)>,
    role: Option<String>,
    schema_roles: bool,
    default: Model,
    model_attribute: Option<String>,
}

impl fmt::Debug for TenantData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantData")
            .field("default", &self.0.default)
            .field("pooled", &self.0.pooled.is_some())
            .field("schemas", &self.0.schemas.as_ref().map(|(_, p)| p))
            .field("databases", &self.0.databases.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

/// Builds a [`TenantData`].
#[must_use]
pub struct TenantDataBuilder {
    pooled: Option<PgPool>,
    schemas: Option<(PgPool, String)>,
    databases: Option<DatabaseUrls>,
    role: Option<String>,
    schema_roles: bool,
    default: Option<Model>,
    model_attribute: Option<String>,
    max_pools: usize,
    connections_per_pool: u32,
    idle_timeout: Duration,
    acquire_timeout: Duration,
}

impl fmt::Debug for TenantDataBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantDataBuilder")
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

/// Why a tenant's transaction could not begin. The request is answered `503
/// tenant_unavailable`; the message is for logs only.
#[derive(Debug)]
pub(crate) struct DataError(pub(crate) String);

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn data_error(tenant: &TenantId, what: impl fmt::Display) -> DataError {
    DataError(format!("tenant {:?}: {what}", tenant.as_str()))
}

/// `tenant`'s record chooses a model this deployment does not configure.
fn unconfigured(tenant: &TenantId, model: Model) -> DataError {
    data_error(
        tenant,
        format_args!("the {} model is not configured", model.name()),
    )
}

impl TenantData {
    /// A builder; configure at least one model.
    pub fn builder() -> TenantDataBuilder {
        TenantDataBuilder {
            pooled: None,
            schemas: None,
            databases: None,
            role: None,
            schema_roles: false,
            default: None,
            model_attribute: None,
            max_pools: 50,
            connections_per_pool: 4,
            idle_timeout: Duration::from_secs(600),
            acquire_timeout: Duration::from_secs(2),
        }
    }

    /// The model the tenant of `record` uses.
    pub fn model_of(&self, record: &TenantRecord) -> Result<Model, String> {
        let Some(attr) = &self.0.model_attribute else {
            return Ok(self.0.default);
        };
        match record.attributes().get(attr) {
            None => Ok(self.0.default),
            Some(Value::String(m)) => [Model::Pooled, Model::Schema, Model::Database]
                .into_iter()
                .find(|model| model.name() == m)
                .ok_or_else(|| format!("the {attr:?} attribute names no model: {m:?}")),
            Some(other) => Err(format!("the {attr:?} attribute names no model: {other}")),
        }
    }

    /// The database pools open now (database-per-tenant model).
    pub fn open_pools(&self) -> usize {
        self.0.databases.as_ref().map_or(0, |(_, p)| p.len())
    }

    /// Begins `ctx`'s tenant's transaction: what each adapter's `TenantTx` extractor
    /// does for a handler, for one that would rather begin late (after reading a slow
    /// client's body, so that no connection waits on the client), and for work outside
    /// a request. The error names the tenant and what failed, for logs; answer it `503
    /// tenant_unavailable` ([`unavailable`](super::unavailable)), never with its text.
    pub async fn begin(&self, ctx: &TenantContext) -> Result<ScopedTx, String> {
        self.begin_scoped(ctx).await.map_err(|e| e.0)
    }

    async fn begin_scoped(&self, ctx: &TenantContext) -> Result<ScopedTx, DataError> {
        let tenant = ctx.id();
        let model = self
            .model_of(ctx.record())
            .map_err(|e| data_error(tenant, e))?;
        let mut held = None;
        // Every model sets the tenant and the role in the transaction's first statement
        // (`none` when no role is configured, so a role a previous request set on the
        // session never carries over).
        let tx = match model {
            Model::Pooled => {
                let pool = self
                    .0
                    .pooled
                    .as_ref()
                    .ok_or_else(|| unconfigured(tenant, model))?;
                let role = self.0.role.as_deref().unwrap_or("none");
                let mut tx = begin(pool, tenant).await?;
                sqlx::query(
                    "select set_config('app.tenant_id', $1, true), set_config('role', $2, true)",
                )
                .bind(tenant.as_str())
                .bind(role)
                .execute(&mut *tx)
                .await
                .map_err(|e| data_error(tenant, e))?;
                tx
            }
            Model::Schema => {
                let (pool, schema) = self.schema_of(tenant)?;
                // The tenant's own role (`schema_roles`): another tenant's schema is a
                // permission error, whatever the query names.
                let role = match (self.0.schema_roles, self.0.role.as_deref()) {
                    (true, _) => schema.as_str(),
                    (false, Some(role)) => role,
                    (false, None) => "none",
                };
                let mut tx = begin(pool, tenant).await?;
                // `pg_temp` last: a temporary table of an earlier request on this
                // connection never shadows the tenant's tables.
                let found: bool = sqlx::query_scalar(
                    "select exists(select 1 from pg_namespace where nspname = $3) \
                     from (select set_config('app.tenant_id', $1, true), \
                                  set_config('search_path', $2, true), \
                                  set_config('role', $4, true)) as scoped",
                )
                .bind(tenant.as_str())
                .bind(format!("{}, pg_temp", quoted(&schema)))
                .bind(&schema)
                .bind(role)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| data_error(tenant, e))?;
                if !found {
                    return Err(data_error(
                        tenant,
                        format_args!("the schema {schema:?} does not exist"),
                    ));
                }
                tx
            }
            Model::Database => {
                let (urls, pools) = self
                    .0
                    .databases
                    .as_ref()
                    .ok_or_else(|| unconfigured(tenant, model))?;
                let url = database_url(urls, ctx.record())?;
                let (pool, hold) = pools
                    .pool_for(tenant, &url)
                    .map_err(|e| data_error(tenant, e))?;
                held = Some(hold);
                let mut tx = begin(&pool, tenant).await?;
                // The database must be this tenant's: `TenantMigrations` marks it, and a
                // URL naming another tenant's database is refused.
                let owned: Option<bool> = sqlx::query_scalar(
                    "select (select count(*) = 1 and bool_and(id = $1) from _tenancy_tenant) \
                     from (select set_config('app.tenant_id', $1, true), \
                                  set_config('role', 'none', true)) as scoped",
                )
                .bind(tenant.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| data_error(tenant, e))?;
                if owned != Some(true) {
                    return Err(data_error(
                        tenant,
                        "the database is not marked as this tenant's",
                    ));
                }
                tx
            }
        };
        Ok(ScopedTx::new(tx, tenant.clone(), model, held))
    }

    /// Where `record`'s tenant's migrations go; `None` for a pooled tenant (the shared
    /// schema is migrated once).
    pub(crate) fn target(&self, record: &TenantRecord) -> Result<Option<Target>, DataError> {
        let tenant = record.id();
        let model = self.model_of(record).map_err(|e| data_error(tenant, e))?;
        match model {
            Model::Pooled => self
                .0
                .pooled
                .as_ref()
                .map(|_| None)
                .ok_or_else(|| unconfigured(tenant, model)),
            Model::Schema => {
                let (pool, schema) = self.schema_of(tenant)?;
                Ok(Some(Target::Schema(pool.clone(), schema)))
            }
            Model::Database => {
                let (urls, _) = self
                    .0
                    .databases
                    .as_ref()
                    .ok_or_else(|| unconfigured(tenant, model))?;
                Ok(Some(Target::Database(database_url(urls, record)?)))
            }
        }
    }

    /// The schema model's pool and `tenant`'s schema.
    fn schema_of(&self, tenant: &TenantId) -> Result<(&PgPool, String), DataError> {
        let (pool, prefix) = self
            .0
            .schemas
            .as_ref()
            .ok_or_else(|| unconfigured(tenant, Model::Schema))?;
        let schema = schema_name(prefix, tenant)
            .ok_or_else(|| data_error(tenant, "the id is too long for a schema name"))?;
        Ok((pool, schema))
    }

    /// Whether schemas have roles of their own.
    pub(crate) fn schema_roles(&self) -> bool {
        self.0.schema_roles
    }

    /// The shared pool of the pooled model.
    pub(crate) fn pooled_pool(&self) -> Option<&PgPool> {
        self.0.pooled.as_ref()
    }
}

/// Where one tenant's migrations run.
pub(crate) enum Target {
    /// A schema of the schema model's pool.
    Schema(PgPool, String),
    /// A database, on a connection of its own (not one of the request pools).
    Database(String),
}

/// Whether `id` can go into a URL as it is: `[A-Za-z0-9_-]` only. Anything else (`%`,
/// `?`, `/`, `@`) could change which database, host or options the URL names.
fn url_safe(id: &str) -> bool {
    id.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn database_url(urls: &DatabaseUrls, record: &TenantRecord) -> Result<String, DataError> {
    match urls {
        DatabaseUrls::Template(t) if url_safe(record.id().as_str()) => {
            Ok(t.replace("{tenant}", record.id().as_str()))
        }
        DatabaseUrls::Template(_) => Err(data_error(
            record.id(),
            "the id cannot go into a database URL",
        )),
        DatabaseUrls::Attribute(a) => match record.attributes().get(a) {
            Some(Value::String(url)) => Ok(url.clone()),
            _ => Err(data_error(
                record.id(),
                format_args!("its record has no {a:?} URL"),
            )),
        },
    }
}

async fn begin(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Transaction<'static, Postgres>, DataError> {
    pool.begin().await.map_err(|e| data_error(tenant, e))
}

impl TenantDataBuilder {
    /// The pooled model on `pool`: row-level security on `app.tenant_id`.
    pub fn pooled(mut self, pool: PgPool) -> Self {
        self.pooled = Some(pool);
        self
    }

    /// The schema-per-tenant model on `pool`, schemas named by
    /// [`schema_name`](super::schema_name)`(prefix, id)`.
    pub fn schemas(mut self, pool: PgPool, prefix: impl Into<String>) -> Self {
        self.schemas = Some((pool, prefix.into()));
        self
    }

    /// The database-per-tenant model: each tenant's database at `urls`.
    pub fn databases(mut self, urls: DatabaseUrls) -> Self {
        self.databases = Some(urls);
        self
    }

    /// Gives each tenant's schema a role of its own, of the same name, that owns it and
    /// its tables; the tenant's transactions run as that role (`set local role`), so a
    /// query naming another tenant's schema is a permission error, never data.
    /// [`TenantMigrations`](super::TenantMigrations) creates the roles (the migrating
    /// connection needs `CREATEROLE`, and the service's login role membership in them).
    pub fn schema_roles(mut self, on: bool) -> Self {
        self.schema_roles = on;
        self
    }

    /// Runs pooled transactions (and schema ones without
    /// [`schema_roles`](Self::schema_roles)) as `role` (`set local role`), for pools
    /// that connect as a role row-level security does not bind. It must not start
    /// with the schema prefix (a tenant's role could be named so).
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// The model of tenants whose record does not choose one (default: the only one
    /// configured).
    pub fn default_model(mut self, model: Model) -> Self {
        self.default = Some(model);
        self
    }

    /// The record attribute that chooses a tenant's model (e.g. `isolation`:
    /// `"database"` for a premium tenant on its own database).
    pub fn model_attribute(mut self, name: impl Into<String>) -> Self {
        self.model_attribute = Some(name.into());
        self
    }

    /// The most database pools open at once (default 50); a new one replaces the least
    /// recently used pool that no request holds (from the extractor until its
    /// transaction ends), else the request is `503`. A replaced pool is closed at once
    /// for new work; its idle connections close right after, asynchronously.
    pub fn max_pools(mut self, max: usize) -> Self {
        self.max_pools = max;
        self
    }

    /// The most connections of one tenant's pool (default 4): with
    /// [`max_pools`](Self::max_pools), the bound on connections to tenant databases.
    pub fn connections_per_pool(mut self, max: u32) -> Self {
        self.connections_per_pool = max;
        self
    }

    /// How long an unused pool (and an unused connection) stays open (default 10 min).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// How long a request waits for a connection of its tenant's pool (default 2 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<TenantData, ConfigError> {
        let configured = [
            (Model::Pooled, self.pooled.is_some()),
            (Model::Schema, self.schemas.is_some()),
            (Model::Database, self.databases.is_some()),
        ];
        let mut on = configured.iter().filter(|(_, on)| *on).map(|(m, _)| *m);
        let default = match (self.default, on.next(), on.next()) {
            (Some(m), _, _) if configured.iter().any(|(c, on)| *c == m && *on) => m,
            (Some(_), _, _) => return Err(ConfigError::Missing("the default model's pool")),
            (None, Some(m), None) => m,
            (None, None, _) => return Err(ConfigError::Missing("an isolation model")),
            (None, Some(_), Some(_)) => return Err(ConfigError::Missing("a default model")),
        };
        if let Some((_, prefix)) = &self.schemas {
            let ok = prefix.len() < super::MAX_IDENT
                && prefix
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(bad_name("schema prefix", prefix.clone()));
            }
        }
        if let Some(role) = &self.role {
            let shadows = self
                .schemas
                .as_ref()
                .is_some_and(|(_, p)| role.starts_with(p.as_str()));
            if !is_sql_identifier(role) || shadows {
                return Err(bad_name("role", role.clone()));
            }
        }
        if let Some(DatabaseUrls::Template(t)) = &self.databases {
            if !t.contains("{tenant}") {
                return Err(ConfigError::Missing(
                    "{tenant} in the database URL template",
                ));
            }
        }
        if self.max_pools == 0 || self.connections_per_pool == 0 {
            return Err(ConfigError::Missing("room for one pool and one connection"));
        }
        for (d, what) in [
            (self.idle_timeout, "idle timeout"),
            (self.acquire_timeout, "acquire timeout"),
        ] {
            if d.is_zero() {
                return Err(ConfigError::zero_duration(what));
            }
        }
        let databases = self.databases.map(|urls| {
            (
                urls,
                Pools::new(
                    self.max_pools,
                    self.connections_per_pool,
                    self.idle_timeout,
                    self.acquire_timeout,
                ),
            )
        });
        Ok(TenantData(Arc::new(Inner {
            pooled: self.pooled,
            schemas: self.schemas,
            databases,
            role: self.role,
            schema_roles: self.schema_roles,
            default,
            model_attribute: self.model_attribute,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let urls = DatabaseUrls::Template("postgres://app:s3cret@db/t_{tenant}".into());
        let shown = format!("{urls:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("app:***@db"),
            "{shown}"
        );
        assert_eq!(redacted("postgres://app@db/x"), "postgres://app@db/x");
    }

    #[test]
    fn ids_that_could_change_a_url_are_refused() {
        let urls = DatabaseUrls::Template("postgres://app@db/t_{tenant}".into());
        let record = |id: &str| TenantRecord::new(TenantId::parse(id).unwrap(), "pro");
        assert!(database_url(&urls, &record("acme-1")).is_ok());
        let custom = crate::TenantIdRule::custom(|_| true);
        for hostile in ["%61cme", "x?host=evil", "a/b", "u@h"] {
            let id = custom.parse(hostile).unwrap();
            let r = TenantRecord::new(id, "pro");
            assert!(database_url(&urls, &r).is_err(), "{hostile}");
        }
    }
}
