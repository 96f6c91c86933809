//! [`RedisQuota`]: one quota shared by every replica, decided by Lua scripts on
//! Redis's own clock.
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | the manager, its builder and [`FailureMode`], the check and the settlement |
//! | `scripts.rs`, `scripts/*.lua` | the scripts, their arguments and replies |
//! | `heartbeat.rs` | the replicas' heartbeat and the payment of what a replica admitted alone |
//! | `voids.rs` | the task that voids checks given up on |

use std::{
    fmt,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use redis::Script;

use super::{
    fallback::Fallback, refuse, Charge, QuotaDecision, QuotaError, QuotaManager, QuotaPlan,
    QuotaPlans,
};
use crate::{backend::RedisConnection, error::ConfigError, Answer, Moment, TenantContext};

mod heartbeat;
mod scripts;
mod voids;

use heartbeat::{replica_id, Heartbeat, Stopped};
use scripts::{
    check_args, decision_from, period_code, tenant_key, CHECK, HEARTBEAT, PRELUDE, RECONCILE,
    SETTLE, VOID,
};
use voids::{Running, Void, Voider, Voids};

/// What to do when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureMode {
    /// Refuse with `503 quota_unavailable` (the default: never a pass by accident).
    FailClosed,
    /// Decide locally until Redis answers again, each replica on its share of the
    /// plan, so that together they hold the plan in total:
    ///
    /// - every plan is divided by the replicas alive, as counted by a heartbeat each
    ///   replica keeps in Redis (see [`heartbeat`](RedisQuotaBuilder::heartbeat)), the
    ///   last count seen before the outage, and never by fewer than `replicas`;
    /// - a tenant's local state starts from its share of what Redis said was left of
    ///   its burst and budgets at this replica's last check of it (each Redis answer
    ///   is mirrored: one map write per check beside the round trip), not from a full
    ///   allowance;
    /// - once Redis answers again, what each replica admitted is charged to it before
    ///   the replicas go back to it (they stay on their shares for two more beats
    ///   while every replica pays).
    ///
    /// With replicas that all checked a tenant shortly before the outage, the period's
    /// total stays within the plan (measured in `tests/degraded.rs`); mirrors that are
    /// old, or missing, can let through up to one more plan per period. While
    /// degraded, checks are decided locally at once, without waiting for Redis; the
    /// heartbeat alone probes it. [actix-tenancy's `guide::quotas`](https://docs.rs/actix-tenancy/latest/actix_tenancy/guide/quotas/index.html) ("When Redis fails") gives the bounds and
    /// the measured totals. Build the manager within a Tokio runtime (the heartbeat
    /// is spawned there; without one it starts on the first check).
    FallbackLocal {
        /// The fewest replicas the plan is divided by (the heartbeat's count, when
        /// larger, wins).
        replicas: NonZeroU32,
    },
}

type ModeHook = Arc<dyn Fn(bool) + Send + Sync>;

/// Quotas shared by every replica through Redis (feature `redis`).
///
/// The same semantics as [`LocalQuota`](super::LocalQuota): a GCRA rate with a burst and calendar
/// budgets, admitted together or not at all; but the state lives in Redis, so N
/// replicas enforce one quota. Each check is one round trip (an atomic Lua script) on
/// Redis's own clock, bounded by a timeout (default 50 ms). The connection is made
/// lazily and re-made automatically; the app starts even while Redis is down.
///
/// When Redis fails or is slow, the [`FailureMode`] decides: `503 quota_unavailable`
/// (the default), or a local limiter on a divided plan. Switching into and out of
/// degraded mode is logged (`WARN` / `INFO`), counted (`tenancy_quota_degraded_total`,
/// feature `metrics`), visible with [`is_degraded`](Self::is_degraded), and reported
/// to the [`on_mode_change`](RedisQuotaBuilder::on_mode_change) hook.
///
/// ```no_run
/// # async fn demo(plans: tenancy_core::quota::QuotaPlans) -> Result<(), Box<dyn std::error::Error>> {
/// use std::num::NonZeroU32;
/// use tenancy_core::quota::{FailureMode, RedisQuota};
///
/// let quota = RedisQuota::builder("redis://127.0.0.1:6379", plans)
///     .failure_mode(FailureMode::FallbackLocal { replicas: NonZeroU32::new(3).unwrap() })
///     .on_mode_change(|degraded| eprintln!("quota degraded: {degraded}"))
///     .build()?;
/// # drop(quota);
/// # Ok(()) }
/// ```
pub struct RedisQuota {
    plans: QuotaPlans,
    conn: RedisConnection,
    prefix: String,
    timeout: Duration,
    mode: FailureMode,
    fallback: Option<Arc<Fallback>>,
    degraded: AtomicBool,
    hook: Option<ModeHook>,
    heartbeat: Duration,
    check: Script,
    settle: Script,
    void: Arc<Script>,
    /// This manager's charge ids: a random prefix, and a count.
    charge_prefix: String,
    charges: std::sync::atomic::AtomicU64,
    /// The checks given up on, to void.
    voids: Arc<Voids>,
}

impl fmt::Debug for RedisQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQuota")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("mode", &self.mode)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

/// Where a [`RedisQuota`] gets its connection.
enum Connect {
    Url(String),
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<String>),
    /// The application's own, shared with its other uses of Redis.
    Given(RedisConnection),
}

/// Builds a [`RedisQuota`].
#[must_use]
pub struct RedisQuotaBuilder {
    connect: Connect,
    plans: QuotaPlans,
    prefix: String,
    timeout: Duration,
    mode: FailureMode,
    hook: Option<ModeHook>,
    heartbeat: Duration,
    follow: bool,
}

impl fmt::Debug for RedisQuotaBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQuotaBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl RedisQuota {
    /// A builder for the Redis at `url` (e.g. `redis://127.0.0.1:6379`).
    pub fn builder(url: impl Into<String>, plans: QuotaPlans) -> RedisQuotaBuilder {
        Self::builder_for(Connect::Url(url.into()), plans)
    }

    /// A builder for a Redis Cluster found through any of `nodes` (feature
    /// `redis-cluster`). A tenant's keys share one hash tag, so each check is still
    /// one round trip, to the shard that owns the tenant; `MOVED`/`ASK` redirections
    /// and a master's failover are followed by the client, and meanwhile the
    /// [`FailureMode`] answers within the timeout.
    ///
    /// `build()` must run within a Tokio runtime (as in `#[tokio::main]` or `#[actix_web::main]`): the
    /// cluster client spawns its task there.
    ///
    /// ```no_run
    /// # async fn demo(plans: tenancy_core::quota::QuotaPlans) -> Result<(), tenancy_core::error::ConfigError> {
    /// use tenancy_core::quota::RedisQuota;
    ///
    /// let quota = RedisQuota::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"], plans)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis-cluster")]
    pub fn cluster<I, S>(nodes: I, plans: QuotaPlans) -> RedisQuotaBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        Self::builder_for(Connect::Cluster(nodes), plans)
    }

    /// A builder on a connection the application already has: the `redis` crate's
    /// [`ConnectionManager`](redis::aio::ConnectionManager) (1.x), with feature
    /// `redis-cluster` its cluster connection, or a [`RedisConnection`]. The service
    /// keeps one connection to Redis for everything: it is cloned, never
    /// reconfigured; the client's own timeouts and reconnects apply, and
    /// [`timeout`](RedisQuotaBuilder::timeout) still bounds every check.
    ///
    /// ```no_run
    /// # async fn demo(plans: tenancy_core::quota::QuotaPlans) -> Result<(), Box<dyn std::error::Error>> {
    /// use tenancy_core::quota::RedisQuota;
    ///
    /// let client = redis::Client::open("redis://:secret@redis.internal:6379")?;
    /// let conn = redis::aio::ConnectionManager::new(client).await?;
    /// let quota = RedisQuota::with_connection(conn.clone(), plans).build()?;
    /// // `conn` serves the application's own commands too.
    /// # Ok(()) }
    /// ```
    pub fn with_connection(
        conn: impl Into<RedisConnection>,
        plans: QuotaPlans,
    ) -> RedisQuotaBuilder {
        Self::builder_for(Connect::Given(conn.into()), plans)
    }

    fn builder_for(connect: Connect, plans: QuotaPlans) -> RedisQuotaBuilder {
        RedisQuotaBuilder {
            connect,
            plans,
            prefix: "tenancy:quota".to_owned(),
            timeout: Duration::from_millis(50),
            mode: FailureMode::FailClosed,
            hook: None,
            heartbeat: Duration::from_secs(1),
            follow: true,
        }
    }

    /// Whether Redis is failing now and the failure mode is in force.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// What each plan is divided by in [`FailureMode::FallbackLocal`]: the replicas
    /// the heartbeat last counted, at least the configured floor. `None` when failing
    /// closed.
    pub fn replicas(&self) -> Option<u32> {
        self.fallback.as_ref().map(|f| f.divisor())
    }

    /// Starts the heartbeat of [`FailureMode::FallbackLocal`] once, within a Tokio
    /// runtime: at build when there is one, else on the first check.
    fn ensure_heartbeat(&self) {
        let Some(f) = &self.fallback else { return };
        if !f.follows()
            || f.beating.load(Ordering::Acquire)
            || tokio::runtime::Handle::try_current().is_err()
            || f.beating.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let beat = Heartbeat {
            // Made before the task is spawned and owned by its future: however the
            // task ends, polled or not (a runtime that drops it unpolled), the flag
            // is cleared and the next check within a runtime starts a new heartbeat.
            _stopped: Stopped(Arc::downgrade(f)),
            fallback: Arc::downgrade(f),
            conn: self.conn.clone(),
            key: format!("{{{}}}:replicas", self.prefix),
            prefix: self.prefix.clone(),
            id: replica_id(),
            every: self.heartbeat,
            timeout: self.timeout.max(Duration::from_millis(250)),
            beat: Script::new(HEARTBEAT),
            reconcile: Script::new(&format!("{PRELUDE}{RECONCILE}")),
        };
        tokio::spawn(beat.run());
    }

    fn set_degraded(&self, degraded: bool, why: &str) {
        if self.degraded.swap(degraded, Ordering::AcqRel) == degraded {
            return;
        }
        if degraded {
            tracing::warn!(target: "tenancy::quota", mode = ?self.mode, error = why,
                "Redis quota backend unavailable: degraded mode");
        } else {
            tracing::info!(target: "tenancy::quota", "Redis quota backend answering again");
        }
        #[cfg(feature = "metrics")]
        metrics::counter!(crate::observe::DEGRADED_METRIC,
            "to" => if degraded { "degraded" } else { "normal" })
        .increment(1);
        if let Some(hook) = &self.hook {
            // The application's code, called on a check's path: a panic in it loses
            // the notice (logged), never the check.
            let _ = crate::caught("RedisQuota mode hook", || hook(degraded));
        }
    }

    /// The script, key and arguments of one check of `cost` for `tenant`, as the
    /// manager sends them (`EVALSHA sha 1 key args...`): for `bench/redis.sh`, which
    /// runs `redis-benchmark` on the very same invocation. `None` without a plan.
    #[doc(hidden)]
    pub fn check_invocation(
        &self,
        tenant: &TenantContext,
        cost: u32,
    ) -> Option<(String, String, Vec<String>)> {
        let plan = self.plans.plan_for(tenant)?;
        let mut args = Vec::new();
        check_args(plan, cost, |a| args.push(a.to_string()));
        args.push("bench".to_owned());
        Some((format!("{PRELUDE}{CHECK}"), self.key(tenant), args))
    }

    fn key(&self, tenant: &TenantContext) -> String {
        tenant_key(&self.prefix, tenant.id().as_str())
    }

    /// A charge id no other check of any replica has.
    fn charge_id(&self) -> String {
        let n = self.charges.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:x}", self.charge_prefix)
    }

    /// Voids the check of charge `id` on `key`: queued for this manager's one voiding
    /// task, which sends the voids one at a time (never a burst on a Redis coming
    /// back) and tries each again with a growing pause (for half a minute in all)
    /// while Redis does not answer, so a check that runs once Redis thaws is given
    /// back, or marked before it runs.
    fn void_later(&self, key: String, id: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(target: "tenancy::quota",
                "a check given up on outside a runtime cannot be voided");
            return;
        };
        let voids = &self.voids;
        {
            // Pushed and decided under the queue's lock, as the task decides to stop.
            let mut pending = voids.lock();
            pending.push_back(Void { key, id, tries: 0 });
            if voids.running.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        let worker = Voider {
            running: Running(Some(Arc::clone(voids))),
            voids: Arc::clone(voids),
            script: Arc::clone(&self.void),
            conn: self.conn.clone(),
            timeout: self.timeout.max(Duration::from_millis(250)),
        };
        runtime.spawn(worker.run());
    }

    fn failed(
        &self,
        tenant: &TenantContext,
        plan: &Arc<QuotaPlan>,
        cost: u32,
        why: String,
    ) -> Result<QuotaDecision, QuotaError> {
        self.set_degraded(true, &why);
        match &self.fallback {
            Some(f) => {
                f.redis_failed();
                f.decide(tenant, plan, cost, &mut Moment::now())
            }
            None => Err(QuotaError::new(why)),
        }
    }
}

impl RedisQuotaBuilder {
    /// The prefix of every key (default `tenancy:quota`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one check may take (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do while Redis fails (default [`FailureMode::FailClosed`]).
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.mode = mode;
        self
    }

    /// How often each replica refreshes its heartbeat in Redis (default 1 s, from
    /// 10 ms to an hour; it lives three beats) in [`FailureMode::FallbackLocal`]: the count of live replicas
    /// divides the plans, and the beat probes Redis while it is away.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.clamp(Duration::from_millis(10), Duration::from_secs(3600));
        self
    }

    /// The fallback of earlier versions, for the measured comparison in
    /// `tests/degraded.rs`: a fresh local plan divided by the configured replicas, no
    /// heartbeat, nothing charged back to Redis.
    #[doc(hidden)]
    pub fn unfollowed_fallback(mut self) -> Self {
        self.follow = false;
        self
    }

    /// Called with `true` when the manager enters degraded mode, `false` when it leaves.
    pub fn on_mode_change(mut self, hook: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Checks the URL and builds the manager; it connects on first use.
    pub fn build(self) -> Result<RedisQuota, ConfigError> {
        let conn = match self.connect {
            Connect::Given(conn) => conn,
            Connect::Url(url) => RedisConnection::open(&url, self.timeout)?,
            #[cfg(feature = "redis-cluster")]
            Connect::Cluster(nodes) => RedisConnection::cluster(nodes, self.timeout)?,
        };
        let fallback = match self.mode {
            FailureMode::FailClosed => None,
            FailureMode::FallbackLocal { replicas } => Some(Arc::new(Fallback::new(
                self.plans.clone(),
                replicas.get(),
                self.follow,
            ))),
        };
        let quota = RedisQuota {
            plans: self.plans,
            conn,
            prefix: self.prefix,
            timeout: self.timeout,
            mode: self.mode,
            fallback,
            degraded: AtomicBool::new(false),
            hook: self.hook,
            heartbeat: self.heartbeat,
            check: Script::new(&format!("{PRELUDE}{CHECK}")),
            settle: Script::new(&format!("{PRELUDE}{SETTLE}")),
            void: Arc::new(Script::new(&format!("{PRELUDE}{VOID}"))),
            charge_prefix: replica_id(),
            charges: std::sync::atomic::AtomicU64::new(0),
            voids: Arc::default(),
        };
        quota.ensure_heartbeat();
        Ok(quota)
    }
}

/// A check whose answer is not in yet: voided when it is dropped armed (its answer
/// came too late, Redis answered with an error, or the request was dropped while it
/// waited).
struct Unsettled<'a> {
    quota: &'a RedisQuota,
    key: String,
    id: String,
    armed: bool,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if self.armed {
            let (key, id) = (std::mem::take(&mut self.key), std::mem::take(&mut self.id));
            self.quota.void_later(key, id);
        }
    }
}

impl QuotaManager for RedisQuota {
    fn check<'a>(
        &'a self,
        tenant: &'a TenantContext,
        cost: u32,
        at: &mut Moment,
    ) -> Answer<'a, Result<QuotaDecision, QuotaError>> {
        let Some(plan) = self.plans.plan_for(tenant) else {
            return Answer::Now(Ok(refuse(None, None, None, None, None)));
        };
        if let Some(f) = &self.fallback {
            self.ensure_heartbeat();
            if f.local_only() {
                return Answer::Now(f.decide(tenant, plan, cost, at));
            }
        }
        Answer::later(self.ask(tenant, plan, cost))
    }

    fn settle<'a>(
        &'a self,
        tenant: &'a TenantContext,
        charge: Charge,
        actual: u32,
    ) -> Answer<'a, Result<(), QuotaError>> {
        let Some(plan) = self.plans.plan_for(tenant) else {
            return Answer::Now(Ok(()));
        };
        if plan.budgets().is_empty() {
            return Answer::Now(Ok(()));
        }
        // While deciding locally, a correction changes the local share and what is
        // owed to Redis, whoever admitted the charge (Redis just before the outage,
        // or this replica during it).
        if let Some(f) = self.fallback.as_ref().filter(|f| f.local_only()) {
            f.settle(tenant, plan, charge, actual);
            return Answer::Now(Ok(()));
        }
        Answer::later(self.correct(tenant, plan, charge, actual))
    }
}

impl RedisQuota {
    /// The check, asked of Redis.
    async fn ask(
        &self,
        tenant: &TenantContext,
        plan: &Arc<QuotaPlan>,
        cost: u32,
    ) -> Result<QuotaDecision, QuotaError> {
        let key = self.key(tenant);
        let mut invocation = self.check.key(&key);
        check_args(plan, cost, |a| {
            invocation.arg(a);
        });
        // Until its answer is in, the check may be voided: a request that was not
        // served (the answer came too late, the client went away) leaves no charge,
        // whether or not Redis ran the check.
        let mut unsettled = Unsettled {
            quota: self,
            key,
            id: self.charge_id(),
            armed: true,
        };
        invocation.arg(&unsettled.id);
        let mut conn = self.conn.clone();
        let reply =
            tokio::time::timeout(self.timeout, invocation.invoke_async::<Vec<i64>>(&mut conn))
                .await;
        if matches!(reply, Ok(Ok(_))) {
            unsettled.armed = false;
        }
        drop(unsettled);
        match reply {
            Ok(Ok(reply)) => match decision_from(plan, cost, &reply) {
                Some(decision) => {
                    match &self.fallback {
                        // An answer that started before the switch to local shares and
                        // came late: the shares, not it, say what is left now.
                        Some(f) if f.local_only() => {}
                        Some(f) => {
                            self.set_degraded(false, "");
                            f.observe(tenant, &reply);
                        }
                        None => self.set_degraded(false, ""),
                    }
                    Ok(decision)
                }
                None => self.failed(tenant, plan, cost, format!("unexpected reply {reply:?}")),
            },
            Ok(Err(err)) => self.failed(tenant, plan, cost, err.to_string()),
            Err(_) => self.failed(
                tenant,
                plan,
                cost,
                "Redis did not answer in time".to_owned(),
            ),
        }
    }

    /// The correction, sent to Redis.
    async fn correct(
        &self,
        tenant: &TenantContext,
        plan: &QuotaPlan,
        charge: Charge,
        actual: u32,
    ) -> Result<(), QuotaError> {
        let mut invocation = self.settle.key(self.key(tenant));
        invocation.arg(i64::from(actual) - i64::from(charge.units()));
        invocation.arg(charge.charged_at().unwrap_or(0));
        for b in plan.budgets() {
            invocation.arg(period_code(b.period));
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(QuotaError::new(err.to_string())),
            Err(_) => Err(QuotaError::new("Redis did not answer in time")),
        }
    }
}
