//! The metrics, the same on both adapters (feature `metrics` of this crate): one
//! sequence of requests through actix-tenancy's `Tenancy` and tower-tenancy's
//! `TenancyLayer` (resolution, `RulePolicy`, `LocalQuota`, per-tenant labels), and the
//! decision counters each run adds must be the same series with the same counts; both
//! time their policy and quota stages. Alone in its binary: it installs the
//! process-wide recorder.

use std::collections::BTreeMap;

use actix_web::{test as atest, web, App};
use axum::routing::get;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tenancy_core::{
    observe::{DECISIONS_METRIC, DURATION_METRIC},
    policy::{PolicySet, RulePolicy, Rules},
    quota::{LocalQuota, QuotaPlan, QuotaPlans},
};
use tower::ServiceExt as _;

#[allow(dead_code, unreachable_pub)]
mod common;

use common::*;

fn rules() -> RulePolicy {
    RulePolicy::new(
        PolicySet::new()
            .default_rules(Rules::new().deny("* /admin/**"))
            .tier("pro", Rules::new().allow("GET /whoami"))
            .tier("free", Rules::new().allow("GET /whoami")),
    )
    .unwrap()
}

fn quota() -> LocalQuota {
    LocalQuota::new(
        QuotaPlans::builder()
            .tier("pro", QuotaPlan::per_minute(2))
            .tier("free", QuotaPlan::per_minute(2))
            .build()
            .unwrap(),
    )
}

/// What was recorded since the last call (the debugging recorder's snapshot drains
/// it), by name and sorted labels: a counter's count, a histogram's number of
/// samples; series that did not move are left out.
fn recorded(snap: &Snapshotter) -> BTreeMap<String, u64> {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 0,
            };
            (n > 0).then_some((name, n))
        })
        .collect()
}

/// The sequence: served twice, over the plan, another tenant, a policy denial, a
/// suspended and an unknown tenant, none at all.
fn sequence() -> Vec<Req> {
    vec![
        get_("/whoami").h("x-tenant-id", "acme"),
        get_("/whoami").h("x-tenant-id", "acme"),
        get_("/whoami").h("x-tenant-id", "acme"),
        get_("/whoami").h("x-tenant-id", "stark"),
        get_("/admin/users").h("x-tenant-id", "stark"),
        get_("/whoami").h("x-tenant-id", "globex"),
        get_("/whoami").h("x-tenant-id", "nobody"),
        get_("/whoami"),
    ]
}

#[actix_web::test]
async fn both_adapters_count_the_same_decisions() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    recorder.install().unwrap();

    async fn whoami(t: Option<actix_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let actix = atest::init_service(
        App::new()
            .wrap(
                actix_tenancy::Tenancy::builder()
                    .resolver(
                        actix_tenancy::TenantResolver::builder(Registry::new())
                            .source(actix_tenancy::Source::header())
                            .build()
                            .unwrap(),
                    )
                    .policy(
                        actix_tenancy::policy::TenantPolicy::builder(rules())
                            .build()
                            .unwrap(),
                    )
                    .quota(
                        actix_tenancy::quota::TenantQuota::builder(quota())
                            .build()
                            .unwrap(),
                    )
                    .per_tenant_metrics(true)
                    .build()
                    .unwrap(),
            )
            .route("/whoami", web::to(whoami))
            .route("/admin/{page}", web::to(whoami)),
    )
    .await;
    let _ = recorded(&snap);
    for req in sequence() {
        let res = atest::call_service(&actix, actix_request(&req)).await;
        let _ = actix_answer(res, &Recorder::default()).await;
    }
    let on_actix = recorded(&snap);

    async fn axum_whoami(t: Option<tower_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let axum = axum::Router::new()
        .route("/whoami", get(axum_whoami))
        .route("/admin/{page}", get(axum_whoami))
        .layer(
            tower_tenancy::TenancyLayer::builder(Registry::new())
                .source(tower_tenancy::Source::header())
                .policy(
                    tower_tenancy::TenantPolicy::builder(rules())
                        .build()
                        .unwrap(),
                )
                .quota(
                    tower_tenancy::TenantQuota::builder(quota())
                        .build()
                        .unwrap(),
                )
                .per_tenant_metrics(true)
                .build()
                .unwrap(),
        );
    for req in sequence() {
        let res = axum.clone().oneshot(axum_request(&req)).await.unwrap();
        let _ = axum_answer(res, &Recorder::default()).await;
    }
    let on_axum = recorded(&snap);

    let decisions = |m: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        m.iter()
            .filter(|(k, _)| k.starts_with(DECISIONS_METRIC))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let want = [
        // acme: resolved three times, allowed by policy three times, charged twice
        // and refused once.
        ("outcome=allowed,stage=resolution,tenant=acme,tier=pro", 3),
        ("outcome=allowed,stage=policy,tenant=acme,tier=pro", 3),
        ("outcome=allowed,stage=quota,tenant=acme,tier=pro", 2),
        (
            "code=quota_exceeded,outcome=rejected,stage=quota,tenant=acme,tier=pro",
            1,
        ),
        (
            "code=policy_denied,outcome=rejected,stage=policy,tenant=stark,tier=free",
            1,
        ),
        // A suspended tenant has a record: its id is a label. An unknown one is not.
        (
            "code=tenant_forbidden,outcome=rejected,stage=resolution,tenant=globex,tier=free",
            1,
        ),
        (
            "code=tenant_forbidden,outcome=rejected,stage=resolution,tenant=unknown,tier=none",
            1,
        ),
        (
            "code=tenant_missing,outcome=rejected,stage=resolution,tenant=none,tier=none",
            1,
        ),
    ];
    let actix_decisions = decisions(&on_actix);
    for (labels, n) in want {
        let found = actix_decisions
            .iter()
            .find(|(k, _)| {
                let inner = &k[DECISIONS_METRIC.len() + 1..k.len() - 1];
                let inner: Vec<&str> = inner
                    .split(',')
                    .filter(|l| !l.starts_with("code=none"))
                    .collect();
                inner.join(",") == labels
            })
            .map(|(_, v)| *v);
        assert_eq!(found, Some(n), "{labels}: {actix_decisions:#?}");
    }
    assert_eq!(
        actix_decisions,
        decisions(&on_axum),
        "the adapters count different decisions"
    );
    for (adapter, m) in [("actix", &on_actix), ("axum", &on_axum)] {
        for stage in ["policy", "quota"] {
            let timed = format!("{DURATION_METRIC}{{stage={stage}}}");
            assert!(
                m.get(&timed).is_some_and(|n| *n > 0),
                "{adapter}: {timed} in {m:#?}"
            );
        }
    }
}
