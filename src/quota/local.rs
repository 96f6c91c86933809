use std::{
    fmt,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use dashmap::DashMap;
use foldhash::fast::RandomState;
use governor::{
    clock::{Clock, MonotonicClock, Reference},
    middleware::StateInformationMiddleware,
    state::{InMemoryState, NotKeyed},
    RateLimiter,
};

use super::{
    refuse, BudgetState, QuotaDecision, QuotaError, QuotaLimit, QuotaManager, QuotaPlan,
    QuotaPlans, RateState,
};
use crate::core::{TenantContext, TenantId};

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

/// Units used in the current period of one budget.
#[derive(Debug, Clone, Copy)]
struct Used {
    period: u64,
    used: u64,
}

/// A tenant's budgets, and what its rate limiter last said: kept under one lock, which
/// the rate check runs inside whenever the plan has budgets.
struct Ledger {
    used: Vec<Used>,
    /// The limiter's remaining burst after its last check, and when (nanoseconds since
    /// the manager's origin). governor cannot be asked without charging, so a refusal
    /// by a budget reports the rate from this: the burst refills one unit per interval
    /// and nothing else draws on this limiter, so the value is exact or one short.
    rate_left: u32,
    rate_at: u64,
}

struct Entry<C: Clock> {
    plan: Arc<QuotaPlan>,
    limiter: Option<Limiter<C>>,
    budgets: Mutex<Ledger>,
    /// Nanoseconds since the manager's origin, of the last check.
    last_seen: AtomicU64,
}

/// Quotas kept in this process: one `governor` rate limiter per tenant, in a sharded
/// `DashMap`, with budgets alongside.
///
/// - Entries are built lazily from the tenant's plan, on its first request. Only
///   tenants the resolver validated against the registry ever reach the manager, so
///   made-up ids cannot grow the map.
/// - When a tenant's plan changes (its tier changed in the registry, say), the next
///   request replaces its entry with one built from the new plan.
/// - [`evict_idle`](Self::evict_idle) drops entries idle for longer than
///   [`idle_after`](Self::idle_after) (default 10 minutes), so memory follows the
///   active tenants. Call it periodically.
/// - Time: the rate limiters use governor's `MonotonicClock` (`std::time::Instant`),
///   chosen explicitly: its default `quanta` clock reads the CPU's TSC, which has been
///   seen to skew across cores and reject early. Budgets use the wall clock (UTC
///   calendar periods). [`with_clock`](LocalQuota::with_clock) takes both from one
///   [`Clock`](crate::Clock) (a fake one, in tests); [`with_clocks`](Self::with_clocks)
///   takes them apart.
///
/// Share one `LocalQuota` (it is cheap to clone the `TenantQuota` holding it) across
/// workers: a limiter per worker would let each worker admit the full quota.
pub struct LocalQuota<C: Clock = MonotonicClock> {
    plans: QuotaPlans,
    entries: DashMap<TenantId, Arc<Entry<C>>, RandomState>,
    clock: C,
    origin: C::Instant,
    wall: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    idle_after: Duration,
}

impl<C: Clock> fmt::Debug for LocalQuota<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalQuota")
            .field("plans", &self.plans)
            .field("tenants", &self.entries.len())
            .field("idle_after", &self.idle_after)
            .finish_non_exhaustive()
    }
}

impl LocalQuota<MonotonicClock> {
    /// A manager for `plans`, on the monotonic and the system clocks.
    pub fn new(plans: QuotaPlans) -> Self {
        Self::with_clocks(plans, MonotonicClock, SystemTime::now)
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
        Self {
            plans,
            entries: DashMap::default(),
            clock,
            origin,
            wall: Arc::new(wall),
            idle_after: Duration::from_secs(600),
        }
    }

    /// Entries idle this long are dropped by [`evict_idle`](Self::evict_idle).
    #[must_use]
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = idle;
        self
    }

    /// The plans.
    pub fn plans(&self) -> &QuotaPlans {
        &self.plans
    }

    /// How many tenants have an entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no tenant has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the entries idle for longer than `idle_after`; returns how many. Run it
    /// periodically, e.g. from `actix_web::rt::spawn` with an interval. An evicted
    /// tenant starts again with a full burst and, for budgets, loses the count of the
    /// current period: keep `idle_after` longer than the budgets' periods if that
    /// matters, or use a shared backend.
    pub fn evict_idle(&self) -> usize {
        let now = self.now_nanos();
        let idle = u64::try_from(self.idle_after.as_nanos()).unwrap_or(u64::MAX);
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.saturating_sub(e.last_seen.load(Ordering::Relaxed)) < idle);
        before.saturating_sub(self.entries.len())
    }

    fn now_nanos(&self) -> u64 {
        u64::from(self.clock.now().duration_since(self.origin))
    }

    fn unix_secs(&self) -> u64 {
        (self.wall)()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// The tenant's entry, built from `plan` or rebuilt when the plan changed.
    fn entry(&self, id: &TenantId, plan: &Arc<QuotaPlan>, now: u64) -> Arc<Entry<C>> {
        if let Some(e) = self.entries.get(id.as_str()) {
            if Arc::ptr_eq(&e.plan, plan) {
                return Arc::clone(e.value());
            }
        }
        let fresh = Arc::new(Entry {
            plan: Arc::clone(plan),
            limiter: plan.rate_limit().and_then(|r| r.quota()).map(|q| {
                RateLimiter::direct_with_clock(q, self.clock.clone())
                    .with_middleware::<StateInformationMiddleware>()
            }),
            budgets: Mutex::new(Ledger {
                used: vec![Used { period: 0, used: 0 }; plan.budgets().len()],
                rate_left: plan.rate_limit().map_or(0, |r| r.burst),
                rate_at: now,
            }),
            last_seen: AtomicU64::new(now),
        });
        let mut slot = self
            .entries
            .entry(id.clone())
            .or_insert_with(|| Arc::clone(&fresh));
        if !Arc::ptr_eq(&slot.plan, plan) {
            *slot = Arc::clone(&fresh);
        }
        Arc::clone(slot.value())
    }

    fn decide(&self, tenant: &TenantContext, cost: u32) -> QuotaDecision {
        let Some(plan) = self.plans.plan_for(tenant) else {
            return refuse(None, None, None, None, None);
        };
        let now = self.now_nanos();
        let entry = self.entry(tenant.id(), plan, now);
        entry.last_seen.store(now, Ordering::Relaxed);
        // The wall clock only matters to budgets.
        let now_secs = if plan.budgets().is_empty() {
            0
        } else {
            self.unix_secs()
        };

        // Budgets and rate are admitted together: the budget lock is held while the
        // rate limiter decides, and budget units are committed only if it admits.
        let mut ledger = entry.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let mut tightest: Option<BudgetState> = None;
        for (budget, u) in plan.budgets().iter().zip(ledger.used.iter_mut()) {
            let (period, left_secs) = budget.period.locate(now_secs);
            if u.period != period {
                *u = Used { period, used: 0 };
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
                let rate = entry
                    .limiter
                    .as_ref()
                    .map(|_| rate_state(plan, refilled(plan, &ledger, now), Duration::ZERO));
                return self.shadowed(plan, refuse(by, retry, rate, Some(state), Some(plan)));
            }
            if tightest.is_none_or(|t| state.remaining < t.remaining) {
                tightest = Some(state);
            }
        }

        let mut rate = None;
        if let (Some(limiter), Some(n)) = (&entry.limiter, NonZeroU32::new(plan.rate_cost(cost))) {
            match limiter.check_n(n) {
                Ok(Ok(snapshot)) => {
                    let left = snapshot.remaining_burst_capacity();
                    (ledger.rate_left, ledger.rate_at) = (left, now);
                    rate = Some(rate_state(plan, left, Duration::ZERO));
                }
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    let state = rate_state(plan, refilled(plan, &ledger, now), wait);
                    let by = Some(QuotaLimit::Rate);
                    return self.shadowed(
                        plan,
                        refuse(by, Some(wait), Some(state), tightest, Some(plan)),
                    );
                }
                Err(_insufficient) => {
                    let state = rate_state(plan, refilled(plan, &ledger, now), Duration::ZERO);
                    let by = Some(QuotaLimit::Rate);
                    return self
                        .shadowed(plan, refuse(by, None, Some(state), tightest, Some(plan)));
                }
            }
        }
        for u in ledger.used.iter_mut() {
            u.used = u.used.saturating_add(u64::from(cost));
        }
        if let Some(t) = &mut tightest {
            t.remaining = t.remaining.saturating_sub(u64::from(cost));
        }
        QuotaDecision {
            allowed: true,
            would_deny: false,
            retry_after: None,
            rate,
            budget: tightest,
            plan: Some(Arc::clone(plan)),
            refused_by: None,
        }
    }

    /// In shadow mode a refusal becomes a pass marked `would_deny`.
    fn shadowed(&self, plan: &QuotaPlan, mut decision: QuotaDecision) -> QuotaDecision {
        if plan.is_shadow() {
            decision.allowed = true;
            decision.would_deny = true;
        }
        decision
    }

    fn correct(&self, tenant: &TenantContext, charged: u32, actual: u32) {
        let Some(plan) = self.plans.plan_for(tenant) else {
            return;
        };
        let Some(entry) = self
            .entries
            .get(tenant.id().as_str())
            .map(|e| Arc::clone(&e))
        else {
            return;
        };
        if !Arc::ptr_eq(&entry.plan, plan) {
            return;
        }
        let now_secs = self.unix_secs();
        let mut ledger = entry.budgets.lock().unwrap_or_else(|p| p.into_inner());
        for (budget, u) in plan.budgets().iter().zip(ledger.used.iter_mut()) {
            // Only within the period the charge was made in.
            if u.period == budget.period.locate(now_secs).0 {
                u.used = u
                    .used
                    .saturating_sub(u64::from(charged))
                    .saturating_add(u64::from(actual));
            }
        }
    }
}

/// The rate's remaining burst now, from the ledger's last reading: one unit back per
/// interval since, up to the burst.
fn refilled(plan: &QuotaPlan, ledger: &Ledger, now: u64) -> u32 {
    let (Some(rate), Some((interval, _))) = (plan.rate_limit(), plan.rate_timing()) else {
        return 0;
    };
    let interval = u64::try_from(interval.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let back = now.saturating_sub(ledger.rate_at) / interval;
    let back = u32::try_from(back).unwrap_or(u32::MAX);
    ledger.rate_left.saturating_add(back).min(rate.burst)
}

fn rate_state(plan: &QuotaPlan, remaining: u32, wait: Duration) -> RateState {
    let (burst, interval, window) = match (plan.rate_limit(), plan.rate_timing()) {
        (Some(rate), Some((interval, window))) => (rate.burst, interval, window),
        _ => (1, Duration::from_secs(1), Duration::from_secs(1)),
    };
    let missing = burst.saturating_sub(remaining);
    RateState {
        limit: burst,
        remaining,
        window,
        reset: wait.max(interval * missing),
    }
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
        charged: u32,
        actual: u32,
    ) -> Result<(), QuotaError> {
        self.correct(tenant, charged, actual);
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

    fn settle_now(
        &self,
        tenant: &TenantContext,
        charged: u32,
        actual: u32,
    ) -> Option<Result<(), QuotaError>> {
        self.correct(tenant, charged, actual);
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
        q.correct(&t, 50, 80);
        assert_eq!(q.decide(&t, 0).budget.unwrap().remaining, 20);
        q.correct(&t, 10, 0); // a refund
        assert_eq!(q.decide(&t, 0).budget.unwrap().remaining, 30);
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
                    }
                });
            }
        });
        assert_eq!(passed.load(Ordering::SeqCst), 100);
    }
}
