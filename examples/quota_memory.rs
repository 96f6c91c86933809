//! Memory per tracked tenant in `LocalQuota`: RSS before, with 1,000,000 tenants, and
//! after evicting them.
//!
//! ```sh
//! cargo run --release --example quota_memory
//! ```

use std::{sync::Arc, time::Duration};

use actix_tenancy::{
    quota::{LocalQuota, Period, QuotaManager, QuotaPlan, QuotaPlans},
    registry::TenantRecord,
    resolve::SourceKind,
    TenantContext, TenantId,
};

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
    const N: usize = 1_000_000;
    let plans = QuotaPlans::builder()
        .tier(
            "pro",
            QuotaPlan::per_second(100).budget(1_000_000, Period::Day),
        )
        .build()
        .expect("valid plans");
    let quota = LocalQuota::new(plans).idle_after(Duration::ZERO);
    // The tenant contexts exist in a real server anyway (the registry); build them
    // first so that only the quota's own memory is measured.
    let tenants: Vec<TenantContext> = (0..N)
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
        quota.check_now(t, 1);
    }
    let full = rss_kib();
    let tracked = quota.len();
    let evicted = quota.evict_idle();
    let after = rss_kib();
    println!("tenants tracked: {tracked}");
    println!("RSS before: {before} KiB; with {N} tenants: {full} KiB; after evicting {evicted}: {after} KiB");
    println!(
        "bytes per tracked tenant: {:.0}",
        (full.saturating_sub(before) as f64 * 1024.0) / tracked as f64
    );
    println!("entries left: {}", quota.len());
}
