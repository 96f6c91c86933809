//! Every resolution is reported to the audit sink.

use std::sync::{Arc, Mutex};

use actix_tenancy::{
    observe::{AuditEvent, Outcome, Stage},
    prelude::*,
};
use actix_web::{test, web, App, HttpResponse};

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    stage: Stage,
    outcome: Outcome,
    tenant: Option<String>,
    tier: Option<String>,
    source: Option<&'static str>,
    path: String,
    reason: String,
}

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
        .with(
            TenantRecord::new(TenantId::parse("initech").unwrap(), "pro")
                .with_status(TenantStatus::Suspended),
        )
}

#[actix_web::test]
async fn every_resolution_emits_one_event() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = {
        let seen = Arc::clone(&seen);
        move |e: &AuditEvent<'_>| {
            seen.lock().unwrap().push(Seen {
                stage: e.stage,
                outcome: e.outcome,
                tenant: e.tenant.map(|t| t.to_string()),
                tier: e.tier.map(str::to_owned),
                source: e.source.map(|s| s.as_str()),
                path: e.path.to_owned(),
                reason: e.reason.to_owned(),
            })
        }
    };
    let resolver = Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry())
                .source(Source::header())
                .exempt("/health")
                .build()
                .unwrap(),
        )
        .audit(sink)
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(resolver)
            .route("/health", web::get().to(HttpResponse::Ok))
            .route("/x", web::get().to(|_: Tenant| async { "ok" })),
    )
    .await;

    let send = |tenant: Option<&str>, path: &str| {
        let mut req = test::TestRequest::get().uri(path);
        if let Some(t) = tenant {
            req = req.insert_header(("x-tenant-id", t.to_owned()));
        }
        req.to_request()
    };
    for (tenant, path) in [
        (Some("acme"), "/x"),
        (Some("initech"), "/x"),
        (Some("nobody"), "/x"),
        (Some("BAD"), "/x"),
        (None, "/x"),
        (None, "/health"),
    ] {
        test::call_service(&app, send(tenant, path)).await;
    }

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6, "one event per request: {seen:#?}");
    assert!(seen.iter().all(|e| e.stage == Stage::named("resolution")));

    assert_eq!(seen[0].outcome, Outcome::Allowed);
    assert_eq!(seen[0].tenant.as_deref(), Some("acme"));
    assert_eq!(seen[0].tier.as_deref(), Some("pro"));
    assert_eq!(seen[0].source, Some("header"));

    // Suspended and unknown: the same public code, told apart in the audit reason.
    assert_eq!(
        seen[1].outcome,
        Outcome::Rejected(ErrorCode::TenantForbidden)
    );
    assert_eq!(
        seen[2].outcome,
        Outcome::Rejected(ErrorCode::TenantForbidden)
    );
    assert!(seen[1].reason.contains("suspended"), "{}", seen[1].reason);
    assert!(seen[2].reason.contains("unknown"), "{}", seen[2].reason);

    assert_eq!(seen[3].outcome, Outcome::Rejected(ErrorCode::TenantInvalid));
    assert_eq!(
        seen[3].tenant, None,
        "an invalid id is never reported as a tenant"
    );
    assert_eq!(seen[4].outcome, Outcome::Rejected(ErrorCode::TenantMissing));
    assert_eq!(seen[5].outcome, Outcome::Skipped);
    assert_eq!(seen[5].path, "/health");
}
