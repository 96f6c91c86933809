//! Decision counters through the `metrics` facade (feature `metrics`). Alone in its
//! binary: it installs the process-wide recorder.

use std::collections::BTreeMap;

use actix_tenancy::{observe::DECISIONS_METRIC, prelude::*};
use actix_web::{test, web, App};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
        .with(TenantRecord::new(
            TenantId::parse("globex").unwrap(),
            "free",
        ))
}

/// Counter values by their sorted `name=value` labels.
fn counters(snap: &Snapshotter) -> BTreeMap<String, u64> {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == DECISIONS_METRIC)
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let DebugValue::Counter(n) = value else {
                panic!("{DECISIONS_METRIC} is not a counter")
            };
            (labels.join(","), n)
        })
        .collect()
}

#[actix_web::test]
async fn decisions_are_counted_by_stage_outcome_code_and_tier() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    recorder.install().unwrap();

    let plain = TenantResolver::builder(registry())
        .source(Source::header())
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(plain)
            .route("/", web::get().to(|_: Tenant| async { "ok" })),
    )
    .await;
    for tenant in ["acme", "acme", "globex", "nobody", "BAD"] {
        let req = test::TestRequest::get()
            .uri("/")
            .insert_header(("x-tenant-id", tenant))
            .to_request();
        test::call_service(&app, req).await;
    }
    let got = counters(&snap);
    let want: BTreeMap<String, u64> = [
        ("code=none,outcome=allowed,stage=resolution,tier=pro", 2),
        ("code=none,outcome=allowed,stage=resolution,tier=free", 1),
        (
            "code=tenant_forbidden,outcome=rejected,stage=resolution,tier=none",
            1,
        ),
        (
            "code=tenant_invalid,outcome=rejected,stage=resolution,tier=none",
            1,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(got, want, "no tenant label unless asked for");

    // Opted in: a tenant label.
    let labelled = TenantResolver::builder(registry())
        .source(Source::header())
        .per_tenant_metrics(true)
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(labelled)
            .route("/", web::get().to(|_: Tenant| async { "ok" })),
    )
    .await;
    let req = test::TestRequest::get()
        .uri("/")
        .insert_header(("x-tenant-id", "acme"))
        .to_request();
    test::call_service(&app, req).await;
    let got = counters(&snap);
    assert_eq!(
        got.get("code=none,outcome=allowed,stage=resolution,tenant=acme,tier=pro"),
        Some(&1),
        "{got:#?}"
    );
}
