//! Decision counters through the `metrics` facade (feature `metrics`). Alone in its
//! binary: it installs the process-wide recorder.

use std::collections::BTreeMap;

use actix_tenancy::{
    observe::{DECISIONS_METRIC, TENANT_DURATION_METRIC, TENANT_REQUESTS_METRIC},
    prelude::*,
};
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
            let DebugValue::Counter(n) = value else {
                panic!("{DECISIONS_METRIC} is not a counter")
            };
            (labels(key.key()), n)
        })
        .collect()
}

/// A metric key's labels, sorted, as `name=value,...`.
fn labels(key: &metrics::Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    labels.join(",")
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
    let labelled = Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry())
                .source(Source::header())
                .build()
                .unwrap(),
        )
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

    // Made-up ids never become series: 500 of them count under one `unknown` label.
    for i in 0..500 {
        let req = test::TestRequest::get()
            .uri("/")
            .insert_header(("x-tenant-id", format!("made-up-{i}")))
            .to_request();
        assert_eq!(test::call_service(&app, req).await.status(), 403);
    }
    let got = counters(&snap);
    let tenants: std::collections::BTreeSet<&str> = got
        .keys()
        .filter_map(|k| k.split(',').find_map(|l| l.strip_prefix("tenant=")))
        .collect();
    assert_eq!(
        tenants,
        ["acme", "unknown"].into_iter().collect(),
        "{got:#?}"
    );
    assert_eq!(
        got.get("code=tenant_forbidden,outcome=rejected,stage=resolution,tenant=unknown,tier=none"),
        Some(&500),
        "{got:#?}"
    );

    // Named tenants: their requests counted by status class and timed; any other
    // tenant is `other`, a request without one `none`.
    let watched = Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry())
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .metrics_for_tenants(["acme"])
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(watched)
            .route("/", web::get().to(|_: Tenant| async { "ok" }))
            .route(
                "/fail",
                web::get().to(|_: Tenant| async {
                    actix_web::HttpResponse::InternalServerError().finish()
                }),
            ),
    )
    .await;
    for (path, tenant) in [
        ("/", Some("acme")),
        ("/", Some("acme")),
        ("/fail", Some("acme")),
        ("/", Some("globex")),
        ("/", Some("nobody")),
        ("/", None),
    ] {
        let mut req = test::TestRequest::get().uri(path);
        if let Some(t) = tenant {
            req = req.insert_header(("x-tenant-id", t));
        }
        test::call_service(&app, req.to_request()).await;
    }
    let mut requests = BTreeMap::new();
    let mut timed = BTreeMap::new();
    for (key, _, _, value) in snap.snapshot().into_vec() {
        let labels = labels(key.key());
        match (key.key().name(), value) {
            (TENANT_REQUESTS_METRIC, DebugValue::Counter(n)) => {
                requests.insert(labels, n);
            }
            (TENANT_DURATION_METRIC, DebugValue::Histogram(v)) => {
                timed.insert(labels, v.len());
            }
            _ => {}
        }
    }
    let want: BTreeMap<String, u64> = [
        ("status=2xx,tenant=acme", 2),
        ("status=5xx,tenant=acme", 1),
        ("status=2xx,tenant=other", 1),
        // An unknown tenant and a missing one: refused before a tenant is settled.
        ("status=4xx,tenant=none", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(requests, want);
    let want: BTreeMap<String, usize> =
        [("tenant=acme", 3), ("tenant=other", 1), ("tenant=none", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    assert_eq!(timed, want, "every request timed under its label");
}
