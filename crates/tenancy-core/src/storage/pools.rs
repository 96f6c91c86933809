//! The database-per-tenant model's pools: one per tenant, opened lazily, bounded in
//! number, the least recently used idle one replaced, unused ones closed.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use sqlx::{postgres::PgPoolOptions, ConnectOptions as _, PgPool};

use crate::TenantId;

struct Entry {
    pool: PgPool,
    url: String,
    used: Instant,
    /// Requests holding this pool (from `pool_for` until their transaction ends).
    users: Arc<AtomicUsize>,
}

/// A request's hold on its tenant's pool: while any is held, the pool is never
/// replaced, even before its first connection is out.
pub(crate) struct Use(Arc<AtomicUsize>);

impl Use {
    fn new(users: &Arc<AtomicUsize>) -> Self {
        users.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(users))
    }
}

impl Drop for Use {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Entry {
    /// No request holds it and no connection is out.
    fn unused(&self) -> bool {
        self.users.load(Ordering::Acquire) == 0 && unused(&self.pool)
    }
}

pub(crate) struct Pools {
    map: Mutex<HashMap<TenantId, Entry>>,
    max_pools: usize,
    per_pool: u32,
    idle: Duration,
    acquire: Duration,
    swept: Mutex<Instant>,
}

/// A pool with no connection in use.
fn unused(pool: &PgPool) -> bool {
    pool.size() as usize == pool.num_idle()
}

/// Closes `pool`: marked closed at once (no clone acquires from it again), its
/// connections closed on the runtime when there is one.
fn close(pool: PgPool) {
    // `close` marks the pool closed when called, before its future is polled.
    drop(pool.close());
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move { pool.close().await });
    }
}

/// `tenant`'s pool for `url` in `map`, marked used, with a hold on it.
fn hit(
    map: &mut HashMap<TenantId, Entry>,
    tenant: &TenantId,
    url: &str,
    now: Instant,
) -> Option<(PgPool, Use)> {
    let e = map.get_mut(tenant).filter(|e| e.url == url)?;
    e.used = now;
    Some((e.pool.clone(), Use::new(&e.users)))
}

impl Pools {
    pub(crate) fn new(max_pools: usize, per_pool: u32, idle: Duration, acquire: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max_pools,
            per_pool,
            idle,
            acquire,
            swept: Mutex::new(Instant::now()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// `tenant`'s pool for `url`: the one open, or a new one (a pool whose URL changed,
    /// a tenant moved, is closed and replaced). A pool is only ever `tenant`'s.
    pub(crate) fn pool_for(&self, tenant: &TenantId, url: &str) -> Result<(PgPool, Use), String> {
        let now = Instant::now();
        if let Some(open) = self.open(tenant, url, now) {
            return Ok(open);
        }
        // A new pool: the URL parsed once, here, outside the lock (it may read files:
        // `.pgpass`), never on the requests that find their pool open.
        let options: sqlx::postgres::PgConnectOptions = url
            .parse()
            .map_err(|_| "the tenant database URL cannot be parsed".to_owned())?;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        self.sweep(&mut map, now);
        // Opened by another request meanwhile?
        if let Some(open) = hit(&mut map, tenant, url, now) {
            return Ok(open);
        }
        // Still there with another URL: the tenant moved, and no request goes to its
        // old database again.
        if let Some(old) = map.remove(tenant) {
            close(old.pool);
        }
        if map.len() >= self.max_pools {
            // Unused: no request holds it, no connection is out.
            let victim = map
                .iter()
                .filter(|(_, e)| e.unused())
                .min_by_key(|(_, e)| e.used)
                .map(|(t, _)| t.clone())
                .ok_or("every tenant database pool is in use")?;
            if let Some(old) = map.remove(&victim) {
                close(old.pool);
            }
        }
        let options = options
            .application_name(&format!("actix-tenancy:{}", tenant.as_str()))
            .log_statements(log::LevelFilter::Off);
        let pool = PgPoolOptions::new()
            .max_connections(self.per_pool)
            .min_connections(0)
            .idle_timeout(self.idle)
            .acquire_timeout(self.acquire)
            .connect_lazy_with(options);
        let users = Arc::new(AtomicUsize::new(0));
        let hold = Use::new(&users);
        map.insert(
            tenant.clone(),
            Entry {
                pool: pool.clone(),
                url: url.to_owned(),
                used: now,
                users,
            },
        );
        Ok((pool, hold))
    }

    /// `tenant`'s open pool for `url`, if there is one.
    fn open(&self, tenant: &TenantId, url: &str, now: Instant) -> Option<(PgPool, Use)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        self.sweep(&mut map, now);
        hit(&mut map, tenant, url, now)
    }

    /// Closes pools unused for the idle time, at most once per idle time / 4.
    fn sweep(&self, map: &mut HashMap<TenantId, Entry>, now: Instant) {
        let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(*swept) < self.idle / 4 {
            return;
        }
        *swept = now;
        let idle: Vec<TenantId> = map
            .iter()
            .filter(|(_, e)| now.duration_since(e.used) >= self.idle && e.unused())
            .map(|(t, _)| t.clone())
            .collect();
        for t in idle {
            if let Some(e) = map.remove(&t) {
                close(e.pool);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    const URL: &str = "postgres://app@127.0.0.1:1/x";

    #[tokio::test]
    async fn a_held_pool_is_kept_and_a_replaced_one_is_closed_at_once() {
        let pools = Pools::new(1, 1, Duration::from_secs(60), Duration::from_secs(1));
        let (first, hold) = pools.pool_for(&id("acme"), URL).unwrap();
        // The one slot is held: no pool for another tenant.
        assert!(pools.pool_for(&id("globex"), URL).is_err());
        drop(hold);
        let (_, _globex) = pools.pool_for(&id("globex"), URL).unwrap();
        assert!(
            first.is_closed(),
            "marked closed when replaced, before any await"
        );
        assert_eq!(pools.len(), 1);
        // A tenant whose URL changed (moved) gets a new pool; the old one is closed.
        let (old, held) = pools.pool_for(&id("globex"), URL).unwrap();
        drop(held);
        let (new, _held) = pools
            .pool_for(&id("globex"), "postgres://app@127.0.0.1:1/y")
            .unwrap();
        assert!(old.is_closed() && !new.is_closed());
    }
}
