use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Weak,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use dashmap::DashMap;
use foldhash::fast::RandomState;
use governor::clock::{Clock, MonotonicClock, Reference};

use super::{
    plan::UnknownTier, refuse, BudgetState, Charge, QuotaDecision, QuotaError, QuotaLimit,
    QuotaManager, QuotaPlan, QuotaPlans, RateState,
};
use crate::core::{TenantContext, TenantId};

/// Units used in one period of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Used {
    period: u32,
    used: u64,
}

/// One tenant's whole state, inline in the map's slot (24 bytes): the rate's GCRA
/// theoretical arrival time, its plan, and its budgets' use. It is read and written
/// under the map shard's write lock, so a check admits the rate and the budgets
/// together or not at all, and exactly the burst passes under any concurrency.
#[derive(Debug)]
struct Slot {
    /// Nanoseconds since the manager's origin: the GCRA theoretical arrival time (a
    /// full burst once it is at or before now); for a plan without a rate, the time
    /// of the last check. Either way the slot has been idle since at least `tat`.
    tat: u64,
    /// The first budget's use in `period`.
    used: u64,
    /// The plan's index in [`PlanIndex::params`]: a changed plan starts afresh.
    plan: u32,
    /// The period of `used`.
    period: u32,
}

// The slot is the per-tenant cost beside the key: keep it at 24 bytes (a plan's
// second and later budgets, which few plans have, live in a map of their own).
const _: () = assert!(std::mem::size_of::<Slot>() == 24);

impl Slot {
    fn fresh(plan: u32, now: u64) -> Self {
        Self {
            tat: now,
            used: 0,
            plan,
            period: 0,
        }
    }
}

type ExtraRef<'a> = dashmap::mapref::one::RefMut<'a, TenantId, Vec<Used>>;
type SlotRef<'a> = dashmap::mapref::one::RefMut<'a, TenantId, Slot>;
/// The arrival times of the tenants on one rate-only plan.
type Rated = DashMap<TenantId, u64, RandomState>;

/// A tenant's budgets: the first in its slot, the others (if its plan has more) in the
/// side map, locked after the slot (always in that order).
struct Uses<'a> {
    slot: &'a mut Slot,
    extra: Option<ExtraRef<'a>>,
}

impl Uses<'_> {
    /// Budget `i`'s use.
    fn get(&self, i: usize) -> Used {
        match i.checked_sub(1) {
            None => Used {
                period: self.slot.period,
                used: self.slot.used,
            },
            Some(j) => self
                .extra
                .as_ref()
                .and_then(|e| e.get(j).copied())
                .unwrap_or(Used { period: 0, used: 0 }),
        }
    }

    /// Sets budget `i`'s use.
    fn set(&mut self, i: usize, u: Used) {
        match i.checked_sub(1) {
            None => (self.slot.period, self.slot.used) = (u.period, u.used),
            Some(j) => {
                if let Some(slot) = self.extra.as_mut().and_then(|e| e.get_mut(j)) {
                    *slot = u;
                }
            }
        }
    }
}

/// A refusal by the rate: how long to wait (`None`: never), and the rate's state.
type Refused = (Option<Duration>, RateState);

/// A plan, with its rate's GCRA figures worked out once.
struct Params {
    plan: Arc<QuotaPlan>,
    /// Nanoseconds per unit (the emission interval); 0 when the plan has no rate.
    t: u64,
    /// The burst tolerance, `t × (burst − 1)`.
    tau: u64,
    /// `tau + t`: the whole burst's span, worked out once for `rate_at`.
    span: u64,
    burst: u32,
    interval: Duration,
    window: Duration,
}

impl Params {
    fn new(plan: &Arc<QuotaPlan>) -> Self {
        let rate = plan.rate_limit().filter(|r| r.quota().is_some());
        let (interval, window) = plan
            .rate_timing()
            .unwrap_or((Duration::ZERO, Duration::ZERO));
        let t = match rate {
            Some(_) => u64::try_from(interval.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            None => 0,
        };
        let burst = rate.map_or(0, |r| r.burst);
        let tau = t.saturating_mul(u64::from(burst.saturating_sub(1)));
        Self {
            plan: Arc::clone(plan),
            t,
            tau,
            span: tau.saturating_add(t),
            burst,
            interval,
            window,
        }
    }

    /// GCRA for `n` units at `now` on the arrival time `tat` (moved on when they
    /// conform): the rate's state after admitting them (`None` when `n` is 0), or
    /// the refusal's wait (`None`: they can never conform) and state. A plan without
    /// a rate admits, and `tat` records the check, for the sweep.
    #[inline(always)]
    fn admit(&self, tat: &mut u64, now: u64, n: u64) -> Result<Option<RateState>, Refused> {
        if self.t == 0 {
            *tat = now; // the last check, for the sweep
            return Ok(None);
        }
        if n == 0 {
            // A cost of nothing neither draws on the rate nor reports it.
            return Ok(None);
        }
        // n units arrive at `max(tat, now)`, each taking `t`; they conform if the last
        // of them is no later than the burst tolerance allows.
        let extra = self.t.saturating_mul(n - 1);
        if extra > self.tau {
            return Err((None, self.rate_at(*tat, now, Duration::ZERO)));
        }
        let earliest = tat.saturating_add(extra).saturating_sub(self.tau);
        if now < earliest {
            let wait = Duration::from_nanos(earliest - now);
            return Err((Some(wait), self.rate_at(*tat, now, wait)));
        }
        *tat = (*tat).max(now).saturating_add(self.t).saturating_add(extra);
        Ok(Some(self.rate_at(*tat, now, Duration::ZERO)))
    }

    /// The rate's state at `now` for a theoretical arrival time `tat`.
    fn rate_at(&self, tat: u64, now: u64, wait: Duration) -> RateState {
        // No rate (`t` is 0): nothing remains.
        let room = now.saturating_add(self.span).saturating_sub(tat);
        let remaining = room
            .min(self.span)
            .checked_div(self.t)
            .map_or(0, |r| u32::try_from(r).unwrap_or(u32::MAX));
        RateState {
            limit: self.burst,
            remaining,
            window: self.window,
            reset: wait.max(self.interval * self.burst.saturating_sub(remaining)),
        }
    }
}

/// Where a tenant's plan is found, by index: the tenant's own plan, else its tier's
/// (compared in place when there are few tiers, as there usually are), else the
/// unknown tier's.
struct PlanIndex {
    params: Vec<Params>,
    tenants: HashMap<TenantId, u32, RandomState>,
    tiers: Vec<(Box<str>, u32)>,
    tier_map: HashMap<Box<str>, u32, RandomState>,
    unknown: Option<u32>,
}

impl PlanIndex {
    /// Up to this many tiers are compared in place; more are hashed.
    const SCAN: usize = 8;

    fn new(plans: &QuotaPlans) -> Self {
        let mut params = Vec::new();
        let mut add = |p: &Arc<QuotaPlan>| {
            params.push(Params::new(p));
            u32::try_from(params.len() - 1).expect("fewer than 2^32 plans")
        };
        let super::plan::PlanParts {
            tiers,
            tenants,
            unknown,
        } = plans.parts();
        let tenants = tenants.iter().map(|(id, p)| (id.clone(), add(p))).collect();
        let tiers: Vec<(Box<str>, u32)> = tiers
            .iter()
            .map(|(name, p)| (name.as_str().into(), add(p)))
            .collect();
        let unknown = match unknown {
            UnknownTier::Reject => None,
            UnknownTier::Plan(p) => Some(add(p)),
        };
        let tier_map = if tiers.len() > Self::SCAN {
            tiers.iter().cloned().collect()
        } else {
            HashMap::default()
        };
        Self {
            params,
            tenants,
            tiers,
            tier_map,
            unknown,
        }
    }

    #[inline]
    fn find(&self, tenant: &TenantContext) -> Option<u32> {
        if !self.tenants.is_empty() {
            if let Some(&i) = self.tenants.get(tenant.id()) {
                return Some(i);
            }
        }
        let tier = tenant.tier();
        let found = if self.tiers.len() <= Self::SCAN {
            self.tiers
                .iter()
                .find(|(name, _)| **name == *tier)
                .map(|&(_, i)| i)
        } else {
            self.tier_map.get(tier).copied()
        };
        found.or(self.unknown)
    }
}

/// Where budgets read the calendar.
enum Wall {
    /// The system's clock, read at most once a second: in between, the wall time is
    /// the last reading moved on by the monotonic clock (a budget's period is a UTC
    /// hour, day or month; a second's lag on a step of the system clock is all this
    /// costs, against a clock read per check).
    System {
        /// Unix nanoseconds minus monotonic nanoseconds, at the last reading.
        offset: AtomicU64,
        /// The monotonic nanoseconds of the last reading (`u64::MAX`: none yet).
        read_at: AtomicU64,
    },
    /// A clock of the caller's (a test's), read on every check that needs it.
    Custom(Arc<dyn Fn() -> SystemTime + Send + Sync>),
}

impl Wall {
    /// Unix seconds at monotonic time `now` (nanoseconds since the origin).
    #[inline]
    fn unix_secs(&self, now: u64) -> u64 {
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        match self {
            Self::Custom(f) => unix(f()),
            Self::System { offset, read_at } => {
                let at = read_at.load(Ordering::Relaxed);
                // Also when `now` is before the last reading (wrapping): another thread's.
                if at == u64::MAX || now.wrapping_sub(at) >= 1_000_000_000 {
                    let nanos = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                    offset.store(nanos.wrapping_sub(now), Ordering::Relaxed);
                    read_at.store(now, Ordering::Relaxed);
                    return nanos / 1_000_000_000;
                }
                now.wrapping_add(offset.load(Ordering::Relaxed)) / 1_000_000_000
            }
        }
    }
}

/// What the manager and its sweeper share.
struct Shared<C: Clock> {
    index: PlanIndex,
    entries: DashMap<TenantId, Slot, RandomState>,
    /// Per plan index: the rate-only plans of tiers (and of unknown tiers) keep just
    /// each tenant's arrival time, in a map of their own (the plan is the map's), so
    /// that a tenant costs its id and 8 bytes; `None` for every other plan, whose
    /// tenants have a [`Slot`] in `entries`.
    rated: Vec<Option<Rated>>,
    /// The use of the second and later budgets of the plans that have several.
    extra: DashMap<TenantId, Vec<Used>, RandomState>,
    clock: C,
    origin: C::Instant,
    wall: Wall,
    /// Nanoseconds a slot must be idle before the sweep may drop it.
    idle_after: AtomicU64,
    /// The origin as a `std::time::Instant`, when the clock is the system's monotonic
    /// one: then the request's time, read once by the pipeline, serves the check.
    std_origin: Option<std::time::Instant>,
}

/// Quotas kept in this process: each tenant's rate (GCRA, the algorithm of
/// `governor`) and first budget in one 24-byte slot of a sharded `DashMap`; the
/// tenants of a tier whose plan is a rate only keep just their rate's 8-byte state,
/// in a map of that plan's own (as governor's keyed limiter does).
///
/// - Entries are built lazily from the tenant's plan, on its first request. Only
///   tenants the resolver validated against the registry ever reach the manager, so
///   made-up ids cannot grow the map.
/// - When a tenant's plan changes (its tier changed in the registry, say), the next
///   request replaces its entry with one built from the new plan.
/// - **Idle tenants are reclaimed by the manager itself**: a sweeper thread it owns
///   (`actix-tenancy-quota-sweep`, stopped when the manager is dropped) drops every
///   entry idle for [`idle_after`](Self::idle_after) (default 10 minutes) *whose
///   state equals a fresh one* (its burst full again, no budget used in the current
///   period), then returns the map's spare memory. Eviction is therefore lossless:
///   a tenant that spent today's budget keeps its entry until the day is over, however
///   long it is idle. [`evict_idle`](Self::evict_idle) runs one sweep now.
/// - Time: one monotonic clock read per check (for the rate: `std::time::Instant`
///   through governor's `MonotonicClock`, never the TSC-based `quanta` clock, which has
///   been seen to skew across cores). Budgets need the wall clock (UTC calendar
///   periods: a monotonic clock knows no dates): it is read at most once a second
///   and moved on by the monotonic reading in between.
///   [`with_clock`](LocalQuota::with_clock) takes both from one [`Clock`](crate::Clock)
///   (a fake one, in tests); [`with_clocks`](Self::with_clocks) takes them apart.
///
/// Share one `LocalQuota` (it is cheap to clone the `TenantQuota` holding it) across
/// workers: a limiter per worker would let each worker admit the full quota.
pub struct LocalQuota<C: Clock = MonotonicClock> {
    shared: Arc<Shared<C>>,
    plans: QuotaPlans,
    sweeper: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl<C: Clock> fmt::Debug for LocalQuota<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalQuota")
            .field("plans", &self.plans)
            .field("tenants", &self.shared.len())
            .field(
                "idle_after",
                &Duration::from_nanos(self.shared.idle_after.load(Ordering::Relaxed)),
            )
            .finish_non_exhaustive()
    }
}

impl<C: Clock> Drop for LocalQuota<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = &self.sweeper {
            t.thread().unpark();
        }
    }
}

impl LocalQuota<MonotonicClock> {
    /// A manager for `plans`, on the monotonic and the system clocks.
    pub fn new(plans: QuotaPlans) -> Self {
        let origin = std::time::Instant::now();
        let wall = Wall::System {
            offset: AtomicU64::new(0),
            read_at: AtomicU64::new(u64::MAX),
        };
        Self::build(plans, MonotonicClock, origin, wall, Some(origin))
    }
}

impl LocalQuota<crate::core::Clock> {
    /// A manager for `plans` on `clock`, its monotonic time for the rate limiters and
    /// its wall time for the budgets: with a
    /// [`testing::FakeClock`](crate::testing::FakeClock), a test refills a rate or
    /// starts a new budget period without sleeping.
    pub fn with_clock(plans: QuotaPlans, clock: crate::core::Clock) -> Self {
        let wall = clock.clone();
        Self::with_clocks(plans, clock, move || wall.wall())
    }
}

const DEFAULT_IDLE: Duration = Duration::from_secs(600);

impl<C> LocalQuota<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    /// A manager on the given clocks: `clock` for the rate limiters (governor's
    /// `FakeRelativeClock` in tests), `wall` for the budgets' calendar periods.
    pub fn with_clocks(
        plans: QuotaPlans,
        clock: C,
        wall: impl Fn() -> SystemTime + Send + Sync + 'static,
    ) -> Self {
        let origin = clock.now();
        Self::build(plans, clock, origin, Wall::Custom(Arc::new(wall)), None)
    }

    fn build(
        plans: QuotaPlans,
        clock: C,
        origin: C::Instant,
        wall: Wall,
        std_origin: Option<std::time::Instant>,
    ) -> Self {
        let index = PlanIndex::new(&plans);
        let mut rated: Vec<Option<Rated>> = index.params.iter().map(|_| None).collect();
        for i in index.tiers.iter().map(|(_, i)| *i).chain(index.unknown) {
            if index.params[i as usize].plan.budgets().is_empty() {
                rated[i as usize] = Some(DashMap::default());
            }
        }
        let shared = Arc::new(Shared {
            index,
            entries: DashMap::default(),
            rated,
            extra: DashMap::default(),
            clock,
            origin,
            wall,
            idle_after: AtomicU64::new(nanos(DEFAULT_IDLE)),
            std_origin,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let sweeper = spawn_sweeper(Arc::downgrade(&shared), Arc::clone(&stop));
        Self {
            shared,
            plans,
            sweeper,
            stop,
        }
    }

    /// Entries idle this long (and equal to a fresh one) are dropped by the sweep; it
    /// runs every quarter of this, from 100 ms to a minute.
    #[must_use]
    pub fn idle_after(self, idle: Duration) -> Self {
        self.shared.idle_after.store(nanos(idle), Ordering::Relaxed);
        if let Some(t) = &self.sweeper {
            t.thread().unpark(); // to take the new period
        }
        self
    }

    /// The plans.
    pub fn plans(&self) -> &QuotaPlans {
        &self.plans
    }

    /// How many tenants have an entry.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether no tenant has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sweeps now, as the manager's own sweeper does on its own: drops the entries
    /// idle for longer than `idle_after` whose state equals a fresh entry's (burst
    /// full, no budget used this period), so no tenant gains or loses anything by
    /// it; returns how many.
    pub fn evict_idle(&self) -> usize {
        self.shared.sweep()
    }

    fn decide(&self, tenant: &TenantContext, cost: u32) -> QuotaDecision {
        self.decide_at(tenant, cost, None)
    }

    /// [`decide`](Self::decide), at `now` when given and the clock is the system's.
    fn decide_at(
        &self,
        tenant: &TenantContext,
        cost: u32,
        now: Option<std::time::Instant>,
    ) -> QuotaDecision {
        let s = &*self.shared;
        let Some(index) = s.index.find(tenant) else {
            return refuse(None, None, None, None, None);
        };
        let p = &s.index.params[index as usize];
        let plan = &p.plan;
        let now = match (now, s.std_origin) {
            (Some(now), Some(origin)) => nanos(now.saturating_duration_since(origin)),
            _ => s.now_nanos(),
        };
        let n = u64::from(plan.rate_cost(cost));
        if let Some(rated) = &s.rated[index as usize] {
            let id = tenant.id();
            let mut tat = match rated.get_mut(id.as_str()) {
                Some(tat) => tat,
                None => {
                    s.forget(id.as_str(), Some(index));
                    rated.entry(id.clone()).or_insert(now)
                }
            };
            let admitted = p.admit(&mut tat, now, n);
            drop(tat);
            return match admitted {
                Ok(rate) => QuotaDecision {
                    rate,
                    plan: Some(Arc::clone(plan)),
                    ..QuotaDecision::allow()
                },
                Err((wait, state)) => {
                    let by = Some(QuotaLimit::Rate);
                    shadowed(plan, refuse(by, wait, Some(state), None, Some(plan)))
                }
            };
        }
        // The wall clock only matters to budgets.
        let now_secs = if plan.budgets().is_empty() {
            0
        } else {
            s.wall.unix_secs(now)
        };
        let budgets = plan.budgets();
        let (mut slot, extra) = s.open(tenant, index, now, budgets.len());
        let mut uses = Uses {
            slot: &mut slot,
            extra,
        };

        // Budgets first, read only: units are committed only if the rate admits too.
        let mut tightest: Option<BudgetState> = None;
        for (i, budget) in budgets.iter().enumerate() {
            let (period, left_secs) = budget.period.locate(now_secs);
            let period = u32::try_from(period).unwrap_or(u32::MAX);
            let mut u = uses.get(i);
            // Periods only move forward: a clock stepped back (NTP, a second fast
            // before) finds the later period, spent as it is, never a fresh one.
            if period > u.period {
                u = Used { period, used: 0 };
                uses.set(i, u);
            }
            let state = BudgetState {
                limit: budget.units,
                remaining: budget.units.saturating_sub(u.used),
                period: budget.period,
                reset: Duration::from_secs(left_secs),
            };
            if u64::from(cost) > state.remaining {
                let retry = (u64::from(cost) <= budget.units).then_some(state.reset);
                let by = Some(QuotaLimit::Budget(budget.period));
                let rate = (p.t != 0).then(|| p.rate_at(uses.slot.tat, now, Duration::ZERO));
                return shadowed(plan, refuse(by, retry, rate, Some(state), Some(plan)));
            }
            if tightest.is_none_or(|t| state.remaining < t.remaining) {
                tightest = Some(state);
            }
        }

        let rate = match p.admit(&mut uses.slot.tat, now, n) {
            Ok(rate) => rate,
            Err((wait, state)) => {
                let by = Some(QuotaLimit::Rate);
                return shadowed(plan, refuse(by, wait, Some(state), tightest, Some(plan)));
            }
        };
        for i in 0..budgets.len() {
            let u = uses.get(i);
            let used = u.used.saturating_add(u64::from(cost));
            uses.set(i, Used { used, ..u });
        }
        drop(uses);
        drop(slot);
        if let Some(t) = &mut tightest {
            t.remaining = t.remaining.saturating_sub(u64::from(cost));
        }
        QuotaDecision {
            rate,
            budget: tightest,
            plan: Some(Arc::clone(plan)),
            charged_at: Some(now_secs),
            ..QuotaDecision::allow()
        }
    }

    /// Corrects `charge` to `actual` units in the periods it was made in: a budget
    /// whose period has moved on since is left as it is (its new period never carried
    /// the charge).
    fn correct(&self, tenant: &TenantContext, charge: Charge, actual: u32) {
        let s = &*self.shared;
        let Some(index) = s.index.find(tenant) else {
            return;
        };
        let budgets = s.index.params[index as usize].plan.budgets();
        if budgets.is_empty() {
            return;
        }
        let at = charge.charged_at().unwrap_or_else(|| s.unix_secs());
        let Some(mut slot) = s.entries.get_mut(tenant.id().as_str()) else {
            return;
        };
        if slot.plan != index {
            return;
        }
        let mut uses = s.uses(tenant.id().as_str(), &mut slot, budgets.len());
        for (i, budget) in budgets.iter().enumerate() {
            let period = u32::try_from(budget.period.locate(at).0).unwrap_or(u32::MAX);
            let u = uses.get(i);
            // Only within the period the charge was made in.
            if u.period == period {
                let used = u
                    .used
                    .saturating_sub(u64::from(charge.units()))
                    .saturating_add(u64::from(actual));
                uses.set(i, Used { used, ..u });
            }
        }
    }
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl<C> LocalQuota<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    /// Sets `tenant`'s state to what another authority (the Redis quota, before it
    /// fell back on this manager) says is left of it now: `rate` units of the burst,
    /// and `budgets(i)` units of budget `i` in the current period (`None`: as it is).
    /// Figures above the plan's are taken as the plan's.
    pub(crate) fn mirror(
        &self,
        tenant: &TenantContext,
        rate: Option<u32>,
        budgets: impl Fn(usize) -> Option<u64>,
    ) {
        let s = &*self.shared;
        let Some(index) = s.index.find(tenant) else {
            return;
        };
        let p = &s.index.params[index as usize];
        let now = s.now_nanos();
        // `rate_at` then finds exactly `left` units: the arrival time is `now` plus the
        // spent part of the burst.
        let tat_for = |left: u32| {
            let spent = u64::from(p.burst.saturating_sub(left.min(p.burst)));
            now.saturating_add(spent.saturating_mul(p.t))
        };
        if let Some(rated) = &s.rated[index as usize] {
            if let (Some(left), true) = (rate, p.t != 0) {
                rated.insert(tenant.id().clone(), tat_for(left));
            }
            return;
        }
        let plan = p.plan.budgets();
        let now_secs = if plan.is_empty() {
            0
        } else {
            s.wall.unix_secs(now)
        };
        let (mut slot, extra) = s.open(tenant, index, now, plan.len());
        let mut uses = Uses {
            slot: &mut slot,
            extra,
        };
        if let (Some(left), true) = (rate, p.t != 0) {
            uses.slot.tat = tat_for(left);
        }
        for (i, budget) in plan.iter().enumerate() {
            if let Some(left) = budgets(i) {
                let period = u32::try_from(budget.period.locate(now_secs).0).unwrap_or(u32::MAX);
                let used = budget.units.saturating_sub(left.min(budget.units));
                uses.set(i, Used { period, used });
            }
        }
    }

    /// How many units of `tenant`'s burst are spent now (0 without an entry or a rate):
    /// what this manager admitted within the last window.
    pub(crate) fn rate_spent(&self, tenant: &str) -> u32 {
        let s = &*self.shared;
        let now = s.now_nanos();
        let spent = |plan: usize, tat: u64| {
            let p = &s.index.params[plan];
            if p.t == 0 {
                return 0;
            }
            p.burst
                .saturating_sub(p.rate_at(tat, now, Duration::ZERO).remaining)
        };
        let slot = s
            .entries
            .get(tenant)
            .map_or(0, |slot| spent(slot.plan as usize, slot.tat));
        let rated = s.rated.iter().enumerate().filter_map(|(i, rated)| {
            let tat = *rated.as_ref()?.get(tenant)?;
            Some(spent(i, tat))
        });
        rated.fold(slot, u32::max)
    }
}

impl<C: Clock> Shared<C> {
    /// Drops what `id` left under another plan than the one it is now found on: the
    /// rate-only map `keep` (`None`: a slot), when its plan changed between kinds.
    /// Only on a tenant's first check under a plan, and holding no entry's lock.
    fn forget(&self, id: &str, keep: Option<u32>) {
        for (i, rated) in self.rated.iter().enumerate() {
            if let Some(rated) = rated.as_ref().filter(|_| keep != u32::try_from(i).ok()) {
                rated.remove(id);
            }
        }
        if keep.is_some() && self.entries.remove(id).is_some() {
            self.extra.remove(id);
        }
    }

    /// How many tenants have an entry.
    fn len(&self) -> usize {
        let rated: usize = self.rated.iter().flatten().map(DashMap::len).sum();
        self.entries.len() + rated
    }

    /// `tenant`'s slot for the plan at `index`, made fresh when it has none or had
    /// another plan, and its side entry when the plan has `budgets` > 1 (locked after
    /// the slot, as everywhere).
    #[inline]
    fn open(
        &self,
        tenant: &TenantContext,
        index: u32,
        now: u64,
        budgets: usize,
    ) -> (SlotRef<'_>, Option<ExtraRef<'_>>) {
        let mut fresh = false;
        let mut slot = match self.entries.get_mut(tenant.id().as_str()) {
            Some(slot) => slot,
            None => {
                self.forget(tenant.id().as_str(), None);
                self.entries.entry(tenant.id().clone()).or_insert_with(|| {
                    fresh = true;
                    Slot::fresh(index, now)
                })
            }
        };
        // A tenant moved to another plan keeps what it spent of each budget period
        // the two plans share (as Redis keeps budgets per tenant and period): a change
        // of tier is never a fresh budget. The rate starts from the new plan (its
        // arrival time is in the old plan's units).
        let mut carried = None;
        if slot.plan != index {
            carried = Some(self.carried(tenant.id().as_str(), &slot, index));
            *slot = Slot::fresh(index, now);
            fresh = true;
        }
        if let Some(first) = carried.as_ref().and_then(|c| c.first()) {
            (slot.period, slot.used) = (first.period, first.used);
        }
        let extra = (budgets > 1).then(|| {
            let zeros = || vec![Used { period: 0, used: 0 }; budgets - 1];
            let mut e = self.extra.entry(tenant.id().clone()).or_insert_with(zeros);
            if fresh || e.len() != budgets - 1 {
                *e = zeros();
            }
            if let Some(carried) = &carried {
                for (slot, used) in e.iter_mut().zip(carried.iter().skip(1)) {
                    *slot = *used;
                }
            }
            e
        });
        (slot, extra)
    }

    /// What `slot` (under its old plan) spent, laid out for the budgets of the plan
    /// at `index`: each budget's use carried from the old plan's budget of the same
    /// period, nothing where the old plan had none. The slot is locked: the side map
    /// is read after it, as everywhere.
    fn carried(&self, id: &str, slot: &Slot, index: u32) -> Vec<Used> {
        let old = self.index.params[slot.plan as usize].plan.budgets();
        let new = self.index.params[index as usize].plan.budgets();
        let old_extra: Vec<Used> = if old.len() > 1 {
            self.extra.get(id).map(|e| e.clone()).unwrap_or_default()
        } else {
            Vec::new()
        };
        let old_use = |i: usize| match i.checked_sub(1) {
            None => Used {
                period: slot.period,
                used: slot.used,
            },
            Some(j) => old_extra
                .get(j)
                .copied()
                .unwrap_or(Used { period: 0, used: 0 }),
        };
        new.iter()
            .map(|b| {
                old.iter()
                    .position(|o| o.period == b.period)
                    .map_or(Used { period: 0, used: 0 }, old_use)
            })
            .collect()
    }

    /// `slot`'s budgets, with its side entry when its plan has `budgets` > 1 (locked
    /// after the slot, as everywhere).
    fn uses<'a>(&'a self, id: &str, slot: &'a mut Slot, budgets: usize) -> Uses<'a> {
        let extra = (budgets > 1).then(|| self.extra.get_mut(id)).flatten();
        Uses { slot, extra }
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        u64::from(self.clock.now().duration_since(self.origin))
    }

    fn unix_secs(&self) -> u64 {
        self.wall.unix_secs(self.now_nanos())
    }

    /// Drops the idle slots that equal fresh ones; returns how many. Gives the map's
    /// spare memory back when it shrank to under a quarter of its capacity.
    fn sweep(&self) -> usize {
        let now = self.now_nanos();
        let idle = self.idle_after.load(Ordering::Relaxed);
        let now_secs = self.unix_secs();
        let before = self.entries.len();
        self.entries.retain(|id, slot| {
            // The burst is full again (or, with no rate, the last check is that old):
            // `tat` is at least `idle` in the past.
            if now.saturating_sub(slot.tat) < idle.max(1) {
                return true;
            }
            let budgets = self.index.params[slot.plan as usize].plan.budgets();
            // The slot's lock is held: the side map is locked after it, as in a check.
            let uses = self.uses(id.as_str(), slot, budgets.len());
            let unspent = budgets.iter().enumerate().all(|(i, b)| {
                let u = uses.get(i);
                // Spent in a period that has ended; one later than the clock's (it
                // stepped back) is still the current one.
                u.used == 0 || u64::from(u.period) < b.period.locate(now_secs).0
            });
            drop(uses);
            if unspent && budgets.len() > 1 {
                self.extra.remove(id.as_str());
            }
            !unspent
        });
        // Side entries whose slot went another way (evicted with a plan of one budget,
        // or moved to one): each decided under its slot's lock, then removed, in the
        // order a check takes them (slot, then side map), never the other.
        if !self.extra.is_empty() {
            let keys: Vec<TenantId> = self.extra.iter().map(|e| e.key().clone()).collect();
            for id in keys {
                match self.entries.entry(id.clone()) {
                    dashmap::Entry::Occupied(slot) => {
                        let plan = slot.get().plan as usize;
                        let several = self.index.params[plan].plan.budgets().len() > 1;
                        if !several {
                            self.extra.remove(id.as_str());
                        }
                    }
                    // Held: the slot's shard stays locked while the side entry goes.
                    dashmap::Entry::Vacant(_held) => {
                        self.extra.remove(id.as_str());
                    }
                }
            }
        }
        let mut swept = shrunk(&self.entries, before);
        for rated in self.rated.iter().flatten() {
            let before = rated.len();
            // A rate-only tenant equals a fresh one once its burst is full again.
            rated.retain(|_, tat| now.saturating_sub(*tat) < idle.max(1));
            swept += shrunk(rated, before);
        }
        swept
    }
}

/// How many entries a sweep took from `map`, which had `before`; gives the map's
/// spare memory back when it shrank to under a quarter of its capacity.
fn shrunk<V>(map: &DashMap<TenantId, V, RandomState>, before: usize) -> usize {
    let after = map.len();
    if after < map.capacity() / 4 {
        map.shrink_to_fit();
    }
    before.saturating_sub(after)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The manager's sweeper: a thread that holds only a weak reference, so it ends when
/// the manager is dropped (which also wakes it). `None` if no thread could be made:
/// the manager then works as before, and `evict_idle` still sweeps.
fn spawn_sweeper<C>(
    shared: Weak<Shared<C>>,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>>
where
    C: Clock + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    let spawned = std::thread::Builder::new()
        .name("actix-tenancy-quota-sweep".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let every = match shared.upgrade() {
                Some(s) => {
                    let idle = Duration::from_nanos(s.idle_after.load(Ordering::Relaxed));
                    (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
                }
                None => return,
            };
            std::thread::park_timeout(every);
            if stop.load(Ordering::Acquire) {
                return;
            }
            match shared.upgrade() {
                Some(s) => {
                    s.sweep();
                }
                None => return,
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(
                target: "actix_tenancy::quota",
                error = %e,
                "no sweeper thread; idle tenants are reclaimed only by evict_idle"
            );
            None
        }
    }
}

/// In shadow mode a refusal becomes a pass marked `would_deny`.
fn shadowed(plan: &QuotaPlan, mut decision: QuotaDecision) -> QuotaDecision {
    if plan.is_shadow() {
        decision.allowed = true;
        decision.would_deny = true;
    }
    decision
}

#[async_trait::async_trait]
impl<C> QuotaManager for LocalQuota<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    async fn check(&self, tenant: &TenantContext, cost: u32) -> Result<QuotaDecision, QuotaError> {
        Ok(self.decide(tenant, cost))
    }

    async fn settle(
        &self,
        tenant: &TenantContext,
        charge: Charge,
        actual: u32,
    ) -> Result<(), QuotaError> {
        self.correct(tenant, charge, actual);
        Ok(())
    }

    #[inline]
    fn check_now(
        &self,
        tenant: &TenantContext,
        cost: u32,
    ) -> Option<Result<QuotaDecision, QuotaError>> {
        Some(Ok(self.decide(tenant, cost)))
    }

    #[inline]
    fn check_now_at(
        &self,
        tenant: &TenantContext,
        cost: u32,
        now: std::time::Instant,
    ) -> Option<Result<QuotaDecision, QuotaError>> {
        Some(Ok(self.decide_at(tenant, cost, Some(now))))
    }

    fn settle_now(
        &self,
        tenant: &TenantContext,
        charge: Charge,
        actual: u32,
    ) -> Option<Result<(), QuotaError>> {
        self.correct(tenant, charge, actual);
        Some(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::{
        quota::{Period, QuotaPlans},
        registry::TenantRecord,
        resolve::SourceKind,
    };

    fn ctx(id: &str, tier: &str) -> TenantContext {
        let id = TenantId::parse(id).unwrap();
        TenantContext::new(
            id.clone(),
            SourceKind::Header,
            Arc::new(TenantRecord::new(id, tier)),
            None,
        )
    }

    /// A wall clock the test moves, starting at 2026-11-25T10:30:00Z.
    fn wall() -> (
        Arc<AtomicU64>,
        impl Fn() -> SystemTime + Send + Sync + 'static,
    ) {
        let secs = Arc::new(AtomicU64::new(1_795_602_600));
        let s = Arc::clone(&secs);
        (secs, move || {
            UNIX_EPOCH + Duration::from_secs(s.load(Ordering::SeqCst))
        })
    }

    fn manager(
        plans: QuotaPlans,
    ) -> (
        LocalQuota<FakeRelativeClock>,
        FakeRelativeClock,
        Arc<AtomicU64>,
    ) {
        let clock = FakeRelativeClock::default();
        let (secs, wall) = wall();
        (
            LocalQuota::with_clocks(plans, clock.clone(), wall),
            clock,
            secs,
        )
    }

    #[test]
    fn a_mirrored_state_admits_exactly_what_it_says_is_left() {
        let plans = QuotaPlans::builder()
            .tier("free", QuotaPlan::per_second(10).budget(100, Period::Day))
            .tier(
                "two",
                QuotaPlan::per_second(10)
                    .budget(50, Period::Hour)
                    .budget(7, Period::Day),
            )
            .build()
            .unwrap();
        let (q, clock, _) = manager(plans);
        let t = ctx("globex", "free");
        // Three of the burst left: three pass, and the burst refills from there.
        q.mirror(&t, Some(3), |_| None);
        assert_eq!(q.rate_spent("globex"), 7);
        assert_eq!((0..20).filter(|_| q.decide(&t, 1).allowed).count(), 3);
        assert_eq!(q.rate_spent("globex"), 10);
        clock.advance(Duration::from_millis(100));
        assert_eq!((0..20).filter(|_| q.decide(&t, 1).allowed).count(), 1);
        // Two units of the budget left: the rate, full again, is not what stops it.
        clock.advance(Duration::from_secs(2));
        q.mirror(&t, Some(10), |_| Some(2));
        assert_eq!(q.rate_spent("globex"), 0);
        assert_eq!((0..20).filter(|_| q.decide(&t, 1).allowed).count(), 2);
        // Figures above the plan's are the plan's; `None` leaves a budget as it is.
        let two = ctx("initech", "two");
        q.mirror(&two, Some(1_000), |i| (i == 1).then_some(1_000));
        assert_eq!(q.rate_spent("initech"), 0);
        q.mirror(&two, None, |i| (i == 1).then_some(4));
        assert_eq!((0..20).filter(|_| q.decide(&two, 1).allowed).count(), 4);
        assert_eq!(q.rate_spent("nobody"), 0);
    }

    #[test]
    fn exactly_the_burst_passes_then_refills() {
        let plans = QuotaPlans::builder()
            .tier("free", QuotaPlan::per_second(5))
            .build()
            .unwrap();
        let (q, clock, _) = manager(plans);
        let t = ctx("globex", "free");
        let passed = (0..20).filter(|_| q.decide(&t, 1).allowed).count();
        assert_eq!(passed, 5);
        let denied = q.decide(&t, 1);
        let wait = denied.retry_after.unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        clock.advance(Duration::from_millis(200));
        assert!(q.decide(&t, 1).allowed);
        assert!(!q.decide(&t, 1).allowed);
    }

    #[test]
    fn a_rate_of_requests_beside_a_budget_of_units() {
        let plans = QuotaPlans::builder()
            .tier(
                "free",
                QuotaPlan::per_second(2)
                    .rate_counts_requests(true)
                    .budget(1_000, Period::Day),
            )
            .build()
            .unwrap();
        let (q, clock, _) = manager(plans);
        let t = ctx("globex", "free");
        // 400 units cost one request each of the rate.
        assert!(q.decide(&t, 400).allowed);
        let d = q.decide(&t, 400);
        assert!(d.allowed);
        assert_eq!(d.budget.unwrap().remaining, 200);
        assert_eq!(d.rate.unwrap().remaining, 0);
        // The rate is used up by two requests, whatever their cost.
        assert!(!q.decide(&t, 1).allowed);
        clock.advance(Duration::from_secs(1));
        // Over the budget: refused, and the rate is not charged for it.
        let d = q.decide(&t, 201);
        assert!(!d.allowed);
        assert!(q.decide(&t, 200).allowed);
        assert!(!q.decide(&t, 1).allowed, "budget empty");
    }

    #[test]
    fn cost_above_the_burst_can_never_pass() {
        let plans = QuotaPlans::builder()
            .tier("free", QuotaPlan::per_second(5))
            .build()
            .unwrap();
        let (q, _, _) = manager(plans);
        let d = q.decide(&ctx("globex", "free"), 6);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, None);
        assert!(
            q.decide(&ctx("globex", "free"), 5).allowed,
            "nothing was consumed"
        );
    }

    #[test]
    fn budgets_roll_over_at_the_calendar_period() {
        let plans = QuotaPlans::builder()
            .tier("free", QuotaPlan::unlimited().budget(10, Period::Day))
            .build()
            .unwrap();
        let (q, _, secs) = manager(plans);
        let t = ctx("globex", "free");
        assert!(q.decide(&t, 7).allowed);
        let d = q.decide(&t, 4);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(13 * 3600 + 1800)));
        assert!(q.decide(&t, 3).allowed);
        assert!(!q.decide(&t, 1).allowed);
        secs.fetch_add(13 * 3600 + 1800, Ordering::SeqCst); // midnight UTC
        assert!(q.decide(&t, 10).allowed);
        assert!(!q.decide(&t, 11).allowed, "more than the budget: never");
        assert_eq!(q.decide(&t, 11).retry_after, None);
    }

    #[test]
    fn rate_and_budget_are_admitted_together() {
        let plans = QuotaPlans::builder()
            .tier("free", QuotaPlan::per_second(3).budget(5, Period::Day))
            .build()
            .unwrap();
        let (q, clock, _) = manager(plans);
        let t = ctx("globex", "free");
        // Refused by the rate: the budget keeps its units.
        assert!(q.decide(&t, 3).allowed);
        assert!(!q.decide(&t, 1).allowed);
        assert_eq!(q.decide(&t, 0).budget.unwrap().remaining, 2);
        // Refused by the budget: the rate keeps its units.
        clock.advance(Duration::from_secs(1));
        assert!(!q.decide(&t, 3).allowed);
        assert_eq!(q.decide(&t, 0).rate, None);
        let d = q.decide(&t, 2);
        assert!(d.allowed);
        assert_eq!(
            d.rate.unwrap().remaining,
            1,
            "the refused 3 consumed no rate"
        );
    }

    #[test]
    fn settle_corrects_the_budget() {
        let plans = QuotaPlans::builder()
            .tier("pro", QuotaPlan::unlimited().budget(100, Period::Day))
            .build()
            .unwrap();
        let (q, _, _) = manager(plans);
        let t = ctx("acme", "pro");
        assert!(q.decide(&t, 50).allowed);
        q.correct(&t, Charge::new(50), 80);
        assert_eq!(q.decide(&t, 0).budget.unwrap().remaining, 20);
        q.correct(&t, Charge::new(10), 0); // a refund
        assert_eq!(q.decide(&t, 0).budget.unwrap().remaining, 30);
    }

    /// 2025-12-31 23:59:50 UTC: ten seconds before a day (and a month) ends.
    const BEFORE_MIDNIGHT: u64 = 1_767_225_590;

    fn daily(units: u64) -> QuotaPlans {
        QuotaPlans::builder()
            .tier("pro", QuotaPlan::unlimited().budget(units, Period::Day))
            .tier("basic", QuotaPlan::unlimited().budget(units, Period::Day))
            .build()
            .unwrap()
    }

    #[test]
    fn a_refund_settled_after_midnight_never_credits_the_new_day() {
        let (q, _, secs) = manager(daily(100));
        secs.store(BEFORE_MIDNIGHT, Ordering::SeqCst);
        let t = ctx("acme", "pro");
        let d = q.decide(&t, 100);
        assert!(d.allowed);
        assert_eq!(d.charged_at, Some(BEFORE_MIDNIGHT));
        secs.store(BEFORE_MIDNIGHT + 20, Ordering::SeqCst);
        assert!(q.decide(&t, 100).allowed, "the new day's 100");
        q.correct(&t, d.charge(100), 0);
        assert!(
            !q.decide(&t, 1).allowed,
            "yesterday's refund is not today's"
        );
        // A refund within the day it was charged in still counts.
        let (q, _, secs) = manager(daily(100));
        secs.store(BEFORE_MIDNIGHT - 100, Ordering::SeqCst);
        let d = q.decide(&t, 100);
        secs.store(BEFORE_MIDNIGHT, Ordering::SeqCst);
        q.correct(&t, d.charge(100), 40);
        assert!(q.decide(&t, 60).allowed);
        assert!(!q.decide(&t, 1).allowed);
    }

    #[test]
    fn a_clock_stepped_back_never_gives_a_spent_period_a_fresh_budget() {
        let (q, clock, secs) = manager(daily(100));
        let t = ctx("acme", "pro");
        secs.store(BEFORE_MIDNIGHT + 9, Ordering::SeqCst); // 23:59:59
        assert!(q.decide(&t, 100).allowed);
        secs.store(BEFORE_MIDNIGHT + 10, Ordering::SeqCst); // 00:00:00, a second fast
        assert!(q.decide(&t, 1).allowed);
        secs.store(BEFORE_MIDNIGHT + 9, Ordering::SeqCst); // stepped back by NTP
        let d = q.decide(&t, 100);
        assert!(!d.allowed, "the spent day came back");
        assert!(q.decide(&t, 99).allowed, "what is left of the later day");
        assert!(!q.decide(&t, 1).allowed);
        // Nor does a sweep take the later period for a stale one.
        let q = q.idle_after(Duration::from_secs(1));
        clock.advance(Duration::from_secs(5));
        assert_eq!(q.evict_idle(), 0, "the later day's use is kept");
        assert!(!q.decide(&t, 1).allowed);
    }

    #[test]
    fn a_change_of_tier_keeps_what_was_spent_in_the_period() {
        let (q, _, _) = manager(daily(100));
        assert!(q.decide(&ctx("acme", "pro"), 60).allowed);
        let basic = ctx("acme", "basic");
        assert!(
            !q.decide(&basic, 41).allowed,
            "a fresh budget with the new tier"
        );
        assert!(q.decide(&basic, 40).allowed);
        assert!(!q.decide(&ctx("acme", "pro"), 1).allowed, "nor back");
    }

    #[test]
    fn tenants_never_share_and_plans_follow_the_tier() {
        let plans = QuotaPlans::builder()
            .tier("free", QuotaPlan::per_second(1))
            .tier("pro", QuotaPlan::per_second(3))
            .tenant(TenantId::parse("vip").unwrap(), QuotaPlan::per_second(5))
            .build()
            .unwrap();
        let (q, _, _) = manager(plans);
        let count = |t: &TenantContext| (0..10).filter(|_| q.decide(t, 1).allowed).count();
        assert_eq!(count(&ctx("a", "free")), 1);
        assert_eq!(count(&ctx("b", "free")), 1);
        assert_eq!(count(&ctx("c", "pro")), 3);
        assert_eq!(count(&ctx("vip", "free")), 5, "the override wins");
        // `a` moves to pro: a fresh limiter from the new plan.
        assert_eq!(count(&ctx("a", "pro")), 3);
        assert_eq!(q.len(), 4);
        // No plan for the tier: refused, never retry.
        let d = q.decide(&ctx("d", "platinum"), 1);
        assert!(!d.allowed && d.retry_after.is_none());
    }

    #[test]
    fn idle_entries_are_evicted() {
        let plans = QuotaPlans::builder()
            .tier("free", QuotaPlan::per_second(1))
            .build()
            .unwrap();
        let (q, clock, _) = manager(plans);
        let q = q.idle_after(Duration::from_secs(60));
        for i in 0..100 {
            q.decide(&ctx(&format!("t{i}"), "free"), 1);
        }
        clock.advance(Duration::from_secs(30));
        q.decide(&ctx("t0", "free"), 1);
        assert_eq!(q.evict_idle(), 0);
        clock.advance(Duration::from_secs(31));
        assert_eq!(q.evict_idle(), 99);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn shadow_mode_passes_but_marks() {
        let plans = QuotaPlans::builder()
            .tier("free", QuotaPlan::per_second(1).shadow(true))
            .build()
            .unwrap();
        let (q, _, _) = manager(plans);
        let t = ctx("globex", "free");
        let first = q.decide(&t, 1);
        assert!(first.allowed && !first.would_deny);
        let second = q.decide(&t, 1);
        assert!(second.allowed && second.would_deny);
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_burst() {
        let plans = QuotaPlans::builder()
            .tier("pro", QuotaPlan::rate(100, Duration::from_secs(3600)))
            .build()
            .unwrap();
        assert_eq!(admitted_by_8_threads(plans, false), 100);
    }

    /// Checks admitted when 8 threads each check tenant `acme` on tier `pro` 100 times,
    /// sweeping after each check when `sweep` is set.
    fn admitted_by_8_threads(plans: QuotaPlans, sweep: bool) -> u64 {
        let q = Arc::new(LocalQuota::new(plans));
        let passed = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let (q, passed) = (Arc::clone(&q), Arc::clone(&passed));
                s.spawn(move || {
                    let t = ctx("acme", "pro");
                    for _ in 0..100 {
                        if q.decide(&t, 1).allowed {
                            passed.fetch_add(1, Ordering::SeqCst);
                        }
                        if sweep {
                            q.evict_idle();
                        }
                    }
                });
            }
        });
        passed.load(Ordering::SeqCst)
    }

    #[test]
    fn eviction_never_resets_a_budget_in_use() {
        let plans = QuotaPlans::builder()
            .tier("free", QuotaPlan::per_second(10).budget(5, Period::Day))
            .build()
            .unwrap();
        let (q, clock, secs) = manager(plans);
        let q = q.idle_after(Duration::from_secs(60));
        let spent = ctx("acme", "free");
        assert!(q.decide(&spent, 5).allowed);
        assert!(
            q.decide(&ctx("idle", "free"), 0).allowed,
            "an entry with nothing spent"
        );
        clock.advance(Duration::from_secs(3600));
        secs.fetch_add(3600, Ordering::SeqCst);
        assert_eq!(
            q.evict_idle(),
            1,
            "only the entry equal to a fresh one goes"
        );
        assert!(
            !q.decide(&spent, 1).allowed,
            "idle an hour, today's budget is still spent"
        );
        // Midnight: its use belongs to a past period, and the entry may go.
        clock.advance(Duration::from_secs(13 * 3600));
        secs.fetch_add(13 * 3600, Ordering::SeqCst);
        assert_eq!(q.evict_idle(), 1);
        assert!(q.is_empty());
        assert!(q.decide(&spent, 5).allowed);
    }

    #[test]
    fn a_burst_not_yet_refilled_is_kept_however_idle() {
        let plans = QuotaPlans::builder()
            .tier("slow", QuotaPlan::rate(2, Duration::from_secs(7200)))
            .build()
            .unwrap();
        let (q, clock, _) = manager(plans);
        let q = q.idle_after(Duration::from_secs(60));
        let t = ctx("acme", "slow");
        assert!(q.decide(&t, 2).allowed);
        clock.advance(Duration::from_secs(600));
        assert_eq!(q.evict_idle(), 0, "its burst refills only in two hours");
        assert!(
            !q.decide(&t, 1).allowed,
            "and is not handed back by eviction"
        );
        clock.advance(Duration::from_secs(7200 + 60));
        assert_eq!(q.evict_idle(), 1);
    }

    #[test]
    fn the_manager_reclaims_idle_tenants_by_itself_and_its_sweeper_ends_with_it() {
        let plans = QuotaPlans::builder()
            .tier("fast", QuotaPlan::per_second(1_000))
            .build()
            .unwrap();
        let q = LocalQuota::new(plans).idle_after(Duration::from_millis(50));
        for i in 0..1_000 {
            assert!(q.decide(&ctx(&format!("t{i}"), "fast"), 1).allowed);
        }
        assert_eq!(q.len(), 1_000);
        // No call from here: the manager's own sweeper empties the map.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !q.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(q.is_empty(), "{} entries left", q.len());
        let mut q = q;
        let sweeper = q.sweeper.take().expect("a sweeper thread");
        assert!(!sweeper.is_finished(), "it runs while the manager lives");
        drop(q);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !sweeper.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            sweeper.is_finished(),
            "dropping the manager ends its sweeper"
        );
    }

    #[test]
    fn the_system_wall_is_read_at_most_once_a_second() {
        let wall = Wall::System {
            offset: AtomicU64::new(0),
            read_at: AtomicU64::new(u64::MAX),
        };
        let real = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let first = wall.unix_secs(5_000_000_000);
        assert!(first.abs_diff(real()) <= 1, "read at first use");
        let Wall::System { read_at, .. } = &wall else {
            unreachable!()
        };
        assert_eq!(read_at.load(Ordering::Relaxed), 5_000_000_000);
        // Within the second: moved on by the monotonic time, not read.
        let moved = wall.unix_secs(5_900_000_000);
        assert!(moved == first || moved == first + 1, "{moved} vs {first}");
        assert_eq!(read_at.load(Ordering::Relaxed), 5_000_000_000);
        // A second on: read again.
        wall.unix_secs(6_000_000_001);
        assert_eq!(read_at.load(Ordering::Relaxed), 6_000_000_001);
        // The monotonic time going back (another thread's older reading): read again.
        wall.unix_secs(5_500_000_000);
        assert_eq!(read_at.load(Ordering::Relaxed), 5_500_000_000);
    }

    #[test]
    fn several_budgets_are_kept_together_and_swept_together() {
        let plans = QuotaPlans::builder()
            .tier(
                "two",
                QuotaPlan::per_second(100)
                    .budget(10, Period::Hour)
                    .budget(15, Period::Day),
            )
            .tier("one", QuotaPlan::per_second(100).budget(10, Period::Day))
            .build()
            .unwrap();
        let (q, clock, secs) = manager(plans);
        let q = q.idle_after(Duration::from_secs(60));
        let t = ctx("acme", "two");
        assert!(q.decide(&t, 10).allowed);
        let d = q.decide(&t, 1);
        assert_eq!(d.refused_by, Some(QuotaLimit::Budget(Period::Hour)));
        // The next hour: the day's budget has 5 left, and only 5.
        clock.advance(Duration::from_secs(3600));
        secs.fetch_add(3600, Ordering::SeqCst);
        assert_eq!(q.evict_idle(), 0, "the day's use is kept");
        assert!(q.decide(&t, 5).allowed);
        let d = q.decide(&t, 1);
        assert_eq!(d.refused_by, Some(QuotaLimit::Budget(Period::Day)));
        q.correct(&t, Charge::new(5), 2); // the second budget takes the refund too
        assert!(q.decide(&t, 3).allowed);
        assert!(!q.decide(&t, 1).allowed);
        // A move to a plan of one budget keeps the day's use (15 of its 10), and the
        // side entry goes.
        let d = q.decide(&ctx("acme", "one"), 1);
        assert_eq!(d.refused_by, Some(QuotaLimit::Budget(Period::Day)));
        q.evict_idle();
        assert!(q.shared.extra.is_empty());
        // Back to two budgets: the hour is fresh (the other plan had none), the day
        // is not.
        let d = q.decide(&t, 1);
        assert_eq!(d.refused_by, Some(QuotaLimit::Budget(Period::Day)));
        // The next day, idle: slot and side entry both go.
        clock.advance(Duration::from_secs(86_400));
        secs.fetch_add(86_400, Ordering::SeqCst);
        assert_eq!(q.evict_idle(), 1);
        assert!(q.is_empty() && q.shared.extra.is_empty());
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_second_budget() {
        let plans = QuotaPlans::builder()
            .tier(
                "pro",
                QuotaPlan::per_second(1_000_000)
                    .budget(1_000, Period::Hour)
                    .budget(100, Period::Day),
            )
            .build()
            .unwrap();
        // Sweeps racing the checks (taking the same locks) keep them exact.
        assert_eq!(admitted_by_8_threads(plans, true), 100);
    }
}
