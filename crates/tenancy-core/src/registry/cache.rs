use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use dashmap::DashMap;
// Seeded per process, like std's RandomState, but several times faster on short keys;
// the cache holds attacker-chosen ids (negative entries), so the seed matters.
use foldhash::fast::RandomState;
use std::time::Instant;

use tokio::sync::OnceCell;

use super::{Lease, Lookup, RegistryError, TenantRegistry};
use crate::{Answer, Clock, Moment, TenantId};

/// How [`CachedRegistry`] keeps answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// How long a found record is served without asking the backend. Default 30 s.
    pub ttl: Duration,
    /// How long "not found" is remembered. Short, so a tenant created a moment ago is
    /// not refused for long (and [`CachedRegistry::invalidate`] ends it at once).
    /// Default 5 s.
    pub negative_ttl: Duration,
    /// How long past its TTL a found record may still be served while the backend
    /// cannot answer. After that the resolver fails closed (503). Default 60 s; zero
    /// turns stale serving off.
    pub stale_if_error: Duration,
    /// At most this many ids are cached. When full, expired entries are swept; if it is
    /// still full, new answers are not cached (lookups still work, they just reach the
    /// backend). This bounds the memory an attacker can make the cache hold by sending
    /// many made-up ids. Default 100,000.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            max_entries: 100_000,
        }
    }
}

impl CacheConfig {
    /// Sets [`ttl`](Self::ttl).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets [`negative_ttl`](Self::negative_ttl).
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Sets [`stale_if_error`](Self::stale_if_error).
    #[must_use]
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// Sets [`max_entries`](Self::max_entries).
    #[must_use]
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }
}

#[derive(Clone)]
struct Entry {
    value: Lookup,
    at: Instant,
}

type Flight = Arc<OnceCell<Result<Lookup, RegistryError>>>;

/// A caching wrapper for any [`TenantRegistry`].
///
/// - Found records are kept for [`CacheConfig::ttl`], "not found" for the shorter
///   [`CacheConfig::negative_ttl`].
/// - A burst of concurrent misses for one id makes one backend call; the others wait
///   for its answer (single flight). A waiter whose leader is cancelled takes over.
/// - When the backend fails, a found record is served for up to
///   [`CacheConfig::stale_if_error`] past its TTL, then the lookup fails (and the
///   resolver answers 503). A stale "not found" is never served.
/// - [`invalidate`](Self::invalidate) drops one id at once, including any answer a
///   lookup already in flight would have cached: a cached "not found" cannot outlive
///   the tenant's creation.
///
/// Ages are read from a [`Clock`]: the system's monotonic clock by default (through
/// the pipeline, the request's time, read once for every stage), or a fake one set
/// with [`with_clock`](Self::with_clock) (tokio's paused time does not move it).
///
/// A warm hit is answered [now](crate::Answer::Now), with no future and no
/// lock held across the call (the map is sharded).
///
/// Create it once, outside `HttpServer::new`'s closure, and clone the resolver that
/// holds it into each worker: one cache for the process.
///
/// ```
/// use std::time::Duration;
/// use tenancy_core::registry::{CacheConfig, CachedRegistry, InMemoryRegistry};
///
/// let cached = CachedRegistry::new(
///     InMemoryRegistry::new(),
///     CacheConfig::default().ttl(Duration::from_secs(10)),
/// );
/// cached.invalidate("acme");
/// ```
pub struct CachedRegistry<R> {
    inner: R,
    config: CacheConfig,
    entries: DashMap<TenantId, Entry, RandomState>,
    flights: DashMap<TenantId, Flight, RandomState>,
    generation: AtomicU64,
    /// Moves when a record some worker may hold under a [`Lease`] is dropped or
    /// replaced before its TTL ends: after an invalidation, or when a fresh entry is
    /// overwritten.
    epoch: AtomicU64,
    clock: Clock,
    /// Dropped with the cache: its receivers (an invalidation listener) learn at once
    /// that there is nothing left to keep fresh.
    gone: tokio::sync::watch::Sender<()>,
}

impl<R: fmt::Debug> fmt::Debug for CachedRegistry<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedRegistry")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl<R: TenantRegistry> CachedRegistry<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, config: CacheConfig) -> Self {
        Self {
            inner,
            config,
            entries: DashMap::default(),
            flights: DashMap::default(),
            generation: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            clock: Clock::system(),
            gone: tokio::sync::watch::channel(()).0,
        }
    }

    /// A receiver whose `changed()` fails once this cache is dropped.
    // For actix-tenancy's PostgreSQL listener, until it moves here: not part of the API.
    #[doc(hidden)]
    pub fn dropped(&self) -> tokio::sync::watch::Receiver<()> {
        self.gone.subscribe()
    }

    /// Reads ages from `clock` instead of the system's: with a
    /// [`FakeClock`](crate::FakeClock), a test moves past a TTL
    /// without sleeping.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    #[inline]
    fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The wrapped registry.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Forgets `id` now. Call it whenever a tenant is created, changed or removed.
    pub fn invalidate(&self, id: &str) {
        // Bump first: a lookup in flight compares generations before it caches, so it
        // cannot write back an answer read before this change.
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.remove(id);
        self.flights.remove(id);
        // After the removal: a lease read before it cannot hold past this point.
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets every id.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
        self.flights.clear();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// How many ids are cached now (fresh or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn lifetime(&self, value: &Lookup) -> Duration {
        if value.is_some() {
            self.config.ttl
        } else {
            self.config.negative_ttl
        }
    }

    fn fresh(&self, id: &str, now: Instant) -> Option<Lookup> {
        let e = self.entries.get(id)?;
        (now.saturating_duration_since(e.at) < self.lifetime(&e.value)).then(|| e.value.clone())
    }

    /// A fresh entry at the request's moment, with a lease granted on a found record
    /// (see [`lookup`](TenantRegistry::lookup)).
    #[inline]
    fn fresh_leased(&self, id: &str, at: &mut Moment) -> Option<Lookup> {
        if self.clock.is_fake() {
            // A fake clock is the test's time, whatever the request's; no lease.
            return self.fresh(id, self.clock.now());
        }
        let now = at.instant();
        // Read before the entry: a change after this reading moves it past the lease.
        let epoch = self.epoch.load(Ordering::Acquire);
        let e = self.entries.get(id)?;
        let lifetime = self.lifetime(&e.value);
        if now.saturating_duration_since(e.at) >= lifetime {
            return None;
        }
        if e.value.is_some() {
            if let Some(until) = e.at.checked_add(lifetime) {
                at.grant(Lease { until, epoch });
            }
        }
        Some(e.value.clone())
    }

    /// A miss: one question to the inner registry for every lookup of `id` waiting at
    /// the same time. An id outside the floor every rule keeps (only a caller other
    /// than the resolver could pass one) is asked about and never cached.
    async fn miss(&self, id: &str) -> Result<Lookup, RegistryError> {
        let Some(id) = TenantId::within_floor(id) else {
            return self.inner.lookup(id, &mut Moment::at(self.now())).await;
        };
        let flight: Flight = match self.flights.get(id.as_str()) {
            Some(f) => Arc::clone(f.value()),
            None => Arc::clone(
                self.flights
                    .entry(id.clone())
                    .or_insert_with(|| Arc::new(OnceCell::new()))
                    .value(),
            ),
        };
        let answer = flight.get_or_init(|| self.fetch(&id)).await.clone();
        self.flights
            .remove_if(id.as_str(), |_, f| Arc::ptr_eq(f, &flight));
        answer
    }

    fn store(&self, id: &TenantId, value: &Lookup, generation: u64) {
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if self.entries.len() >= self.config.max_entries && !self.entries.contains_key(id.as_str())
        {
            let now = self.now();
            self.entries.retain(|_, e| {
                now.saturating_duration_since(e.at)
                    < self.lifetime(&e.value) + self.stale_window(&e.value)
            });
            if self.entries.len() >= self.config.max_entries {
                return;
            }
        }
        let now = self.now();
        let old = self.entries.insert(
            id.clone(),
            Entry {
                value: value.clone(),
                at: now,
            },
        );
        // A fresh entry overwritten (two refreshes racing): leases on it end now. An
        // expired one needs nothing, its leases ended with its TTL.
        if old.is_some_and(|e| now.saturating_duration_since(e.at) < self.lifetime(&e.value)) {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn stale_window(&self, value: &Lookup) -> Duration {
        if value.is_some() {
            self.config.stale_if_error
        } else {
            Duration::ZERO
        }
    }

    /// The last known-good record, if it is inside the stale-if-error window.
    fn stale(&self, id: &str) -> Option<Lookup> {
        let e = self.entries.get(id)?;
        let found = e.value.as_ref()?;
        let age = self.now().saturating_duration_since(e.at);
        (age < self.config.ttl + self.config.stale_if_error).then(|| Some(Arc::clone(found)))
    }

    async fn fetch(&self, id: &TenantId) -> Result<Lookup, RegistryError> {
        let generation = self.generation.load(Ordering::Acquire);
        match self.inner.lookup(id, &mut Moment::at(self.now())).await {
            Ok(value) => {
                self.store(id, &value, generation);
                Ok(value)
            }
            Err(err) => match self.stale(id) {
                Some(value) => {
                    tracing::warn!(
                        target: "actix_tenancy::registry",
                        tenant_id = %id,
                        error = %err,
                        "registry unavailable; serving the last known-good record"
                    );
                    Ok(value)
                }
                None => Err(err),
            },
        }
    }
}

impl<R: TenantRegistry> TenantRegistry for CachedRegistry<R> {
    /// A fresh entry answers now: a found record with a lease until its TTL ends, under
    /// the cache's epoch, which moves once [`invalidate`](Self::invalidate) or
    /// [`invalidate_all`](Self::invalidate_all) has dropped entries and whenever a
    /// fresh entry is overwritten; so while the lease holds, the cache would answer
    /// with the same record. No lease on a fake clock (the test's time is not the
    /// request's) nor for "not found". A miss asks the inner registry once for every
    /// lookup of the same id waiting at the same time.
    fn lookup<'a>(
        &'a self,
        id: &'a str,
        at: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>> {
        if let Some(hit) = self.fresh_leased(id, at) {
            return Answer::Now(Ok(hit));
        }
        Answer::later(self.miss(id))
    }

    #[inline]
    fn lease_holds(&self, lease: &Lease, now: Instant) -> bool {
        now < lease.until && self.epoch.load(Ordering::Acquire) == lease.epoch
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{atomic::AtomicUsize, Mutex};

    use super::*;
    use crate::{FakeClock, TenantRecord};

    /// A backend that counts calls, can be made to fail, and answers after a delay.
    #[derive(Default)]
    struct Backend {
        calls: AtomicUsize,
        failing: std::sync::atomic::AtomicBool,
        records: Mutex<Vec<TenantRecord>>,
        delay: Duration,
    }

    impl TenantRegistry for Backend {
        fn lookup<'a>(
            &'a self,
            id: &'a str,
            _: &mut Moment,
        ) -> Answer<'a, Result<Lookup, RegistryError>> {
            // Read first, answer after the delay: a slow query that saw the old state.
            let found = {
                let recs = self.records.lock().unwrap();
                recs.iter().find(|r| r.id() == id).cloned().map(Arc::new)
            };
            let failing = self.failing.load(Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
            Answer::later(async move {
                if !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                if failing {
                    return Err(RegistryError::new("backend down"));
                }
                Ok(found)
            })
        }
    }

    /// The cache's answer without waiting, if it has one now.
    fn ready<R: TenantRegistry>(c: &CachedRegistry<R>, id: &str) -> Option<Lookup> {
        c.lookup(id, &mut Moment::at(Instant::now()))
            .now()
            .map(|answer| answer.expect("a cache answers now only from an entry"))
    }

    /// The cache's answer, waiting for it.
    async fn ask<R: TenantRegistry>(
        c: &CachedRegistry<R>,
        id: &str,
    ) -> Result<Lookup, RegistryError> {
        c.lookup(id, &mut Moment::at(Instant::now())).await
    }

    /// The answer at `now` without waiting, with the lease granted on it.
    fn leased<R: TenantRegistry>(
        c: &CachedRegistry<R>,
        id: &str,
        now: Instant,
    ) -> Option<(Lookup, Option<Lease>)> {
        let mut at = Moment::at(now);
        let answer = c.lookup(id, &mut at).now()?.expect("an entry");
        Some((answer, at.lease()))
    }

    fn id(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn backend_with(ids: &[&str]) -> Backend {
        let b = Backend::default();
        *b.records.lock().unwrap() = ids
            .iter()
            .map(|i| TenantRecord::new(id(i), "pro"))
            .collect();
        b
    }

    /// `c` on a fake clock, and the handle that moves it.
    fn faked<R: TenantRegistry>(c: CachedRegistry<R>) -> (CachedRegistry<R>, FakeClock) {
        let time = FakeClock::new();
        (c.with_clock(time.clock()), time)
    }

    fn cfg() -> CacheConfig {
        CacheConfig::default()
            .ttl(Duration::from_secs(10))
            .negative_ttl(Duration::from_secs(2))
            .stale_if_error(Duration::from_secs(20))
    }

    #[tokio::test(start_paused = true)]
    async fn hit_within_ttl_and_refetch_after() {
        let (c, time) = faked(CachedRegistry::new(backend_with(&["acme"]), cfg()));
        assert!(ready(&c, "acme").is_none(), "cold cache answers nothing");
        assert!(ask(&c, "acme").await.unwrap().is_some());
        assert!(ready(&c, "acme").unwrap().is_some());
        ask(&c, "acme").await.unwrap();
        assert_eq!(c.inner().calls.load(Ordering::SeqCst), 1);
        time.advance(Duration::from_secs(11));
        assert!(ready(&c, "acme").is_none());
        ask(&c, "acme").await.unwrap();
        assert_eq!(c.inner().calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn negative_answers_expire_sooner_and_invalidate_ends_them() {
        let (c, time) = faked(CachedRegistry::new(backend_with(&[]), cfg()));
        assert!(ask(&c, "newco").await.unwrap().is_none());
        assert!(ready(&c, "newco").unwrap().is_none());
        time.advance(Duration::from_secs(3));
        assert!(ready(&c, "newco").is_none(), "negative TTL is 2 s");

        ask(&c, "newco").await.unwrap();
        c.inner()
            .records
            .lock()
            .unwrap()
            .push(TenantRecord::new(id("newco"), "free"));
        c.invalidate("newco");
        assert!(ask(&c, "newco").await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_make_one_backend_call() {
        let backend = Backend {
            delay: Duration::from_millis(50),
            ..backend_with(&["acme"])
        };
        let c = Arc::new(CachedRegistry::new(backend, cfg()));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let c = Arc::clone(&c);
            tasks.push(tokio::spawn(async move { ask(&c, "acme").await }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap().is_some());
        }
        assert_eq!(c.inner().calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_if_error_is_bounded() {
        let (c, time) = faked(CachedRegistry::new(backend_with(&["acme"]), cfg()));
        ask(&c, "acme").await.unwrap();
        c.inner().failing.store(true, Ordering::SeqCst);

        time.advance(Duration::from_secs(15)); // past TTL, inside window
        assert!(ask(&c, "acme").await.unwrap().is_some());

        time.advance(Duration::from_secs(20)); // 35 s > 10 + 20
        assert!(
            ask(&c, "acme").await.is_err(),
            "fail closed after the window"
        );

        // An id never seen: unavailable, not "not found".
        assert!(ask(&c, "other").await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn stale_not_found_is_never_served_on_error() {
        let (c, time) = faked(CachedRegistry::new(backend_with(&[]), cfg()));
        assert!(ask(&c, "ghost").await.unwrap().is_none());
        c.inner().failing.store(true, Ordering::SeqCst);
        time.advance(Duration::from_secs(3));
        assert!(ask(&c, "ghost").await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_during_flight_does_not_cache_the_old_answer() {
        let backend = Backend {
            delay: Duration::from_millis(100),
            ..backend_with(&[])
        };
        let c = Arc::new(CachedRegistry::new(backend, cfg()));
        let c2 = Arc::clone(&c);
        let lookup = tokio::spawn(async move { ask(&c2, "newco").await });
        while c.inner().calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        c.inner()
            .records
            .lock()
            .unwrap()
            .push(TenantRecord::new(id("newco"), "free"));
        c.invalidate("newco");
        assert!(
            lookup.await.unwrap().unwrap().is_none(),
            "the old answer, to its caller"
        );
        assert!(ready(&c, "newco").is_none(), "but not cached");
        assert!(ask(&c, "newco").await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_are_bounded() {
        let (c, time) = faked(CachedRegistry::new(
            backend_with(&[]),
            cfg().max_entries(10),
        ));
        for i in 0..100 {
            ask(&c, &format!("t{i}")).await.unwrap();
        }
        assert!(c.len() <= 10);
        time.advance(Duration::from_secs(3));
        ask(&c, "fresh").await.unwrap();
        assert!(ready(&c, "fresh").is_some(), "expired entries are swept");
    }

    #[tokio::test]
    async fn leases_hold_until_the_ttl_or_a_change() {
        let c = CachedRegistry::new(backend_with(&["acme"]), cfg());
        let now = Instant::now();
        assert!(leased(&c, "acme", now).is_none(), "cold");
        ask(&c, "acme").await.unwrap();
        let (found, lease) = leased(&c, "acme", now).unwrap();
        let lease = lease.expect("a fresh record is leased");
        assert!(found.is_some());
        assert!(c.lease_holds(&lease, now));
        assert!(!c.lease_holds(&lease, lease.until), "ends with the TTL");

        c.invalidate("other");
        assert!(!c.lease_holds(&lease, now), "any invalidation ends it");
        let (_, lease) = leased(&c, "acme", now).unwrap();
        let lease = lease.unwrap();
        c.invalidate_all();
        assert!(!c.lease_holds(&lease, now));

        // A fresh entry overwritten ends its leases; storing a new id does not.
        ask(&c, "acme").await.unwrap();
        let (_, lease) = leased(&c, "acme", Instant::now()).unwrap();
        let lease = lease.unwrap();
        let generation = c.generation.load(Ordering::Acquire);
        c.store(&id("newco"), &None, generation);
        assert!(c.lease_holds(&lease, Instant::now()));
        assert!(
            leased(&c, "newco", Instant::now()).unwrap().1.is_none(),
            "not found is never leased"
        );
        c.store(&id("acme"), &None, generation);
        assert!(!c.lease_holds(&lease, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn no_lease_on_a_fake_clock() {
        let (c, _time) = faked(CachedRegistry::new(backend_with(&["acme"]), cfg()));
        ask(&c, "acme").await.unwrap();
        let (found, lease) = leased(&c, "acme", Instant::now()).unwrap();
        assert!(found.is_some() && lease.is_none());
    }
}
