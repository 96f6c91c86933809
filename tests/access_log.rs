//! The per-request access line (`access_log(true)`, off by default): one `INFO` line
//! on `actix_tenancy::access` per request, with the tenant and the decision, and no
//! line at all when it is off.

use actix_tenancy::prelude::*;
use actix_web::{test, web, App, HttpResponse};
use serde_json::Value;
use tracing::instrument::WithSubscriber as _;

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod buffer;
}

/// The access lines written while `requests` ran against a stack with `access_log(on)`.
async fn lines(on: bool, requests: &[(&str, Option<&str>)]) -> Vec<Value> {
    let (buffer, subscriber) = recorded();
    let run = async {
        let registry = InMemoryRegistry::new()
            .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
        let tenancy = Tenancy::builder()
            .resolver(
                TenantResolver::builder(registry)
                    .source(Source::header())
                    .exempt("/health")
                    .build()
                    .unwrap(),
            )
            .access_log(on)
            .build()
            .unwrap();
        let app = test::init_service(
            App::new()
                .wrap(tenancy)
                .route("/health", web::get().to(HttpResponse::Ok))
                .route("/{any}", web::get().to(|_: Tenant| async { "ok" })),
        )
        .await;
        for (path, tenant) in requests {
            let mut req = test::TestRequest::get().uri(path);
            if let Some(t) = tenant {
                req = req.insert_header(("x-tenant-id", *t));
            }
            test::call_service(&app, req.to_request()).await;
        }
    };
    run.with_subscriber(subscriber).await;
    access_lines(&buffer)
}

/// A JSON subscriber at `INFO` writing into the returned buffer.
fn recorded() -> (
    common::buffer::Buffer,
    impl tracing::Subscriber + Send + Sync,
) {
    let buffer = common::buffer::Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    (buffer, subscriber)
}

/// The access lines in `buffer`.
fn access_lines(buffer: &common::buffer::Buffer) -> Vec<Value> {
    buffer
        .text()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
        .filter(|l| l["target"] == "actix_tenancy::access")
        .collect()
}

#[actix_web::test]
async fn one_line_per_request_with_the_tenant_and_the_decision() {
    let got = lines(
        true,
        &[
            ("/notes", Some("acme")),
            ("/notes", Some("nobody")),
            ("/health", None),
            ("/a%22b", Some("acme")),
        ],
    )
    .await;
    assert_eq!(got.len(), 4, "{got:?}");
    let f = |i: usize, k: &str| got[i]["fields"][k].clone();
    assert_eq!(
        (
            f(0, "status"),
            f(0, "tenant"),
            f(0, "tier"),
            f(0, "source"),
            f(0, "refused")
        ),
        (
            200.into(),
            "acme".into(),
            "pro".into(),
            "header".into(),
            "none".into()
        )
    );
    assert_eq!(
        (f(1, "status"), f(1, "tenant"), f(1, "refused")),
        (403.into(), "none".into(), "tenant_forbidden".into())
    );
    assert_eq!(
        (f(2, "status"), f(2, "tenant")),
        (200.into(), "none".into()),
        "exempt"
    );
    assert_eq!(f(3, "path"), "/a%22b");
    assert!(got
        .iter()
        .all(|l| l["level"] == "INFO" && l["fields"]["elapsed_us"].is_u64()));
}

#[actix_web::test]
async fn no_access_line_unless_asked() {
    assert!(lines(false, &[("/notes", Some("acme"))]).await.is_empty());
}

#[actix_web::test]
async fn a_request_dropped_before_its_answer_still_gets_its_line() {
    let (buffer, subscriber) = recorded();
    let run = async {
        let registry = InMemoryRegistry::new()
            .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
        let tenancy = Tenancy::builder()
            .resolver(
                TenantResolver::builder(registry)
                    .source(Source::header())
                    .build()
                    .unwrap(),
            )
            .access_log(true)
            .build()
            .unwrap();
        let app = test::init_service(App::new().wrap(tenancy).route(
            "/slow",
            web::get().to(|_: Tenant| std::future::pending::<&'static str>()),
        ))
        .await;
        let req = test::TestRequest::get()
            .uri("/slow")
            .insert_header(("x-tenant-id", "acme"));
        // The client gives up: the request's future is dropped unanswered.
        let gone = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            test::call_service(&app, req.to_request()),
        )
        .await;
        assert!(gone.is_err());
    };
    run.with_subscriber(subscriber).await;
    let lines = access_lines(&buffer);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["fields"]["status"], 499);
    assert_eq!(lines[0]["fields"]["message"], "dropped");
    assert_eq!(lines[0]["fields"]["path"], "/slow");
}
