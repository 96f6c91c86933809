use std::sync::atomic::AtomicU64;

use governor::clock::FakeRelativeClock;

use super::*;
use crate::{
    quota::{Period, QuotaPlans},
    SourceKind, TenantRecord,
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

/// A rate-only plan decides as governor's own limiter does: the same admissions, the
/// same burst left after each, the same wait on each refusal, the same refusal (never)
/// of a cost above the burst, on one fake clock, over a pseudo-random run of costs and
/// gaps.
#[test]
fn a_rate_only_plan_decides_as_governors_limiter() {
    use std::num::NonZeroU32;

    use governor::{middleware::StateInformationMiddleware, RateLimiter};

    let plans = [
        QuotaPlan::per_second(5).burst(3),
        QuotaPlan::rate(7, Duration::from_secs(2)).burst(4),
        QuotaPlan::per_minute(1),
    ];
    for plan in plans {
        let quota = plan.rate_limit().and_then(|r| r.quota()).unwrap();
        let burst = plan.rate_limit().unwrap().burst;
        let built = QuotaPlans::builder().tier("t", plan).build().unwrap();
        let (q, clock, _) = manager(built);
        let governor = RateLimiter::direct_with_clock(quota, clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        let tenant = ctx("globex", "t");
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let cost = u32::try_from(x % u64::from(burst + 2)).unwrap().max(1);
            let d = q.decide(&tenant, cost);
            let n = NonZeroU32::new(cost).unwrap();
            match governor.check_n(n) {
                Ok(Ok(state)) => {
                    assert!(d.allowed, "step {step}: governor admits {cost}");
                    let rate = d.rate.unwrap();
                    assert_eq!(rate.remaining, state.remaining_burst_capacity(), "{step}");
                }
                Ok(Err(refusal)) => {
                    assert!(!d.allowed, "step {step}: governor refuses {cost}");
                    assert_eq!(
                        d.retry_after,
                        Some(refusal.wait_time_from(clock.now())),
                        "{step}"
                    );
                }
                Err(_) => {
                    assert!(!d.allowed && d.retry_after.is_none(), "{step}: never fits");
                }
            }
            clock.advance(Duration::from_millis((x >> 20) % 900));
        }
    }
}
