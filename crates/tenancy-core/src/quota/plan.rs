use std::{collections::HashMap, fmt, num::NonZeroU32, sync::Arc, time::Duration};

use foldhash::fast::RandomState;

use crate::{error::ConfigError, TenantContext, TenantId};

/// A budget period. Budgets are **calendar-aligned in UTC**: a daily budget resets at
/// 00:00 UTC, a monthly one on the 1st. That is what tenants are billed by and what
/// they can reason about ("resets at midnight UTC"), and it needs one counter per
/// budget; a rolling window would need a record per unit or an approximation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Period {
    /// Resets at the start of every UTC hour.
    Hour,
    /// Resets at 00:00 UTC.
    Day,
    /// Resets at 00:00 UTC on the first day of the month.
    Month,
}

impl Period {
    /// The period's name in headers (`hour`, `day`, `month`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// The index of the period containing `unix_secs`, and the seconds until it ends.
    pub(crate) fn locate(self, unix_secs: u64) -> (u64, u64) {
        match self {
            Self::Hour => (unix_secs / 3600, 3600 - unix_secs % 3600),
            Self::Day => (unix_secs / 86_400, 86_400 - unix_secs % 86_400),
            Self::Month => {
                let days = unix_secs / 86_400;
                let (y, m) = civil_month(days);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let next = days_from_civil(ny, nm) * 86_400;
                (y * 12 + (m - 1), next.saturating_sub(unix_secs))
            }
        }
    }

    /// The period's nominal length, for the `w` of the `RateLimit-Policy` header.
    pub(crate) const fn nominal_secs(self) -> u64 {
        match self {
            Self::Hour => 3600,
            Self::Day => 86_400,
            Self::Month => 2_592_000,
        }
    }
}

/// Year and month (1-12) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m)
}

/// Days since 1970-01-01 of the first day of month `m` of year `y`.
fn days_from_civil(y: u64, m: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A rate: `amount` units per `per`, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units replenished per `per`.
    pub amount: u32,
    /// The replenishment period.
    pub per: Duration,
    /// The most units that can pass at once.
    pub burst: u32,
}

impl Rate {
    pub(crate) fn quota(&self) -> Option<governor::Quota> {
        let interval = self.per.checked_div(self.amount)?;
        let burst = NonZeroU32::new(self.burst)?;
        Some(governor::Quota::with_period(interval)?.allow_burst(burst))
    }

    /// The emission interval, `per / amount` (`per` for a zero amount), and the time
    /// to replenish a full burst: the window `w` of `RateLimit-Policy`.
    fn timing(&self) -> (Duration, Duration) {
        let interval = self.per.checked_div(self.amount).unwrap_or(self.per);
        (interval, interval * self.burst)
    }

    /// The window `w` of `RateLimit-Policy`.
    pub(crate) fn window(&self) -> Duration {
        self.timing().1
    }
}

/// A budget: at most `units` per calendar `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Units per period.
    pub units: u64,
    /// The calendar period.
    pub period: Period,
}

/// What one tenant may consume: a rate with a burst, and budgets per period. Built in
/// code:
///
/// ```
/// use std::time::Duration;
/// use tenancy_core::quota::{Period, QuotaPlan};
///
/// // 100 requests per second with bursts of 200, and 1,000,000 tokens a day.
/// let pro = QuotaPlan::per_second(100).burst(200).budget(1_000_000, Period::Day);
/// // 10,000 requests a month, no rate limit.
/// let batch = QuotaPlan::unlimited().budget(10_000, Period::Month);
/// ```
///
/// One request costs one unit unless a cost estimator (each adapter's `CostEstimator`) says
/// otherwise; the same units count against the rate and every budget, unless
/// [`rate_counts_requests`](Self::rate_counts_requests) makes the rate count requests.
/// The quota stage charges at least its `min_cost` (1 by default); with `min_cost(0)`,
/// a plan that [counts requests](Self::rate_counts_requests) still rates requests that
/// cost nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct QuotaPlan {
    rate: Option<Rate>,
    budgets: Vec<Budget>,
    shadow: bool,
    rate_per_request: bool,
    /// The `RateLimit-Policy` value, computed once when the plans are built: as text,
    /// and as the header value of each framework whose adapter is built.
    policy: Option<Box<str>>,
    pub(crate) policy_header: crate::compat::Header,
    /// The rate's emission interval and window, computed once when the plans are built.
    timing: Option<(Duration, Duration)>,
}

impl QuotaPlan {
    /// No rate limit and no budget.
    pub fn unlimited() -> Self {
        Self {
            rate: None,
            budgets: Vec::new(),
            shadow: false,
            rate_per_request: false,
            policy: None,
            policy_header: crate::compat::Header::default(),
            timing: None,
        }
    }

    /// `amount` units per `per`, with a burst of `amount`.
    pub fn rate(amount: u32, per: Duration) -> Self {
        Self::unlimited().with_rate(amount, per)
    }

    /// `amount` units per second, with a burst of `amount`.
    pub fn per_second(amount: u32) -> Self {
        Self::rate(amount, Duration::from_secs(1))
    }

    /// `amount` units per minute, with a burst of `amount`.
    pub fn per_minute(amount: u32) -> Self {
        Self::rate(amount, Duration::from_secs(60))
    }

    /// Sets the rate (keeps the budgets); the burst becomes `amount`.
    pub fn with_rate(mut self, amount: u32, per: Duration) -> Self {
        self.rate = Some(Rate {
            amount,
            per,
            burst: amount,
        });
        self
    }

    /// Sets the burst: how many units can pass at once after a quiet spell.
    pub fn burst(mut self, burst: u32) -> Self {
        if let Some(rate) = &mut self.rate {
            rate.burst = burst;
        }
        self
    }

    /// Adds a budget of `units` per calendar `period`.
    pub fn budget(mut self, units: u64, period: Period) -> Self {
        self.budgets.push(Budget { units, period });
        self
    }

    /// Whether the rate counts requests (one each) instead of the request's cost, which
    /// then counts against the budgets only: "5 requests a second, and 1,000 tokens a
    /// day" for an API whose requests cost tokens.
    pub fn rate_counts_requests(mut self, on: bool) -> Self {
        self.rate_per_request = on;
        self
    }

    /// What a request of `cost` units takes from the rate.
    pub(crate) fn rate_cost(&self, cost: u32) -> u32 {
        if self.rate_per_request {
            1
        } else {
            cost
        }
    }

    /// Shadow mode: the quota is computed, would-deny decisions are logged, counted and
    /// marked with `X-Quota-Shadow: would-deny`, but requests pass. How to roll out a new
    /// limit safely.
    pub fn shadow(mut self, on: bool) -> Self {
        self.shadow = on;
        self
    }

    /// The rate, if any.
    pub fn rate_limit(&self) -> Option<&Rate> {
        self.rate.as_ref()
    }

    /// The budgets.
    pub fn budgets(&self) -> &[Budget] {
        &self.budgets
    }

    /// Whether the plan is in shadow mode.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// The `RateLimit-Policy` field for this plan (draft-ietf-httpapi-ratelimit-headers-10):
    /// `"rate";q=<burst>;w=<seconds to refill the burst>`, then `"<period>";q=<units>;w=<seconds>`
    /// per budget. `None` for an unlimited plan, and for a plan not yet built into
    /// [`QuotaPlans`] (computed once, there).
    pub fn policy(&self) -> Option<&str> {
        self.policy.as_deref()
    }

    /// The rate's emission interval (`per / amount`) and window (`interval * burst`).
    pub(crate) fn rate_timing(&self) -> Option<(Duration, Duration)> {
        self.timing.or_else(|| self.rate.as_ref().map(Rate::timing))
    }

    fn with_policy(mut self) -> Self {
        self.timing = self.rate.as_ref().map(Rate::timing);
        let mut items = Vec::new();
        if let Some(r) = &self.rate {
            let w = r.window().as_secs_f64().ceil().max(1.0) as u64;
            items.push(format!("\"rate\";q={};w={w}", r.burst));
        }
        for b in &self.budgets {
            items.push(format!(
                "\"{}\";q={};w={}",
                b.period.as_str(),
                b.units,
                b.period.nominal_secs()
            ));
        }
        self.policy = (!items.is_empty()).then(|| items.join(", ").into_boxed_str());
        self.policy_header = crate::compat::Header::new(self.policy.as_deref());
        self
    }

    /// This plan shared by `n` peers: rate, burst and budgets divided by `n` (at
    /// least 1 each).
    pub fn divided(&self, n: u32) -> QuotaPlan {
        let n = n.max(1);
        let rate = self.rate.map(|r| Rate {
            amount: (r.amount / n).max(1),
            per: r.per,
            burst: (r.burst / n).max(1),
        });
        let budgets = self
            .budgets
            .iter()
            .map(|b| Budget {
                units: (b.units / u64::from(n)).max(1),
                period: b.period,
            })
            .collect();
        QuotaPlan {
            rate,
            budgets,
            shadow: self.shadow,
            rate_per_request: self.rate_per_request,
            policy: None,
            policy_header: crate::compat::Header::default(),
            timing: None,
        }
        .with_policy()
    }

    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let bad = |reason: &'static str| ConfigError::invalid("quota plan", name, reason);
        if let Some(rate) = &self.rate {
            if rate.amount == 0 || rate.burst == 0 || rate.per.is_zero() {
                return Err(bad("a rate needs a positive amount, burst and period"));
            }
            if rate.quota().is_none() {
                return Err(bad("the rate is finer than one unit per nanosecond"));
            }
        }
        if self.budgets.iter().any(|b| b.units == 0) {
            return Err(bad("a budget of zero units lets nothing through"));
        }
        Ok(())
    }
}

/// What happens to a tenant whose tier has no plan.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum UnknownTier {
    /// Reject its requests: `429 quota_exceeded`, with no `Retry-After` (the default:
    /// a tier nobody priced is a mistake to surface, not to serve for free).
    Reject,
    /// Use this plan.
    Plan(Arc<QuotaPlan>),
}

/// Plans by tier, with per-tenant overrides; tuned in code.
///
/// ```
/// use std::time::Duration;
/// use tenancy_core::quota::{Period, QuotaPlan, QuotaPlans};
/// use tenancy_core::TenantId;
///
/// let plans = QuotaPlans::builder()
///     .tier("free", QuotaPlan::per_second(5).budget(1_000, Period::Day))
///     .tier("pro", QuotaPlan::per_second(50).budget(100_000, Period::Day))
///     .tier("enterprise", QuotaPlan::per_second(500).burst(1_000))
///     .tenant(TenantId::parse("acme").unwrap(), QuotaPlan::per_second(80))
///     .build()
///     .unwrap();
/// ```
#[derive(Clone)]
pub struct QuotaPlans {
    tiers: HashMap<String, Arc<QuotaPlan>, RandomState>,
    tenants: HashMap<TenantId, Arc<QuotaPlan>, RandomState>,
    unknown: UnknownTier,
}

impl fmt::Debug for QuotaPlans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaPlans")
            .field("tiers", &self.tiers)
            .field("tenants", &self.tenants)
            .field("unknown", &self.unknown)
            .finish()
    }
}

impl QuotaPlans {
    /// A builder.
    pub fn builder() -> QuotaPlansBuilder {
        QuotaPlansBuilder {
            plans: QuotaPlans {
                tiers: HashMap::default(),
                tenants: HashMap::default(),
                unknown: UnknownTier::Reject,
            },
        }
    }

    /// The plan of a tenant: its own override, else its tier's, else the unknown-tier
    /// rule (`None`: reject).
    pub fn plan_for(&self, tenant: &TenantContext) -> Option<&Arc<QuotaPlan>> {
        self.tenants
            .get(tenant.id())
            .or_else(|| self.tiers.get(tenant.tier()))
            .or(match &self.unknown {
                UnknownTier::Reject => None,
                UnknownTier::Plan(plan) => Some(plan),
            })
    }
}

/// A [`QuotaPlans`] taken apart, for a manager that indexes its plans.
pub(crate) struct PlanParts<'a> {
    pub(crate) tiers: &'a HashMap<String, Arc<QuotaPlan>, RandomState>,
    pub(crate) tenants: &'a HashMap<TenantId, Arc<QuotaPlan>, RandomState>,
    pub(crate) unknown: &'a UnknownTier,
}

impl QuotaPlans {
    /// The plans by tier, by tenant, and for an unknown tier.
    pub(crate) fn parts(&self) -> PlanParts<'_> {
        PlanParts {
            tiers: &self.tiers,
            tenants: &self.tenants,
            unknown: &self.unknown,
        }
    }

    /// Every plan divided by `n` (see [`QuotaPlan::divided`]): what one of `n` peers
    /// may admit on its own.
    pub fn divided(&self, n: u32) -> QuotaPlans {
        let div = |p: &Arc<QuotaPlan>| Arc::new(p.divided(n));
        QuotaPlans {
            tiers: self
                .tiers
                .iter()
                .map(|(k, p)| (k.clone(), div(p)))
                .collect(),
            tenants: self
                .tenants
                .iter()
                .map(|(k, p)| (k.clone(), div(p)))
                .collect(),
            unknown: match &self.unknown {
                UnknownTier::Reject => UnknownTier::Reject,
                UnknownTier::Plan(p) => UnknownTier::Plan(div(p)),
            },
        }
    }
}

/// Builds [`QuotaPlans`].
#[derive(Debug)]
#[must_use]
pub struct QuotaPlansBuilder {
    plans: QuotaPlans,
}

impl QuotaPlansBuilder {
    /// The plan of every tenant on `tier`.
    pub fn tier(mut self, tier: impl Into<String>, plan: QuotaPlan) -> Self {
        let plan = Arc::new(plan.with_policy());
        self.plans.tiers.insert(tier.into(), plan);
        self
    }

    /// A plan for one tenant, overriding its tier's.
    pub fn tenant(mut self, tenant: TenantId, plan: QuotaPlan) -> Self {
        let plan = Arc::new(plan.with_policy());
        self.plans.tenants.insert(tenant, plan);
        self
    }

    /// What tenants on a tier with no plan get (default: [`UnknownTier::Reject`]).
    pub fn unknown_tier(mut self, rule: UnknownTier) -> Self {
        self.plans.unknown = match rule {
            UnknownTier::Plan(plan) => UnknownTier::Plan(Arc::new((*plan).clone().with_policy())),
            reject => reject,
        };
        self
    }

    /// Checks every plan.
    pub fn build(self) -> Result<QuotaPlans, ConfigError> {
        for (tier, plan) in &self.plans.tiers {
            plan.validate(&format!("tier:{tier}"))?;
        }
        for (id, plan) in &self.plans.tenants {
            plan.validate(&format!("tenant:{id}"))?;
        }
        if let UnknownTier::Plan(plan) = &self.plans.unknown {
            plan.validate("default")?;
        }
        Ok(self.plans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_periods() {
        // 2026-11-25T10:30:00Z
        let t = 1_795_602_600;
        assert_eq!(Period::Hour.locate(t).1, 1800);
        assert_eq!(Period::Day.locate(t).1, 48_600); // 13.5 hours to midnight
                                                     // 2026-12-01T00:00:00Z is 5 days and 13.5 hours later.
        assert_eq!(Period::Month.locate(t).1, 5 * 86_400 + 48_600);
        let (nov, _) = Period::Month.locate(t);
        let (dec, _) = Period::Month.locate(t + 5 * 86_400 + 48_600);
        assert_eq!(dec, nov + 1);
        // Leap day, and a year boundary.
        assert_eq!(days_from_civil(2024, 3) - days_from_civil(2024, 2), 29);
        assert_eq!(civil_month(days_from_civil(2027, 1)), (2027, 1));
        assert_eq!(civil_month(days_from_civil(2027, 1) - 1), (2026, 12));
    }

    #[test]
    fn invalid_plans_are_config_errors() {
        for plan in [
            QuotaPlan::per_second(0),
            QuotaPlan::per_second(5).burst(0),
            QuotaPlan::rate(5, Duration::ZERO),
            QuotaPlan::unlimited().budget(0, Period::Day),
        ] {
            let res = QuotaPlans::builder().tier("free", plan).build();
            assert!(matches!(
                res,
                Err(ConfigError::Invalid {
                    setting: "quota plan",
                    ..
                })
            ));
        }
    }
}
