//! The plans as the manager finds them: each with its rate's GCRA figures worked out once, and found by index.

use super::*;

/// A refusal by the rate: how long to wait (`None`: never), and the rate's state.
pub(super) type Refused = (Option<Duration>, RateState);

/// A plan, with its rate's GCRA figures worked out once.
pub(super) struct Params {
    pub(super) plan: Arc<QuotaPlan>,
    /// Nanoseconds per unit (the emission interval); 0 when the plan has no rate.
    pub(super) t: u64,
    /// The burst tolerance, `t × (burst − 1)`.
    pub(super) tau: u64,
    /// `tau + t`: the whole burst's span, worked out once for `rate_at`.
    pub(super) span: u64,
    pub(super) burst: u32,
    pub(super) interval: Duration,
    pub(super) window: Duration,
}

impl Params {
    pub(super) fn new(plan: &Arc<QuotaPlan>) -> Self {
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
    pub(super) fn admit(
        &self,
        tat: &mut u64,
        now: u64,
        n: u64,
    ) -> Result<Option<RateState>, Refused> {
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
    pub(super) fn rate_at(&self, tat: u64, now: u64, wait: Duration) -> RateState {
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
pub(super) struct PlanIndex {
    pub(super) params: Vec<Params>,
    pub(super) tenants: HashMap<TenantId, u32, RandomState>,
    pub(super) tiers: Vec<(Box<str>, u32)>,
    pub(super) tier_map: HashMap<Box<str>, u32, RandomState>,
    pub(super) unknown: Option<u32>,
}

impl PlanIndex {
    /// Up to this many tiers are compared in place; more are hashed.
    pub(super) const SCAN: usize = 8;

    pub(super) fn new(plans: &QuotaPlans) -> Self {
        let mut params = Vec::new();
        let mut add = |p: &Arc<QuotaPlan>| {
            params.push(Params::new(p));
            u32::try_from(params.len() - 1).expect("fewer than 2^32 plans")
        };
        let crate::quota::plan::PlanParts {
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
    pub(super) fn find(&self, tenant: &TenantContext) -> Option<u32> {
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
