//! A tenant registry in PostgreSQL (feature `postgres`).
//!
//! - [`PostgresRegistry`]: lookups by id with one parameterised query on a
//!   [`PgPool`]; a database failure is an `Err` (the resolver answers `503`), never
//!   "not found". The schema ships as [`MIGRATION`] and is applied by
//!   [`PostgresRegistry::migrate`].
//! - Admin operations for a back office ([`create`](PostgresRegistry::create),
//!   [`suspend`](PostgresRegistry::suspend), [`reactivate`](PostgresRegistry::reactivate),
//!   [`set_tier`](PostgresRegistry::set_tier), [`set_region`](PostgresRegistry::set_region),
//!   [`set_attributes`](PostgresRegistry::set_attributes),
//!   [`delete`](PostgresRegistry::delete)): each validated before any SQL, each one
//!   transaction that also sends a `NOTIFY` with the tenant id.
//! - Cross-replica freshness: [`PostgresRegistry::cached`] wraps the registry in a
//!   [`CachedRegistry`] and starts an [`InvalidationListener`] that `LISTEN`s and evicts
//!   each changed tenant, so a suspension reaches every replica within about a second.
//!   While the listen connection is down the cache TTL still bounds staleness; after a
//!   reconnect the whole cache is dropped, since notifications may have been missed.
//! - Row-level security: actix-tenancy's `storage` (`TenantDb`, `begin_for_tenant`)
//!   opens a transaction with `app.tenant_id` set to the resolved tenant, for policies
//!   such as `tenant_id = current_setting('app.tenant_id', true)`.
//!
//! The registry serves every adapter: hand the cache to actix-tenancy's
//! `TenantResolver::builder` or tower-tenancy's `TenancyLayer::builder`.
//!
//! ```no_run
//! use std::time::Duration;
//! use tenancy_core::registry::{postgres::PostgresRegistry, CacheConfig};
//! use sqlx::postgres::PgPoolOptions;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = PgPoolOptions::new().connect(&std::env::var("DATABASE_URL")?).await?;
//! let registry = PostgresRegistry::new(pool.clone());
//! registry.migrate().await?;
//!
//! // Once per process. Keep `listener` alive as long as the server runs: dropping it
//! // stops the invalidation task.
//! let (cache, listener) = registry.cached(CacheConfig::default().ttl(Duration::from_secs(30)))?;
//!
//! // A back office, on any replica:
//! cache.inner().suspend("acme").await?;
//! # drop((cache, listener)); Ok(()) }
//! ```

mod admin;
mod listen;

use std::{fmt, sync::Arc, time::Duration};

use sqlx::{postgres::PgRow, types::Json, PgPool, Row};

pub use admin::AdminError;
pub use listen::InvalidationListener;

use super::{CacheConfig, CachedRegistry, Lookup, RegistryError, TenantRecord, TenantRegistry};
use crate::{error::ConfigError, Answer, Moment, TenantIdRule};

/// The registry schema: table `tenants`. [`PostgresRegistry::migrate`] applies it; it
/// is idempotent, and creates its objects in the first schema of the `search_path`.
pub const MIGRATION: &str = include_str!("../../migrations/0001_tenants.sql");

/// The channel changes are announced on unless configured otherwise.
pub const DEFAULT_CHANNEL: &str = "actix_tenancy_tenants";

/// Serialises concurrent [`PostgresRegistry::migrate`] calls (an advisory lock key).
const MIGRATION_LOCK: i64 = 0x6163_7469_785f_746e; // "actix_tn"

/// A statement that ends with the columns [`record_from_row`] reads, so every query is
/// a `&'static str` (and each connection prepares it once).
macro_rules! returning_record {
    ($($sql:literal)+) => {
        concat!($($sql,)+ " id, status, tier, region, parent, attributes")
    };
}
pub(crate) use returning_record;

const LOOKUP: &str = concat!(returning_record!("select"), " from tenants where id = $1");

/// A [`TenantRegistry`] backed by the `tenants` table of a PostgreSQL database.
///
/// Cloning is cheap (the pool and the settings are shared). Put it behind a
/// [`CachedRegistry`] (most simply with [`cached`](Self::cached)): without a cache
/// every request makes a query.
///
/// Ids are checked with the registry's [`TenantIdRule`] (the default rule unless
/// [`PostgresRegistryBuilder::id_rule`] says otherwise; use the resolver's rule) before
/// any SQL is sent, and every value travels as a bind parameter.
#[derive(Clone)]
pub struct PostgresRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    channel: String,
    id_rule: TenantIdRule,
    backoff: (Duration, Duration),
}

impl fmt::Debug for PostgresRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresRegistry")
            .field("channel", &self.shared.channel)
            .field("id_rule", &self.shared.id_rule)
            .field("pool_size", &self.shared.pool.size())
            .finish_non_exhaustive()
    }
}

/// Configures a [`PostgresRegistry`].
#[must_use]
#[derive(Debug)]
pub struct PostgresRegistryBuilder {
    pool: PgPool,
    channel: String,
    id_rule: TenantIdRule,
    backoff: (Duration, Duration),
}

impl PostgresRegistryBuilder {
    /// The `NOTIFY` channel (default [`DEFAULT_CHANNEL`]): 1 to 63 bytes of
    /// `[a-z0-9_]`, starting with a letter or `_`. Every replica must use the same one;
    /// two applications sharing a database use two.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// The id rule (default [`TenantIdRule::Default`]); give it the resolver's rule.
    pub fn id_rule(mut self, rule: TenantIdRule) -> Self {
        self.id_rule = rule;
        self
    }

    /// How long the [`InvalidationListener`] waits before reconnecting: `min` after a
    /// first failure, doubling up to `max`. Default 100 ms to 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<PostgresRegistry, ConfigError> {
        if !is_identifier(&self.channel) {
            return Err(bad_name("NOTIFY channel", self.channel));
        }
        let (min, max) = self.backoff;
        if min.is_zero() || max < min {
            return Err(ConfigError::invalid(
                "reconnect backoff",
                format!("{min:?}..{max:?}"),
                "its minimum must be longer than zero and at most its maximum",
            ));
        }
        Ok(self.unchecked())
    }

    fn unchecked(self) -> PostgresRegistry {
        PostgresRegistry {
            shared: Arc::new(Shared {
                pool: self.pool,
                channel: self.channel,
                id_rule: self.id_rule,
                backoff: self.backoff,
            }),
        }
    }
}

impl PostgresRegistry {
    /// A registry on `pool` with the default channel and id rule.
    pub fn new(pool: PgPool) -> Self {
        // The defaults are valid settings.
        Self::builder(pool).unchecked()
    }

    /// A builder, for another channel, id rule or reconnect backoff.
    pub fn builder(pool: PgPool) -> PostgresRegistryBuilder {
        PostgresRegistryBuilder {
            pool,
            channel: DEFAULT_CHANNEL.to_owned(),
            id_rule: TenantIdRule::Default,
            backoff: DEFAULT_BACKOFF,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// The `NOTIFY` channel.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }

    /// The id rule.
    pub fn id_rule(&self) -> &TenantIdRule {
        &self.shared.id_rule
    }

    /// Creates the `tenants` table if it is missing ([`MIGRATION`]), in one transaction
    /// under an advisory lock, so replicas starting together do not race. Safe to call
    /// on every start.
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.shared.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(MIGRATION).execute(&mut *tx).await?;
        tx.commit().await
    }

    /// Wraps the registry in a [`CachedRegistry`] and starts the
    /// [`InvalidationListener`] that keeps it fresh. Keep the listener for as long as
    /// the cache is used: dropping it stops the task. Bind it to a name
    /// (`let (cache, _listener) = ...`); `let (cache, _) = ...` drops it at once.
    ///
    /// Must be called inside a Tokio runtime (for instance in `#[tokio::main]` or `#[actix_web::main]`);
    /// otherwise this is a [`ConfigError`]. It does not wait for the database: the
    /// listener connects in the background and keeps retrying, and
    /// [`InvalidationListener::ready`] waits for it.
    pub fn cached(
        self,
        config: CacheConfig,
    ) -> Result<(Arc<CachedRegistry<Self>>, InvalidationListener), ConfigError> {
        let listen = self.clone();
        let cache = Arc::new(CachedRegistry::new(self, config));
        let listener = InvalidationListener::spawn(&listen, &cache)?;
        Ok((cache, listener))
    }

    /// Starts an [`InvalidationListener`] for `cache`, a cache over this registry (or
    /// over any registry that reads the same table).
    pub fn listen<R: TenantRegistry>(
        &self,
        cache: &Arc<CachedRegistry<R>>,
    ) -> Result<InvalidationListener, ConfigError> {
        InvalidationListener::spawn(self, cache)
    }
}

const DEFAULT_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

impl TenantRegistry for PostgresRegistry {
    fn lookup<'a>(
        &'a self,
        id: &'a str,
        _: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>> {
        // An id outside the rule was never stored (every write checks it): not found,
        // and no query.
        if self.shared.id_rule.check(id).is_err() {
            return Answer::Now(Ok(None));
        }
        Answer::later(async move {
            let row = sqlx::query(LOOKUP)
                .bind(id)
                .fetch_optional(&self.shared.pool)
                .await
                .map_err(|e| RegistryError::new(format!("postgres lookup failed: {e}")))?;
            match row {
                None => Ok(None),
                Some(row) => record_from_row(&row, &self.shared.id_rule)
                    .map(|rec| Some(Arc::new(rec)))
                    .map_err(|e| RegistryError::new(format!("postgres: bad tenant row: {e}"))),
            }
        })
    }
}

/// Reads a tenant row. Anything unexpected is an error, never a guess.
fn record_from_row(row: &PgRow, rule: &TenantIdRule) -> Result<TenantRecord, String> {
    let text = |col: &str| -> Result<String, String> {
        row.try_get::<String, _>(col).map_err(|e| e.to_string())
    };
    let id = rule.parse(&text("id")?).map_err(|e| format!("id: {e}"))?;
    let status = text("status")?.parse()?;
    let mut rec = TenantRecord::new(id, text("tier")?).with_status(status);
    if let Some(region) = row
        .try_get::<Option<String>, _>("region")
        .map_err(|e| e.to_string())?
    {
        rec = rec.with_region(region);
    }
    if let Some(parent) = row
        .try_get::<Option<String>, _>("parent")
        .map_err(|e| e.to_string())?
    {
        rec = rec.with_parent(rule.parse(&parent).map_err(|e| format!("parent: {e}"))?);
    }
    let Json(attributes) = row
        .try_get::<Json<serde_json::Value>, _>("attributes")
        .map_err(|e| e.to_string())?;
    match attributes {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                rec = rec.with_attribute(k, v);
            }
        }
        other => return Err(format!("attributes is not an object: {other}")),
    }
    Ok(rec)
}

/// `[a-z0-9][a-z0-9_-]{0,63}`: the rule for tiers and regions (the table checks it too).
fn is_label(s: &str) -> bool {
    TenantIdRule::Default.check(s).is_ok()
}

pub use crate::backend::sql::is_sql_identifier;
use crate::backend::sql::{bad_name, is_sql_identifier as is_identifier};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(is_label("pro"));
        assert!(is_label("eu-west-1"));
        for bad in ["", "Pro", " pro", "pro\n", "-x", &"a".repeat(65), "ｐｒｏ"] {
            assert!(!is_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn migration_is_shipped() {
        assert!(MIGRATION.contains("create table if not exists tenants"));
    }
}
