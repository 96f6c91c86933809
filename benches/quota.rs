//! Quota checks: `cargo bench --bench quota`.
//!
//! - one tenant, uncontended;
//! - one tenant while 100,000 others have entries;
//! - two threads on one tenant, and on two different tenants.

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_tenancy::{
    quota::{LocalQuota, Period, QuotaManager, QuotaPlan, QuotaPlans},
    registry::TenantRecord,
    resolve::SourceKind,
    Moment, TenantContext, TenantId,
};
use criterion::{criterion_group, criterion_main, Criterion};

fn ctx(id: &str) -> TenantContext {
    let id = TenantId::parse(id).unwrap();
    TenantContext::new(
        id.clone(),
        SourceKind::Header,
        Arc::new(TenantRecord::new(id, "pro")),
        None,
    )
}

/// A plan the benchmark never exhausts: every check does the full work and passes.
fn quota() -> LocalQuota {
    let plans = QuotaPlans::builder()
        .tier(
            "pro",
            QuotaPlan::per_second(1_000_000_000).budget(u64::MAX / 2, Period::Day),
        )
        .build()
        .unwrap();
    LocalQuota::new(plans)
}

fn check(q: &LocalQuota, t: &TenantContext) -> bool {
    q.check(t, 1, &mut Moment::now())
        .now()
        .unwrap()
        .unwrap()
        .allowed
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_quota");

    let q = quota();
    let t = ctx("acme");
    g.bench_function("check/uncontended", |b| b.iter(|| black_box(check(&q, &t))));

    let q = quota();
    for i in 0..100_000 {
        check(&q, &ctx(&format!("t{i}")));
    }
    let t = ctx("t4242");
    g.bench_function("check/100k_tenants", |b| {
        b.iter(|| black_box(check(&q, &t)))
    });

    for (name, ids) in [
        ("same_tenant", ["acme", "acme"]),
        ("different_tenants", ["acme", "globex"]),
    ] {
        let q = Arc::new(quota());
        g.bench_function(format!("check/2_threads_{name}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for id in ids {
                        let q = Arc::clone(&q);
                        s.spawn(move || {
                            let t = ctx(id);
                            for _ in 0..iters {
                                black_box(check(&q, &t));
                            }
                        });
                    }
                });
                // Time per check, counting both threads' checks.
                start.elapsed() / 2
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = quota_benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(quota_benches);
