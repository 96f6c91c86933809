//! Memory per tracked tenant in `LocalQuota`, and what the sweep gives back: RSS
//! before, with 1,000,000 tenants, and after they have gone idle and been swept.
//!
//! ```sh
//! cargo run --release --example quota_memory -- budget   # rate + a daily budget
//! cargo run --release --example quota_memory -- rate     # a rate only
//! cargo run --release --example quota_memory -- governor # governor's keyed limiter
//! ```
//!
//! Each shape in its own process, so that one's freed memory does not count for the
//! other. The clocks are governor's fake one and a settable wall clock, so "an hour
//! later" and "the next day" come without waiting.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, UNIX_EPOCH},
};

use actix_tenancy::Moment;
use actix_tenancy::{
    quota::{LocalQuota, Period, QuotaManager, QuotaPlan, QuotaPlans},
    registry::TenantRecord,
    resolve::SourceKind,
    TenantContext, TenantId,
};
use governor::clock::FakeRelativeClock;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::var("TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let shape = std::env::args().nth(1).unwrap_or_else(|| "budget".into());
    if shape == "governor" {
        return anchor(n);
    }
    let plan = match shape.as_str() {
        "rate" => QuotaPlan::per_second(100),
        _ => QuotaPlan::per_second(100).budget(1_000_000, Period::Day),
    };
    let plans = QuotaPlans::builder()
        .tier("pro", plan)
        .build()
        .expect("valid plans");
    let clock = FakeRelativeClock::default();
    // 2026-12-01T12:00:00Z, moved by hand.
    let wall = Arc::new(AtomicU64::new(1_796_126_400));
    let w = Arc::clone(&wall);
    let quota = LocalQuota::with_clocks(plans, clock.clone(), move || {
        UNIX_EPOCH + Duration::from_secs(w.load(Ordering::Relaxed))
    })
    .idle_after(Duration::from_secs(600));
    // The tenant contexts exist in a real server anyway (the registry); build them
    // first so that only the quota's own memory is measured.
    let tenants: Vec<TenantContext> = (0..n)
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
    let before = rss_kib();
    for t in &tenants {
        quota.check(t, 1, &mut Moment::now()).now();
    }
    let full = rss_kib();
    let tracked = quota.len();
    // An hour idle: a rate-only tenant's entry equals a fresh one and goes; one that
    // spent today's budget stays until the day ends.
    clock.advance(Duration::from_secs(3600));
    wall.fetch_add(3600, Ordering::Relaxed);
    let after_hour = quota.evict_idle();
    wall.fetch_add(12 * 3600, Ordering::Relaxed); // the next day
    let after_day = quota.evict_idle();
    let after = rss_kib();
    let per = (full.saturating_sub(before) as f64 * 1024.0) / tracked as f64;
    println!("shape: {shape}; tenants tracked: {tracked}");
    println!("bytes per tracked tenant (RSS growth / tenants): {per:.0}");
    println!(
        "swept after an idle hour: {after_hour}; after the day ended: {after_day}; left: {}",
        quota.len()
    );
    println!(
        "RSS before: {before} KiB; with the tenants: {full} KiB; after the sweep: {after} KiB ({:+.1}% of before)",
        (after as f64 - before as f64) * 100.0 / before as f64
    );
    drop(tenants);
}

/// The anchor: governor's keyed limiter on the same tenant ids, emptied by its
/// `retain_recent` and `shrink_to_fit` an hour later.
fn anchor(n: usize) {
    use governor::{Quota, RateLimiter};
    let clock = FakeRelativeClock::default();
    let quota = Quota::per_second(std::num::NonZeroU32::new(100).expect("non-zero"));
    let limiter = RateLimiter::dashmap_with_clock(quota, clock.clone());
    let ids: Vec<TenantId> = (0..n)
        .map(|i| TenantId::parse(&format!("tenant-{i:07}")).expect("valid id"))
        .collect();
    let before = rss_kib();
    for id in &ids {
        let _ = limiter.check_key(id);
    }
    let full = rss_kib();
    let tracked = limiter.len();
    clock.advance(Duration::from_secs(3600));
    limiter.retain_recent();
    limiter.shrink_to_fit();
    let after = rss_kib();
    let per = (full.saturating_sub(before) as f64 * 1024.0) / tracked as f64;
    println!("shape: governor; tenants tracked: {tracked}");
    println!("bytes per tracked tenant (RSS growth / tenants): {per:.0}");
    println!(
        "RSS before: {before} KiB; with the tenants: {full} KiB; after retain_recent + shrink_to_fit: {after} KiB ({:+.1}% of before)",
        (after as f64 - before as f64) * 100.0 / before as f64
    );
}
