//! One quota check, `LocalQuota` beside the limiter it is measured against
//! (`governor`'s keyed `RateLimiter::dashmap`), on the same tenants and the same random
//! access pattern. `bench/quota.sh` runs it natively (ns/check) and under callgrind
//! (instructions/check).
//!
//! ```sh
//! cargo run --release --example quota_engine -- ENGINE TENANTS CHECKS
//! ```
//!
//! `ENGINE` is `local-budget` (a rate and a daily budget), `local-rate` (a rate only),
//! `governor` (the keyed limiter, on the same monotonic clock) or `none` (only the
//! access pattern: subtract it). Every check passes: the plans are never exhausted, so
//! each does its whole work. Prints `ns/check` for the timed loop; setup (the
//! tenants, one warm-up check each) is outside it.

use std::{hint::black_box, num::NonZeroU32, sync::Arc, time::Instant};

use actix_tenancy::Moment;
use actix_tenancy::{
    quota::{LocalQuota, Period, QuotaManager, QuotaPlan, QuotaPlans},
    registry::TenantRecord,
    resolve::SourceKind,
    TenantContext, TenantId,
};
use governor::{clock::MonotonicClock, Quota, RateLimiter};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: quota_engine ENGINE TENANTS CHECKS";
    let engine = args.next().expect(usage);
    let tenants: usize = args.next().and_then(|v| v.parse().ok()).expect(usage);
    let checks: u64 = args.next().and_then(|v| v.parse().ok()).expect(usage);
    let contexts: Vec<TenantContext> = (0..tenants)
        .map(|i| {
            let id = TenantId::parse(&format!("tenant-{i:07}")).expect("valid id");
            TenantContext::new(
                id.clone(),
                SourceKind::Header,
                Arc::new(TenantRecord::new(id, "pro")),
                None,
            )
        })
        .collect();
    let check: Box<dyn Fn(&TenantContext) -> bool> = match engine.as_str() {
        "local-budget" | "local-rate" => {
            let mut plan = QuotaPlan::per_second(1_000_000_000);
            if engine == "local-budget" {
                plan = plan.budget(u64::MAX / 2, Period::Day);
            }
            let plans = QuotaPlans::builder()
                .tier("pro", plan)
                .build()
                .expect("plans");
            let q = LocalQuota::new(plans);
            Box::new(move |t| {
                q.check(t, 1, &mut Moment::now())
                    .now()
                    .is_some_and(|d| d.is_ok_and(|d| d.allowed))
            })
        }
        "governor" => {
            let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"));
            let limiter = RateLimiter::dashmap_with_clock(quota, MonotonicClock);
            Box::new(move |t| limiter.check_key(t.id()).is_ok())
        }
        "none" => Box::new(|t| t.id().as_str().len() > 1),
        other => panic!("unknown engine {other}; {usage}"),
    };
    for t in &contexts {
        assert!(check(t), "every warm-up check passes");
    }
    // xorshift64: the same pseudo-random tenant order for every engine.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let n = contexts.len() as u64;
    let started = Instant::now();
    let mut passed = 0u64;
    for _ in 0..checks {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        passed += u64::from(check(black_box(&contexts[(x % n) as usize])));
    }
    let elapsed = started.elapsed();
    assert_eq!(passed, checks, "every timed check passes");
    println!(
        "{engine} tenants={tenants} checks={checks} ns/check={:.1}",
        elapsed.as_nanos() as f64 / checks as f64
    );
}
