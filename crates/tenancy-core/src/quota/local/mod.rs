//! [`LocalQuota`]: every tenant's rate and budgets in one slot of a sharded map, in this
//! process. One concept a file: the slot and its uses (`slot`), the plans with their
//! GCRA figures (`plans`), the calendar (`wall`), the sweep of idle tenants (`sweep`).
//!
//! Which algorithm decides what:
//!
//! - **Budgets**: a count of units per calendar period (UTC hour, day or month), in the
//!   tenant's [`Slot`] (the first budget) and the side map (the others).
//! - **Rates**: GCRA, governor's arithmetic written out once in `Params::admit`
//!   (governor's `test_n_all_and_update`: the same arrival time for a fresh tenant,
//!   the same conformance test, the same new arrival time and wait, saturating where
//!   governor adds unchecked), on an 8-byte theoretical arrival time per tenant. It is
//!   the one step for both kinds of plan:
//!   - *a rate and a budget*: the arrival time sits in the 24-byte slot beside the
//!     first budget's use, and the check admits the rate and the budgets under the
//!     slot's lock, or neither (a budget that refuses leaves the rate as it was, a
//!     rate that refuses leaves the budgets). Governor cannot decide that: its state
//!     store holds one arrival time per key and commits it as soon as the rate
//!     conforms.
//!   - *a rate only*: the arrival time alone, in the plan's own map (a tenant costs
//!     what it costs in governor's keyed limiter, 53 bytes at 1,000,000 tenants).
//!     Governor's own `RateLimiter` deciding here was built and measured (2026-12-07,
//!     `bench/quota.sh`): over a `StateStore` of this crate's on the same map, on a
//!     clock that tells it the time the check hands in, it cost 646 to 651
//!     instructions per check against 564 to 571 for this step (1.15x, where the
//!     bar was 1.02x): its `check_key_n` is a call of about 94 instructions (the
//!     nested results and snapshot, a compare-and-swap on top of the shard lock)
//!     where this step is about 15 inline. Its keyed limiter over its own
//!     `DashMapStateStore` would also read its own clock on every check (the
//!     request's time, read once by the pipeline, could not serve) and keeps its
//!     store to itself, so neither the burst a refusal leaves (`NotUntil` keeps its
//!     snapshot private), nor the state behind a cost above the burst
//!     (`InsufficientCapacity`), nor the Redis fallback's mirror could be had. So
//!     the step stays: `tests/properties.rs` holds it to a model of GCRA, and a unit
//!     test to governor's own limiter, decision by decision (what is admitted, the
//!     burst left, the wait, a cost that never fits).

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
use crate::{Answer, Moment, TenantContext, TenantId};

mod slot;
use slot::*;
mod plans;
use plans::*;
mod wall;
use wall::*;
mod sweep;
use sweep::*;
#[cfg(test)]
mod tests;

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
/// in a map of that plan's own (as governor's keyed limiter does, and at its cost
/// per tenant).
///
/// - Entries are built lazily from the tenant's plan, on its first request. Only
///   tenants the resolver validated against the registry ever reach the manager, so
///   made-up ids cannot grow the map.
/// - When a tenant's plan changes (its tier changed in the registry, say), the next
///   request replaces its entry with one built from the new plan.
/// - **Idle tenants are reclaimed by the manager itself**: a sweeper thread it owns
///   (`tenancy-quota-sweep`, stopped when the manager is dropped) drops every
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

impl LocalQuota<crate::Clock> {
    /// A manager for `plans` on `clock`, its monotonic time for the rate limiters and
    /// its wall time for the budgets: with a
    /// [`testing::FakeClock`](crate::FakeClock), a test refills a rate or
    /// starts a new budget period without sleeping.
    pub fn with_clock(plans: QuotaPlans, clock: crate::Clock) -> Self {
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

    /// A decision at the clock's time.
    #[cfg(test)]
    fn decide(&self, tenant: &TenantContext, cost: u32) -> QuotaDecision {
        self.decide_at(tenant, cost, None)
    }

    /// A decision at `now` when given and the clock is the system's.
    ///
    /// `#[inline]`: inlined into [`check`](QuotaManager::check) (and through it into a
    /// caller that names `LocalQuota`), the 128-byte [`QuotaDecision`] is built where
    /// it is read. Called out of line, it came back through a return slot and was
    /// copied on its way into `Answer::Now(Ok(_))` and out of `Answer::now` (three
    /// copies: `bench/quota.sh 1000`, local-rate 556 instructions a check against 513).
    #[inline]
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
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// In shadow mode a refusal becomes a pass marked `would_deny`.
fn shadowed(plan: &QuotaPlan, mut decision: QuotaDecision) -> QuotaDecision {
    if plan.is_shadow() {
        decision.allowed = true;
        decision.would_deny = true;
    }
    decision
}

impl<C> QuotaManager for LocalQuota<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    #[inline]
    fn check<'a>(
        &'a self,
        tenant: &'a TenantContext,
        cost: u32,
        at: &mut Moment,
    ) -> Answer<'a, Result<QuotaDecision, QuotaError>> {
        Answer::Now(Ok(self.decide_at(tenant, cost, Some(at.instant()))))
    }

    fn settle<'a>(
        &'a self,
        tenant: &'a TenantContext,
        charge: Charge,
        actual: u32,
    ) -> Answer<'a, Result<(), QuotaError>> {
        self.correct(tenant, charge, actual);
        Answer::Now(Ok(()))
    }
}
