//! `RulePolicy` decides without allocating, as the README says: `allocation-counter`'s
//! global allocator counts this thread's allocations while it decides (alone in its
//! binary, since it sets the global allocator).

use std::sync::Arc;

use actix_tenancy::{
    policy::{PolicyRequest, PolicySet, RulePolicy, Rules},
    prelude::*,
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
