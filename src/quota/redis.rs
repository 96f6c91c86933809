use std::{
    fmt,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use redis::Script;

use super::{
    fallback::{Fallback, Owed},
    refuse, BudgetState, Charge, Period, QuotaDecision, QuotaError, QuotaLimit, QuotaManager,
    QuotaPlan, QuotaPlans, RateState,
};
use crate::core::{error::ConfigError, RedisConnection, TenantContext};

/// One check: budgets first (read only), then GCRA for the rate on Redis's own clock,
/// then the budgets are charged; all or nothing, atomically. Calendar periods are
/// computed from Redis's `TIME` too, so replicas with skewed clocks agree.
/// Redis's clock, and the calendar period (index, seconds left) of a budget code:
/// 1 hour, 2 day, 3 month (UTC). Shared by both scripts.
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_us = now_s * 1000000 + tonumber(t[2])
local function fl(x) return math.floor(x) end
local function locate(code)
  if code == 1 then return fl(now_s / 3600), 3600 - now_s % 3600 end
  if code == 2 then return fl(now_s / 86400), 86400 - now_s % 86400 end
  local z = fl(now_s / 86400) + 719468
  local era = fl(z / 146097)
  local doe = z - era * 146097
  local yoe = fl((doe - fl(doe / 1460) + fl(doe / 36524) - fl(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + fl(yoe / 4) - fl(yoe / 100))
  local mp = fl((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  local ny, nm = y, m + 1
  if m == 12 then ny, nm = y + 1, 1 end
  local yy = nm <= 2 and ny - 1 or ny
  local era2 = fl(yy / 400)
  local yoe2 = yy - era2 * 400
  local mp2 = nm > 2 and nm - 3 or nm + 9
  local doe2 = yoe2 * 365 + fl(yoe2 / 4) - fl(yoe2 / 100) + fl((153 * mp2 + 2) / 5)
  local next_day = era2 * 146097 + doe2 - 719468
  return y * 12 + (m - 1), next_day * 86400 - now_s
end
"#;

/// One check: budgets first (read only), then GCRA for the rate on Redis's own clock,
/// then the budgets are charged; all or nothing, atomically. Calendar periods come
/// from Redis's `TIME` too, so replicas with skewed clocks agree.
const CHECK: &str = r#"
local base = KEYS[1]
local T = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
local rcost = tonumber(ARGV[5 + 2 * nb])
-- The charge's id: a check its manager gave up on (a timeout, a client gone) was
-- voided before it ran here; it charges nothing.
local cid = ARGV[6 + 2 * nb]
local record = cid and (base .. ':c:' .. cid)
if record and redis.call('GET', record) == 'void' then return {3} end
local keys, lefts, units, useds = {}, {}, {}, {}
local tat = 0
if T > 0 then
  tat = tonumber(redis.call('GET', base .. ':r') or '0')
  if tat < now_us then tat = now_us end
end
-- What the rate has left now, uncharged: reported beside a budget's refusal.
local function rate_left()
  if T > 0 then return fl((limit - (tat - now_us)) / T), tat - now_us end
  return -1, 0
end
for i = 1, nb do
  units[i] = tonumber(ARGV[3 + 2 * i])
  local idx, left = locate(tonumber(ARGV[4 + 2 * i]))
  keys[i] = base .. ':b:' .. ARGV[4 + 2 * i] .. ':' .. string.format('%.0f', idx)
  lefts[i] = left
  useds[i] = tonumber(redis.call('GET', keys[i]) or '0')
  if useds[i] + cost > units[i] then
    local rrem, rreset = rate_left()
    return {0, 1, i, units[i] - useds[i], left, rrem, rreset}
  end
end
local rrem, rreset = -1, 0
if T > 0 then
  local new_tat = tat + rcost * T
  if new_tat - now_us > limit then
    -- Refused by the rate: the budgets, uncharged, follow as (remaining, seconds left).
    local out = {0, 2, 0, fl((limit - (tat - now_us)) / T), new_tat - now_us - limit}
    for i = 1, nb do
      out[#out + 1] = units[i] - useds[i]
      out[#out + 1] = lefts[i]
    end
    return out
  end
  redis.call('SET', base .. ':r', string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now_us) / 1000) + 1)
  rrem = fl((limit - (new_tat - now_us)) / T)
  rreset = new_tat - now_us
end
local out = {1, rrem, rreset, now_s}
for i = 1, nb do
  local used = redis.call('INCRBY', keys[i], cost)
  redis.call('EXPIRE', keys[i], lefts[i] + 60)
  out[#out + 1] = units[i] - used
  out[#out + 1] = lefts[i]
end
-- What was charged, for `VOID` should the manager give up on this answer; kept a
-- minute (the voider gives up after about half a minute).
if record then
  local rec = string.format('%.0f %.0f', cost, rcost)
  for i = 1, nb do rec = rec .. ' ' .. keys[i] end
  redis.call('SET', record, rec, 'PX', 60000)
end
return out
"#;

/// Voids the check of charge id ARGV[1]: gives back the budgets' units it charged
/// when it ran (as refunds do, the rate keeps its units: a window's worth at most), or,
/// when it has not run yet, marks it so that it charges nothing when it does. Safe to
/// run more than once, and in either order with the check.
const VOID: &str = r#"
local base = KEYS[1]
local record = base .. ':c:' .. ARGV[1]
local v = redis.call('GET', record)
if not v then
  redis.call('SET', record, 'void', 'PX', 60000)
  return 0
end
if v == 'void' then return 0 end
local parts = {}
for w in string.gmatch(v, '%S+') do parts[#parts + 1] = w end
local cost = tonumber(parts[1])
for i = 3, #parts do
  if redis.call('EXISTS', parts[i]) == 1 then
    local n = redis.call('DECRBY', parts[i], cost)
    if n < 0 then redis.call('SET', parts[i], 0, 'KEEPTTL') end
  end
end
redis.call('SET', record, 'void', 'KEEPTTL')
return 1
"#;

/// Corrects the budgets by ARGV[1] units (negative: a refund), never below zero, in
/// the periods of the second ARGV[2] (the charge's, from `CHECK`; 0: now): a period
/// that has ended since keeps the correction to itself.
const SETTLE: &str = r#"
local delta = tonumber(ARGV[1])
local at = tonumber(ARGV[2])
if at > 0 then now_s = at end
for i = 3, #ARGV do
  local idx = locate(tonumber(ARGV[i]))
  local key = KEYS[1] .. ':b:' .. ARGV[i] .. ':' .. string.format('%.0f', idx)
  if redis.call('EXISTS', key) == 1 then
    local v = redis.call('INCRBY', key, delta)
    if v < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
end
return 1
"#;

/// Charges Redis with what a replica admitted on its own while Redis was away: the
/// rate's units still within the window (its arrival time moved on, at most a full
/// window), and each budget's units if their period is still the current one.
const RECONCILE: &str = r#"
local base = KEYS[1]
local T = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local owed = tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
if T > 0 and owed > 0 then
  local tat = tonumber(redis.call('GET', base .. ':r') or '0')
  if tat < now_us then tat = now_us end
  tat = math.min(tat + owed * T, now_us + limit)
  redis.call('SET', base .. ':r', string.format('%.0f', tat), 'PX', math.ceil((tat - now_us) / 1000) + 1)
end
for i = 1, nb do
  local code = ARGV[2 + 3 * i]
  local idx, left = locate(tonumber(code))
  local units = tonumber(ARGV[4 + 3 * i])
  if units ~= 0 and idx == tonumber(ARGV[3 + 3 * i]) then
    local key = base .. ':b:' .. code .. ':' .. string.format('%.0f', idx)
    -- A refund owed (a correction made while Redis was away) never goes below zero.
    local v = redis.call('INCRBY', key, units)
    if v < 0 then redis.call('SET', key, 0) end
    redis.call('EXPIRE', key, left + 60)
  end
end
return 1
"#;

/// A replica's heartbeat: its id in a sorted set scored by its expiry (Redis's clock),
/// the expired ones dropped; answers how many replicas are alive.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now_ms + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
"#;

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
    /// heartbeat alone probes it. The README's "When Redis fails" gives the bounds and
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
/// # async fn demo(plans: actix_tenancy::quota::QuotaPlans) -> Result<(), Box<dyn std::error::Error>> {
/// use std::num::NonZeroU32;
/// use actix_tenancy::quota::{FailureMode, RedisQuota, TenantQuota};
///
/// let quota = RedisQuota::builder("redis://127.0.0.1:6379", plans)
///     .failure_mode(FailureMode::FallbackLocal { replicas: NonZeroU32::new(3).unwrap() })
///     .on_mode_change(|degraded| eprintln!("quota degraded: {degraded}"))
///     .build()?;
/// let stage = TenantQuota::new(quota);
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
    /// `build()` must run within a Tokio runtime (as in `#[actix_web::main]`): the
    /// cluster client spawns its task there.
    ///
    /// ```no_run
    /// # async fn demo(plans: actix_tenancy::quota::QuotaPlans) -> Result<(), actix_tenancy::error::ConfigError> {
    /// use actix_tenancy::quota::RedisQuota;
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
    /// # async fn demo(plans: actix_tenancy::quota::QuotaPlans) -> Result<(), Box<dyn std::error::Error>> {
    /// use actix_tenancy::quota::RedisQuota;
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
            tracing::warn!(target: "actix_tenancy::quota", mode = ?self.mode, error = why,
                "Redis quota backend unavailable: degraded mode");
        } else {
            tracing::info!(target: "actix_tenancy::quota", "Redis quota backend answering again");
        }
        #[cfg(feature = "metrics")]
        metrics::counter!(crate::core::observe::DEGRADED_METRIC,
            "to" => if degraded { "degraded" } else { "normal" })
        .increment(1);
        if let Some(hook) = &self.hook {
            // The application's code, called on a check's path: a panic in it loses
            // the notice (logged), never the check.
            let _ = crate::core::caught::caught("RedisQuota mode hook", || hook(degraded));
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
            tracing::warn!(target: "actix_tenancy::quota",
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
                f.decide(tenant, plan, cost)
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

fn period_code(p: Period) -> u8 {
    match p {
        Period::Hour => 1,
        Period::Day => 2,
        Period::Month => 3,
    }
}

/// The arguments of one check, in the order the script reads them: the GCRA interval
/// and limit, the cost, the budgets (count, then units and period code of each), and
/// the rate's cost.
fn check_args(plan: &QuotaPlan, cost: u32, mut push: impl FnMut(i128)) {
    let (t, limit) = gcra(plan);
    push(t.into());
    push(limit.into());
    push(cost.into());
    push(i128::try_from(plan.budgets().len()).unwrap_or(i128::MAX));
    for b in plan.budgets() {
        push(b.units.into());
        push(period_code(b.period).into());
    }
    push(plan.rate_cost(cost).into());
}

/// Nanosecond-precise GCRA parameters in microseconds: emission interval and the
/// window (interval x burst).
fn gcra(plan: &QuotaPlan) -> (i64, i64) {
    match plan.rate_limit() {
        Some(r) => {
            let t = r
                .per
                .checked_div(r.amount)
                .unwrap_or(r.per)
                .as_micros()
                .max(1);
            let t = i64::try_from(t).unwrap_or(i64::MAX);
            (t, t.saturating_mul(i64::from(r.burst)))
        }
        None => (0, 0),
    }
}

/// A tenant's keys: one hash tag, so that on a cluster they are all in one slot.
fn tenant_key(prefix: &str, id: &str) -> String {
    format!("{prefix}:{{{id}}}")
}

/// An id for this replica's heartbeat: the process and a moment of its life, hashed
/// with a per-process random seed.
fn replica_id() -> String {
    use std::hash::BuildHasher as _;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = foldhash::fast::RandomState::default();
    format!(
        "{:016x}{:016x}",
        seed.hash_one((std::process::id(), nanos)),
        seed.hash_one(nanos)
    )
}

/// The heartbeat task of [`FailureMode::FallbackLocal`]: it ends when the manager is
/// dropped (it holds the fallback weakly).
struct Heartbeat {
    /// Clears the running flag when the heartbeat's future is dropped.
    _stopped: Stopped,
    fallback: Weak<Fallback>,
    conn: RedisConnection,
    key: String,
    prefix: String,
    id: String,
    every: Duration,
    timeout: Duration,
    beat: Script,
    reconcile: Script,
}

impl Heartbeat {
    /// Beats until the manager is gone. However the task ends (the manager dropped,
    /// or the runtime it was spawned on shut down, before or after its first poll),
    /// `_stopped` is dropped with it: checks go to Redis again, and the next one
    /// within a runtime starts a new heartbeat.
    async fn run(mut self) {
        let ttl_ms = u64::try_from(self.every.as_millis().saturating_mul(3)).unwrap_or(u64::MAX);
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(f) = self.fallback.upgrade() else {
                return;
            };
            let mut call = self.beat.key(&self.key);
            call.arg(&self.id).arg(ttl_ms);
            let beat = call.invoke_async::<u32>(&mut self.conn);
            let Ok(Ok(alive)) = tokio::time::timeout(self.timeout, beat).await else {
                continue;
            };
            if self.pay(&f).await {
                f.beat(alive, self.every.saturating_mul(2));
            }
        }
    }

    /// Charges Redis with every debt of this replica; `false` if one could not be paid
    /// (it is kept, with the rest, for the next beat). A payment cut short (the
    /// runtime shutting down mid-pay) keeps what it had not paid too.
    async fn pay(&mut self, f: &Fallback) -> bool {
        let mut unpaid = Unpaid {
            f,
            debts: f.take_owed().into(),
        };
        while let Some((id, owed, rate)) = unpaid.debts.front() {
            let mut call = self.reconcile.key(tenant_key(&self.prefix, id.as_str()));
            reconcile_args(owed, *rate, |a| {
                call.arg(a);
            });
            let paid = tokio::time::timeout(self.timeout, call.invoke_async::<i64>(&mut self.conn));
            match paid.await {
                Ok(Ok(_)) => {
                    unpaid.debts.pop_front();
                }
                // Redis ran the script and refused it (a key of another type, say):
                // trying again would block every later payment, and the replica with
                // them, so this one is given up, loudly.
                Ok(Err(err))
                    if matches!(
                        err.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                            | redis::ErrorKind::Extension
                    ) =>
                {
                    tracing::warn!(target: "actix_tenancy::quota", tenant = %id, error = %err,
                        "Redis refused what a replica admitted while it was away; not charged");
                    unpaid.debts.pop_front();
                }
                // Kept, with the rest, when `unpaid` is dropped.
                _ => return false,
            }
        }
        true
    }
}

/// The debts a payment has yet to pay: given back to the fallback when the payment
/// ends, whether it failed or its future was dropped mid-way. One whose answer never
/// came is given back too: paid twice at worst, never admitted twice.
struct Unpaid<'a> {
    f: &'a Fallback,
    debts: std::collections::VecDeque<(crate::core::TenantId, Owed, u32)>,
}

impl Drop for Unpaid<'_> {
    fn drop(&mut self) {
        for (id, owed, _) in self.debts.drain(..) {
            self.f.restore(id, owed);
        }
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

/// The checks a manager gave up on, waiting to be voided, and whether a task voids
/// them now.
#[derive(Default)]
struct Voids {
    pending: std::sync::Mutex<std::collections::VecDeque<Void>>,
    running: AtomicBool,
}

impl Voids {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Void>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One check to void: its key, its charge id, and how often voiding it failed.
struct Void {
    key: String,
    id: String,
    tries: u32,
}

/// The voiding task.
struct Voider {
    /// Clears `running` if the task ends before its queue is empty (its runtime shut
    /// down, polled or not).
    running: Running,
    voids: Arc<Voids>,
    script: Arc<Script>,
    conn: RedisConnection,
    timeout: Duration,
}

impl Voider {
    async fn run(mut self) {
        loop {
            let next = {
                let mut pending = self.voids.lock();
                let next = pending.pop_front();
                if next.is_none() {
                    // Stopped under the lock a sender pushes under: none is lost.
                    self.voids.running.store(false, Ordering::Release);
                    self.running.0 = None;
                }
                next
            };
            let Some(mut void) = next else {
                return;
            };
            let mut call = self.script.key(&void.key);
            call.arg(&void.id);
            let voided =
                tokio::time::timeout(self.timeout, call.invoke_async::<i64>(&mut self.conn));
            if let Ok(Ok(_)) = voided.await {
                continue;
            }
            void.tries += 1;
            if void.tries >= 8 {
                tracing::warn!(target: "actix_tenancy::quota", charge = %void.id,
                    "a check given up on could not be voided: its charge may stand");
                continue;
            }
            // 100 ms, doubling: about half a minute over eight tries.
            let pause = Duration::from_millis(100).saturating_mul(1 << (void.tries - 1));
            self.voids.lock().push_back(void);
            tokio::time::sleep(pause).await;
        }
    }
}

/// Clears a manager's voiding flag when its task ends early (`None` once it has
/// stopped by itself).
struct Running(Option<Arc<Voids>>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(voids) = self.0.take() {
            voids.running.store(false, Ordering::Release);
        }
    }
}

/// Ends the heartbeat's hold on the manager when the task ends.
struct Stopped(Weak<Fallback>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(f) = self.0.upgrade() {
            f.heartbeat_stopped();
        }
    }
}

/// The arguments of `RECONCILE`: the GCRA interval and limit, the rate units, then
/// per budget its period code, period index and units.
fn reconcile_args(owed: &Owed, rate: u32, mut push: impl FnMut(i128)) {
    let (t, limit) = gcra(&owed.plan);
    push(t.into());
    push(limit.into());
    push(rate.into());
    push(i128::try_from(owed.budgets.len()).unwrap_or(i128::MAX));
    for (b, (period, units)) in owed.plan.budgets().iter().zip(&owed.budgets) {
        push(period_code(b.period).into());
        push((*period).into());
        push((*units).into());
    }
}

fn decision_from(plan: &Arc<QuotaPlan>, cost: u32, reply: &[i64]) -> Option<QuotaDecision> {
    let secs = |n: i64| Duration::from_secs(u64::try_from(n).unwrap_or(0));
    let micros = |n: i64| Duration::from_micros(u64::try_from(n).unwrap_or(0));
    let rate_of = |remaining: i64, reset: Duration| {
        plan.rate_limit().map(|r| RateState {
            limit: r.burst,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            window: r.window(),
            reset,
        })
    };
    let budget_of = |i: usize, remaining: i64, left: i64| {
        plan.budgets().get(i).map(|b| BudgetState {
            limit: b.units,
            remaining: u64::try_from(remaining.max(0)).unwrap_or(0),
            period: b.period,
            reset: secs(left),
        })
    };
    // The tightest of the (remaining, seconds left) pairs in `pairs`.
    let tightest = |pairs: &[i64]| -> Option<Option<BudgetState>> {
        let mut tightest: Option<BudgetState> = None;
        for (i, pair) in pairs.chunks(2).enumerate() {
            let b = budget_of(i, *pair.first()?, *pair.get(1)?)?;
            if tightest.is_none_or(|t| b.remaining < t.remaining) {
                tightest = Some(b);
            }
        }
        Some(tightest)
    };
    let mut d = refuse(None, None, None, None, Some(plan));
    match *reply.first()? {
        1 => {
            d.allowed = true;
            let (rrem, rreset) = (*reply.get(1)?, *reply.get(2)?);
            if rrem >= 0 {
                d.rate = rate_of(rrem, micros(rreset));
            }
            d.charged_at = u64::try_from(*reply.get(3)?).ok();
            d.budget = tightest(reply.get(4..)?)?;
        }
        0 if *reply.get(1)? == 1 => {
            let i = usize::try_from(*reply.get(2)?).ok()?.checked_sub(1)?;
            let b = budget_of(i, *reply.get(3)?, *reply.get(4)?)?;
            d.retry_after = (u64::from(cost) <= b.limit).then_some(b.reset);
            d.budget = Some(b);
            d.refused_by = Some(QuotaLimit::Budget(b.period));
            let (rrem, rreset) = (*reply.get(5)?, *reply.get(6)?);
            if rrem >= 0 {
                d.rate = rate_of(rrem, micros(rreset));
            }
        }
        0 => {
            let wait = micros(*reply.get(4)?);
            let never = plan
                .rate_limit()
                .is_some_and(|r| plan.rate_cost(cost) > r.burst);
            d.retry_after = (!never).then_some(wait);
            d.rate = rate_of(*reply.get(3)?, wait);
            d.budget = tightest(reply.get(5..)?)?;
            d.refused_by = Some(QuotaLimit::Rate);
        }
        _ => return None,
    }
    if !d.allowed && plan.is_shadow() {
        d.allowed = true;
        d.would_deny = true;
    }
    Some(d)
}

#[async_trait::async_trait]
impl QuotaManager for RedisQuota {
    async fn check(&self, tenant: &TenantContext, cost: u32) -> Result<QuotaDecision, QuotaError> {
        let Some(plan) = self.plans.plan_for(tenant) else {
            return Ok(refuse(None, None, None, None, None));
        };
        if let Some(f) = &self.fallback {
            self.ensure_heartbeat();
            if f.local_only() {
                return f.decide(tenant, plan, cost);
            }
        }
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

    async fn settle(
        &self,
        tenant: &TenantContext,
        charge: Charge,
        actual: u32,
    ) -> Result<(), QuotaError> {
        let Some(plan) = self.plans.plan_for(tenant) else {
            return Ok(());
        };
        if plan.budgets().is_empty() {
            return Ok(());
        }
        // While deciding locally, a correction changes the local share and what is
        // owed to Redis, whoever admitted the charge (Redis just before the outage,
        // or this replica during it).
        if let Some(f) = self.fallback.as_ref().filter(|f| f.local_only()) {
            f.settle(tenant, plan, charge, actual);
            return Ok(());
        }
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
