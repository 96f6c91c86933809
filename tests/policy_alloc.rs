//! `RulePolicy` decides and `LocalQuota` checks without allocating, as the policy
//! guide and the CHANGELOG say: `allocation-counter`'s global allocator counts this
//! thread's allocations while they decide (alone in their binary, since it sets the
//! global allocator).

use std::sync::Arc;

use actix_tenancy::Moment;
use actix_tenancy::{
    policy::{PolicyRequest, PolicySet, RulePolicy, Rules},
    prelude::*,
    quota::{Charge, LocalQuota, Period, QuotaManager, QuotaPlan, QuotaPlans},
    resolve::SourceKind,
};
use actix_web::http::Method;

#[test]
fn deciding_and_capability_checks_allocate_nothing() {
    let policy = RulePolicy::new(
        PolicySet::new()
            .default_rules(Rules::new().deny("* /admin/**"))
            .tier(
                "pro",
                Rules::new()
                    .allow("GET /items/*")
                    .allow_capability("model:*"),
            )
            .tenant(
                "acme",
                Rules::new()
                    .deny_capability("tool:web_search")
                    .feature("beta", true),
            ),
    )
    .unwrap();
    let id = TenantId::parse("acme").unwrap();
    let record = Arc::new(TenantRecord::new(id.clone(), "pro"));
    let tenant = TenantContext::new(id, SourceKind::Header, record, None);
    let allowed = PolicyRequest::new(Method::GET, "/items/7")
        .with_route("/items/{id}")
        .with_capability("model:gpt-4o");
    let denied = PolicyRequest::new(Method::DELETE, "/admin/x").with_route("/admin/{what}");

    // The first load on a thread sets up arc-swap's per-thread slot, once.
    let _ = policy.decide(&tenant, &allowed);
    let mut answers = Vec::with_capacity(4);
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            let a = policy.decide(&tenant, &allowed);
            let d = policy.decide(&tenant, &denied);
            let c = (
                policy.can(&tenant, "feature:beta"),
                policy.can(&tenant, "tool:web_search"),
            );
            if answers.is_empty() {
                answers.extend([a.allowed, d.allowed, c.0, c.1]);
            }
        }
    });
    assert_eq!(answers, [true, false, true, false]);
    assert_eq!(info.count_total, 0, "RulePolicy allocated while deciding");
    // And the counter does count, here.
    let control = allocation_counter::measure(|| {
        std::hint::black_box(vec![0u8; 8]);
    });
    assert!(
        control.count_total > 0,
        "the allocation counter counts nothing"
    );
}

#[test]
fn a_quota_check_that_passes_or_refuses_allocates_nothing() {
    let plans = QuotaPlans::builder()
        .tier(
            "pro",
            QuotaPlan::per_second(1_000_000).budget(u64::MAX / 2, Period::Day),
        )
        .tier("free", QuotaPlan::per_minute(1))
        .build()
        .unwrap();
    let quota = LocalQuota::new(plans);
    let ctx = |id: &str, tier: &str| {
        let id = TenantId::parse(id).unwrap();
        let record = Arc::new(TenantRecord::new(id.clone(), tier));
        TenantContext::new(id, SourceKind::Header, record, None)
    };
    let (pro, free) = (ctx("acme", "pro"), ctx("globex", "free"));
    // The first check of a tenant makes its entry (the map may grow): not measured.
    let check = |t: &TenantContext| {
        quota
            .check(t, 1, &mut Moment::now())
            .now()
            .unwrap()
            .unwrap()
            .allowed
    };
    assert!(check(&pro) && check(&free));
    let mut answers = (0, 0);
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            answers.0 += usize::from(check(&pro));
            answers.1 += usize::from(check(&free));
            quota
                .settle(&pro, Charge::new(1), 0)
                .now()
                .unwrap()
                .unwrap();
        }
    });
    assert_eq!(answers, (100, 0), "passes and refusals both measured");
    assert_eq!(info.count_total, 0, "LocalQuota allocated while checking");
}
