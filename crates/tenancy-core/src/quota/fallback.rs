//! The Redis quota's degraded mode: each replica decides alone on its share of the
//! plan, starting from what Redis last said, and owes Redis what it admitted.
//!
//! - **The share.** Every plan is divided by the replicas alive, as the heartbeat last
//!   counted them before Redis went away (never fewer than the configured floor).
//! - **The start.** While Redis answers, every reply is mirrored into the local
//!   manager, divided the same way: when Redis fails, a tenant's local state is its
//!   share of what Redis said was left (of the burst and of each budget) at this
//!   replica's last check of it, not a fresh allowance. When every replica's last
//!   check was recent, together they admit at most what was left; what others spent
//!   after a replica's last check, and a tenant a replica never checked (a fresh
//!   share), can add up to one plan per period (the bounds in [actix-tenancy's `guide::quotas`](https://docs.rs/actix-tenancy/latest/actix_tenancy/guide/quotas/index.html)).
//! - **The debt.** What is admitted locally is recorded per tenant and period, and
//!   charged to Redis (`RECONCILE`) once it answers again, before any replica goes back
//!   to it: the heartbeat holds the replica on its share for a grace period of two
//!   beats while every replica pays, so that Redis counts what was admitted.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use foldhash::fast::RandomState;

use super::{
    Charge, LocalQuota, QuotaDecision, QuotaError, QuotaManager as _, QuotaPlan, QuotaPlans,
};
use crate::{Clock, Moment, TenantContext, TenantId};

/// The replica's share of the plans: each divided by `n`.
struct Share {
    n: u32,
    local: LocalQuota,
}

impl Share {
    fn new(plans: &QuotaPlans, n: u32) -> Self {
        Self {
            n,
            local: LocalQuota::new(plans.divided(n)),
        }
    }
}

/// What this replica admitted for one tenant while Redis was away.
pub(super) struct Owed {
    pub(super) plan: Arc<QuotaPlan>,
    /// Rate units admitted since the last payment.
    pub(super) rate: u32,
    /// Per budget of the plan: (period index, units owed in it). Below zero when
    /// corrections refunded more than was admitted here (a request Redis charged before
    /// the outage, settled during it): a refund owed to Redis.
    pub(super) budgets: Vec<(u64, i64)>,
}

impl Owed {
    /// Nothing owed yet under `plan`.
    fn new(plan: &Arc<QuotaPlan>) -> Self {
        Self {
            plan: Arc::clone(plan),
            rate: 0,
            budgets: vec![(0, 0); plan.budgets().len()],
        }
    }

    /// The same debt under `plan`, the tenant's plan now: Redis keeps budgets per
    /// tenant and period, whatever the tier, so what is owed for a period stays owed
    /// where the new plan has a budget of that period; so does the rate.
    fn rebase(&mut self, plan: &Arc<QuotaPlan>) {
        if Arc::ptr_eq(&self.plan, plan) {
            return;
        }
        let old = self.plan.budgets();
        let budgets = plan
            .budgets()
            .iter()
            .map(|b| {
                old.iter()
                    .position(|o| o.period == b.period)
                    .and_then(|i| self.budgets.get(i).copied())
                    .unwrap_or((0, 0))
            })
            .collect();
        self.plan = Arc::clone(plan);
        self.budgets = budgets;
    }

    /// Adds `units` (below zero: a refund) owed for the periods of the second `at`,
    /// per budget: a debt of an earlier period, which Redis would no longer take, is
    /// replaced; a correction of an earlier period than the debt's changes nothing
    /// that still counts.
    fn add(&mut self, at: u64, units: i64) {
        let plan = Arc::clone(&self.plan);
        for (b, o) in plan.budgets().iter().zip(self.budgets.iter_mut()) {
            let period = b.period.locate(at).0;
            if o.0 == period {
                o.1 = o.1.saturating_add(units);
            } else if o.0 < period {
                *o = (period, units);
            }
        }
    }
}

/// The local side of a Redis quota in `FallbackLocal` mode.
pub(super) struct Fallback {
    plans: QuotaPlans,
    /// The configured number of replicas: the divisor is never below it.
    floor: u32,
    /// The replicas the heartbeat last counted (0 before the first beat).
    alive: AtomicU32,
    share: ArcSwap<Share>,
    owed: DashMap<TenantId, Owed, RandomState>,
    /// Checks are decided here, not on Redis: from a failure until the heartbeat has
    /// seen Redis again for the grace period.
    local_only: AtomicBool,
    /// Beats in a row that counted fewer replicas than the plans are divided by.
    low_beats: AtomicU32,
    /// Nanoseconds since `origin` when the grace period ends (0: not started).
    grace_ends: AtomicU64,
    origin: Instant,
    /// Whether the fallback follows Redis (mirror, debt, heartbeat). `false` only for
    /// the measured comparison with the earlier design: a fresh local plan divided by
    /// the floor, and every check tried on Redis first.
    follows: bool,
    /// Whether the heartbeat task runs (spawned once, within a Tokio runtime).
    pub(super) beating: AtomicBool,
}

impl Fallback {
    pub(super) fn new(plans: QuotaPlans, floor: u32, follows: bool) -> Self {
        let floor = floor.max(1);
        Self {
            share: ArcSwap::from_pointee(Share::new(&plans, floor)),
            plans,
            floor,
            alive: AtomicU32::new(0),
            owed: DashMap::default(),
            local_only: AtomicBool::new(false),
            low_beats: AtomicU32::new(0),
            grace_ends: AtomicU64::new(0),
            origin: Instant::now(),
            follows,
            beating: AtomicBool::new(false),
        }
    }

    pub(super) fn follows(&self) -> bool {
        self.follows
    }

    /// The number every plan is divided by now.
    pub(super) fn divisor(&self) -> u32 {
        self.share.load().n
    }

    /// Whether checks are decided here without asking Redis (only ever set when the
    /// fallback follows Redis and a heartbeat runs).
    pub(super) fn local_only(&self) -> bool {
        self.local_only.load(Ordering::Acquire)
    }

    /// The heartbeat task ended (its runtime shut down): checks go to Redis again,
    /// and the next one made within a runtime starts a new heartbeat.
    pub(super) fn heartbeat_stopped(&self) {
        self.local_only.store(false, Ordering::Release);
        self.grace_ends.store(0, Ordering::Release);
        self.beating.store(false, Ordering::Release);
    }

    /// Redis failed a check: decide here until the heartbeat sees it again (when the
    /// heartbeat runs; without one, every check still tries Redis first).
    pub(super) fn redis_failed(&self) {
        if self.follows && self.beating.load(Ordering::Acquire) {
            self.grace_ends.store(0, Ordering::Release);
            self.local_only.store(true, Ordering::Release);
        }
    }

    /// A heartbeat reached Redis and counted `alive` replicas (after this replica's
    /// debts were paid). While Redis answers the share follows the count; after a
    /// failure the replica stays on its share for `grace`, then goes back to Redis.
    pub(super) fn beat(&self, alive: u32, grace: Duration) {
        self.alive.store(alive, Ordering::Release);
        if !self.local_only.load(Ordering::Acquire) {
            self.resize();
            return;
        }
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match self.grace_ends.load(Ordering::Acquire) {
            0 => {
                let ends = now.saturating_add(u64::try_from(grace.as_nanos()).unwrap_or(0));
                self.grace_ends.store(ends.max(1), Ordering::Release);
            }
            ends if now >= ends => {
                self.grace_ends.store(0, Ordering::Release);
                self.local_only.store(false, Ordering::Release);
            }
            _ => {}
        }
    }

    /// Divides the plans anew when the count changed: at once when it grew, and when
    /// it fell only once it stayed lower for three beats (a heartbeat's life), since
    /// just after an outage the replicas' beats come back one by one. Only while Redis
    /// answers: the local state is then a mirror, re-made from the next answer.
    fn resize(&self) {
        let n = self.floor.max(self.alive.load(Ordering::Acquire));
        let now = self.share.load().n;
        if n < now && self.low_beats.fetch_add(1, Ordering::AcqRel) + 1 < 3 {
            return;
        }
        self.low_beats.store(0, Ordering::Release);
        if now != n {
            self.share.store(Arc::new(Share::new(&self.plans, n)));
        }
    }

    /// Mirrors Redis's reply to a check (the `CHECK` script's layout) into the local
    /// share: what is left of the rate's burst and of each budget, divided by `n`.
    pub(super) fn observe(&self, tenant: &TenantContext, reply: &[i64]) {
        if !self.follows {
            return;
        }
        let share = self.share.load();
        let n = i64::from(share.n);
        // The rate's -1 means "no rate"; a budget's figure below zero (a correction
        // or a payment pushed it past the plan) means nothing is left.
        let part = |x: Option<&i64>| x.filter(|x| **x >= 0).map(|x| x / n);
        let left = |x: Option<&i64>| x.map(|x| (*x).max(0).unsigned_abs() / n.unsigned_abs());
        // (rate left, index of the first budget pair, the only budget reported)
        let (rate, pairs, only) = match (reply.first(), reply.get(1)) {
            // Allowed: (rate left, its reset, Redis's second) before the pairs.
            (Some(1), _) => (part(reply.get(1)), 4, None),
            (Some(0), Some(1)) => {
                let i = reply.get(2).and_then(|i| usize::try_from(*i).ok());
                (part(reply.get(5)), 0, i.and_then(|i| i.checked_sub(1)))
            }
            (Some(0), Some(2)) => (part(reply.get(3)), 5, None),
            _ => return,
        };
        let rate = rate.map(|r| u32::try_from(r).unwrap_or(u32::MAX));
        share.local.mirror(tenant, rate, |i| match only {
            Some(j) if i == j => left(reply.get(3)),
            Some(_) => None,
            None => left(reply.get(pairs + 2 * i)),
        });
    }

    /// A check decided on this replica's share; what it admits is owed to Redis.
    pub(super) fn decide(
        &self,
        tenant: &TenantContext,
        plan: &Arc<QuotaPlan>,
        cost: u32,
        at: &mut Moment,
    ) -> Result<QuotaDecision, QuotaError> {
        let decision = match self.share.load().local.check(tenant, cost, at).now() {
            Some(d) => d?,
            None => return Err(QuotaError::new("no local decision")),
        };
        // Owed only where a heartbeat (which runs only when the fallback follows
        // Redis) will pay it. A shadow plan's would-be refusal passes but, as on
        // Redis, spends nothing.
        let spent = decision.allowed && !decision.would_deny && cost > 0;
        if spent && self.beating.load(Ordering::Acquire) {
            let now = Clock::system().unix_secs();
            let mut owed = self
                .owed
                .entry(tenant.id().clone())
                .or_insert_with(|| Owed::new(plan));
            owed.rebase(plan);
            owed.rate = owed.rate.saturating_add(plan.rate_cost(cost));
            owed.add(now, i64::from(cost));
        }
        Ok(decision)
    }

    /// A charge corrected while deciding here, whoever admitted it (this replica, or
    /// Redis just before it went away): the share follows it, and so does what is
    /// owed to Redis, in the periods the charge was made in.
    pub(super) fn settle(
        &self,
        tenant: &TenantContext,
        plan: &Arc<QuotaPlan>,
        charge: Charge,
        actual: u32,
    ) {
        // A local share settles now: nothing to wait for.
        let _ = self.share.load().local.settle(tenant, charge, actual).now();
        if !self.beating.load(Ordering::Acquire) {
            return;
        }
        let delta = i64::from(actual) - i64::from(charge.units());
        let at = charge
            .charged_at()
            .unwrap_or_else(|| Clock::system().unix_secs());
        let mut owed = self
            .owed
            .entry(tenant.id().clone())
            .or_insert_with(|| Owed::new(plan));
        owed.rebase(plan);
        owed.add(at, delta);
    }

    /// Every debt, taken out to be paid; with each, the rate units to charge: those
    /// admitted since the last payment that are still within the local window.
    pub(super) fn take_owed(&self) -> Vec<(TenantId, Owed, u32)> {
        if self.owed.is_empty() {
            return Vec::new();
        }
        let ids: Vec<TenantId> = self.owed.iter().map(|e| e.key().clone()).collect();
        let share = self.share.load();
        ids.into_iter()
            .filter_map(|id| {
                let (id, owed) = self.owed.remove(id.as_str())?;
                let rate = owed.rate.min(share.local.rate_spent(id.as_str()));
                Some((id, owed, rate))
            })
            .collect()
    }

    /// A debt Redis did not take: kept (added to what was owed since) for the next beat.
    pub(super) fn restore(&self, id: TenantId, owed: Owed) {
        match self.owed.entry(id) {
            dashmap::Entry::Vacant(v) => {
                v.insert(owed);
            }
            dashmap::Entry::Occupied(mut e) => {
                let e = e.get_mut();
                e.rate = e.rate.saturating_add(owed.rate);
                let mut owed = owed;
                owed.rebase(&e.plan);
                for (mine, old) in e.budgets.iter_mut().zip(&owed.budgets) {
                    if mine.0 == old.0 {
                        mine.1 = mine.1.saturating_add(old.1);
                    } else if mine.0 < old.0 {
                        *mine = *old;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        quota::{Period, QuotaPlan},
        SourceKind, TenantRecord,
    };

    fn ctx(id: &str, tier: &str) -> TenantContext {
        let id = TenantId::parse(id).unwrap();
        let record = Arc::new(TenantRecord::new(id.clone(), tier));
        TenantContext::new(id, SourceKind::Header, record, None)
    }

    fn fallback(n: u32) -> (Fallback, Arc<QuotaPlan>) {
        let plans = QuotaPlans::builder()
            .tier("pro", QuotaPlan::per_second(1_000).budget(100, Period::Day))
            .tier(
                "shadow",
                QuotaPlan::per_second(1_000)
                    .budget(1, Period::Day)
                    .shadow(true),
            )
            .build()
            .unwrap();
        let plan = Arc::clone(plans.plan_for(&ctx("x", "pro")).unwrap());
        let f = Fallback::new(plans, n, true);
        f.beating.store(true, Ordering::Release);
        (f, plan)
    }

    fn admitted(f: &Fallback, t: &TenantContext, plan: &Arc<QuotaPlan>) -> usize {
        (0..200)
            .filter(|_| f.decide(t, plan, 1, &mut Moment::now()).unwrap().allowed)
            .count()
    }

    #[test]
    fn a_reply_is_mirrored_as_each_replicas_share_and_a_spent_budget_as_nothing_left() {
        let (f, plan) = fallback(4);
        let t = ctx("acme", "pro");
        // Allowed: rate left 900, budget 41 left (a share of 10 each).
        f.observe(&t, &[1, 900, 0, 1_767_225_600, 41, 3600]);
        assert_eq!(admitted(&f, &t, &plan), 10);
        // A budget pushed below zero by a correction: nothing left, not "unknown".
        let u = ctx("umbrella", "pro");
        f.observe(&u, &[0, 1, 1, -3, 3600, 900, 0]);
        assert_eq!(admitted(&f, &u, &plan), 0);
        // A broken reply changes nothing.
        let g = ctx("globex", "pro");
        f.observe(&g, &[7]);
        f.observe(&g, &[]);
        assert_eq!(admitted(&f, &g, &plan), 25, "a fresh share of 100 / 4");
    }

    #[test]
    fn what_is_admitted_is_owed_once_and_a_shadow_pass_is_not() {
        let (f, plan) = fallback(1);
        let t = ctx("acme", "pro");
        assert_eq!(admitted(&f, &t, &plan), 100);
        let owed = f.take_owed();
        assert_eq!(owed.len(), 1);
        let (id, debt, _) = &owed[0];
        assert_eq!(id.as_str(), "acme");
        assert_eq!(debt.budgets[0].1, 100);
        assert!(Arc::ptr_eq(&debt.plan, &plan));
        assert!(f.take_owed().is_empty(), "taken once");
        // Not paid: restored, and added to what was owed since.
        let (id, debt, _) = owed.into_iter().next().unwrap();
        f.restore(id, debt);
        assert_eq!(f.take_owed()[0].1.budgets[0].1, 100);

        let s = ctx("soylent", "shadow");
        let shadow = Arc::clone(f.plans.plan_for(&s).unwrap());
        assert_eq!(
            admitted(&f, &s, &shadow),
            200,
            "shadow mode refuses nothing"
        );
        let owed = f.take_owed();
        assert_eq!(owed[0].1.budgets[0].1, 1, "only the one real pass is owed");
    }

    #[test]
    fn a_stopped_heartbeat_sends_checks_back_to_redis() {
        let (f, _) = fallback(1);
        f.redis_failed();
        assert!(f.local_only());
        f.heartbeat_stopped();
        assert!(!f.local_only());
        assert!(!f.beating.load(Ordering::Acquire));
        // Without a heartbeat, a failure no longer holds checks locally.
        f.redis_failed();
        assert!(!f.local_only());
    }

    #[test]
    fn the_share_returns_to_redis_after_the_grace_and_follows_the_count() {
        let (f, _) = fallback(1);
        f.beat(4, Duration::from_secs(3600));
        assert_eq!(f.divisor(), 4, "more replicas: divided at once");
        f.redis_failed();
        f.beat(4, Duration::ZERO); // the grace starts
        assert!(f.local_only());
        f.beat(4, Duration::ZERO); // and has passed
        assert!(!f.local_only());
        // Fewer replicas: only after three beats in a row.
        f.beat(2, Duration::ZERO);
        f.beat(2, Duration::ZERO);
        assert_eq!(f.divisor(), 4);
        f.beat(2, Duration::ZERO);
        assert_eq!(f.divisor(), 2);
    }
}
