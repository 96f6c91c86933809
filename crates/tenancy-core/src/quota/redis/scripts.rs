//! The Redis side of a quota: the Lua scripts, each run atomically (`EVALSHA`), and
//! the Rust that writes their arguments and reads their replies. The scripts live in
//! `scripts/*.lua` beside this file; `PRELUDE` is put before each that reads Redis's
//! clock or a calendar period.
//!
//! | script | keys | does |
//! | --- | --- | --- |
//! | `CHECK` | the tenant's base | budgets read, GCRA for the rate, budgets charged, the charge recorded for `VOID` |
//! | `VOID` | the tenant's base | gives back a charge given up on (or marks it so that it never charges) |
//! | `SETTLE` | the tenant's base | corrects the budgets of a charge's periods by the actual cost |
//! | `RECONCILE` | the tenant's base | charges what a replica admitted while Redis was away |
//! | `HEARTBEAT` | the replicas' set | counts the live replicas |

use std::{sync::Arc, time::Duration};

use super::super::{
    fallback::Owed, refuse, BudgetState, Period, QuotaDecision, QuotaLimit, QuotaPlan, RateState,
};

/// Redis's clock, and the calendar period (index, seconds left) of a budget code:
/// 1 hour, 2 day, 3 month (UTC). Shared by both scripts.
pub(super) const PRELUDE: &str = include_str!("scripts/prelude.lua");

/// One check: budgets first (read only), then GCRA for the rate on Redis's own clock,
/// then the budgets are charged; all or nothing, atomically. Calendar periods come
/// from Redis's `TIME` too, so replicas with skewed clocks agree.
pub(super) const CHECK: &str = include_str!("scripts/check.lua");

/// Voids the check of charge id ARGV[1]: gives back the budgets' units it charged
/// when it ran (as refunds do, the rate keeps its units: a window's worth at most), or,
/// when it has not run yet, marks it so that it charges nothing when it does. Safe to
/// run more than once, and in either order with the check.
pub(super) const VOID: &str = include_str!("scripts/void.lua");

/// Corrects the budgets by ARGV[1] units (negative: a refund), never below zero, in
/// the periods of the second ARGV[2] (the charge's, from `CHECK`; 0: now): a period
/// that has ended since keeps the correction to itself.
pub(super) const SETTLE: &str = include_str!("scripts/settle.lua");

/// Charges Redis with what a replica admitted on its own while Redis was away: the
/// rate's units still within the window (its arrival time moved on, at most a full
/// window), and each budget's units if their period is still the current one.
pub(super) const RECONCILE: &str = include_str!("scripts/reconcile.lua");

/// A replica's heartbeat: its id in a sorted set scored by its expiry (Redis's clock),
/// the expired ones dropped; answers how many replicas are alive.
pub(super) const HEARTBEAT: &str = include_str!("scripts/heartbeat.lua");

pub(super) fn period_code(p: Period) -> u8 {
    match p {
        Period::Hour => 1,
        Period::Day => 2,
        Period::Month => 3,
    }
}

/// The arguments of one check, in the order the script reads them: the GCRA interval
/// and limit, the cost, the budgets (count, then units and period code of each), and
/// the rate's cost.
pub(super) fn check_args(plan: &QuotaPlan, cost: u32, mut push: impl FnMut(i128)) {
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
pub(super) fn gcra(plan: &QuotaPlan) -> (i64, i64) {
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
pub(super) fn tenant_key(prefix: &str, id: &str) -> String {
    format!("{prefix}:{{{id}}}")
}

/// The arguments of `RECONCILE`: the GCRA interval and limit, the rate units, then
/// per budget its period code, period index and units.
pub(super) fn reconcile_args(owed: &Owed, rate: u32, mut push: impl FnMut(i128)) {
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

pub(super) fn decision_from(
    plan: &Arc<QuotaPlan>,
    cost: u32,
    reply: &[i64],
) -> Option<QuotaDecision> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut dyn FnMut(i128))) -> Vec<i128> {
        let mut out = Vec::new();
        f(&mut |a| out.push(a));
        out
    }

    fn plan() -> Arc<QuotaPlan> {
        // 10 a second (100 ms apart), a burst of 20; 1,000 a day and 50 an hour.
        Arc::new(
            QuotaPlan::per_second(10)
                .burst(20)
                .budget(1_000, Period::Day)
                .budget(50, Period::Hour),
        )
    }

    #[test]
    fn a_check_passes_gcra_in_microseconds_then_budgets_then_the_rate_cost() {
        let plan = plan();
        assert_eq!(gcra(&plan), (100_000, 2_000_000));
        let got = args(|push| check_args(&plan, 3, push));
        assert_eq!(got, [100_000, 2_000_000, 3, 2, 1_000, 2, 50, 1, 3]);
        // A plan without a rate: no interval, no window; the rate cost still last.
        let budget_only = QuotaPlan::unlimited().budget(7, Period::Month);
        assert_eq!(gcra(&budget_only), (0, 0));
        assert_eq!(
            args(|push| check_args(&budget_only, 2, push)),
            [0, 0, 2, 1, 7, 3, 2]
        );
    }

    #[test]
    fn a_rate_finer_than_a_microsecond_still_moves() {
        let fast = QuotaPlan::rate(10_000_000, Duration::from_secs(1));
        assert_eq!(gcra(&fast).0, 1);
    }

    #[test]
    fn period_codes_are_the_scripts_hour_day_month() {
        assert_eq!(
            [Period::Hour, Period::Day, Period::Month].map(period_code),
            [1, 2, 3]
        );
    }

    #[test]
    fn a_tenants_keys_share_one_hash_tag() {
        assert_eq!(tenant_key("tq", "acme"), "tq:{acme}");
    }

    #[test]
    fn reconcile_sends_each_budgets_period_and_units_signed() {
        let plan = plan();
        let owed = Owed {
            plan: Arc::clone(&plan),
            rate: 4,
            budgets: vec![(20_000, 12), (480_000, -3)],
        };
        assert_eq!(
            args(|push| reconcile_args(&owed, 4, push)),
            [100_000, 2_000_000, 4, 2, 2, 20_000, 12, 1, 480_000, -3]
        );
    }

    #[test]
    fn an_admission_reads_the_rate_the_moment_and_the_tightest_budget() {
        let plan = plan();
        // allowed, rate 5 left resetting in 250 ms, charged at second 1_700_000_000;
        // the day has 900 left (3,600 s), the hour 40 (60 s).
        let d = decision_from(
            &plan,
            1,
            &[1, 5, 250_000, 1_700_000_000, 900, 3_600, 40, 60],
        )
        .unwrap();
        assert!(d.allowed && !d.would_deny);
        assert_eq!(d.charged_at, Some(1_700_000_000));
        let rate = d.rate.unwrap();
        assert_eq!(
            (rate.remaining, rate.reset),
            (5, Duration::from_millis(250))
        );
        let budget = d.budget.unwrap();
        assert_eq!(budget.period, Period::Hour);
        assert_eq!(
            (budget.remaining, budget.reset),
            (40, Duration::from_secs(60))
        );
        assert_eq!(d.refused_by, None);
    }

    #[test]
    fn a_budget_refusal_names_its_period_and_waits_for_it_unless_it_never_fits() {
        let plan = plan();
        // refused by budget 2 (the hour): 0 left, 120 s to go; rate 3 left.
        let d = decision_from(&plan, 5, &[0, 1, 2, 0, 120, 3, 10_000]).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.refused_by, Some(QuotaLimit::Budget(Period::Hour)));
        assert_eq!(d.retry_after, Some(Duration::from_secs(120)));
        assert_eq!(d.rate.unwrap().remaining, 3);
        // A cost above the budget's whole allowance never fits: no Retry-After.
        let d = decision_from(&plan, 51, &[0, 1, 2, 0, 120, 3, 10_000]).unwrap();
        assert_eq!(d.retry_after, None);
        // A budget index the plan does not have is a reply the manager cannot read.
        assert!(decision_from(&plan, 5, &[0, 1, 3, 0, 120, 3, 10_000]).is_none());
        assert!(decision_from(&plan, 5, &[0, 1, 0, 0, 120, 3, 10_000]).is_none());
    }

    #[test]
    fn a_rate_refusal_waits_for_the_rate_unless_the_cost_exceeds_the_burst() {
        let plan = plan();
        let d = decision_from(&plan, 1, &[0, 0, 0, 0, 100_000, 900, 3_600, 40, 60]).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.refused_by, Some(QuotaLimit::Rate));
        assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(d.budget.unwrap().remaining, 40);
        let d = decision_from(&plan, 21, &[0, 0, 0, 0, 100_000, 900, 3_600, 40, 60]).unwrap();
        assert_eq!(d.retry_after, None);
    }

    #[test]
    fn a_shadow_plan_lets_a_refusal_through_marked() {
        let plan = Arc::new(QuotaPlan::per_second(1).shadow(true));
        let d = decision_from(&plan, 1, &[0, 0, 0, 0, 1_000_000]).unwrap();
        assert!(d.allowed && d.would_deny);
    }

    #[test]
    fn a_short_or_unknown_reply_is_no_decision() {
        let plan = plan();
        for reply in [
            &[][..],
            &[2, 0, 0, 0],
            &[1, 5, 250_000],
            &[1, 5, 250_000, 1_700_000_000, 900],
            &[0, 1, 2, 0],
            &[0, 0, 0, 0],
        ] {
            assert!(decision_from(&plan, 1, reply).is_none(), "{reply:?}");
        }
    }
}
