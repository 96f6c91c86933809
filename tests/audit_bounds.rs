//! What an unauthenticated client can make the default audit sink write: a bounded
//! number of lines per stage and code, and never a raw byte of its own. (Its own test
//! binary: it installs a subscriber.)

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod buffer;
    pub mod stack;
}

use actix_tenancy::prelude::*;
use actix_web::{test, web, App};
use common::buffer::Buffer;

/// What `run` logs under a text subscriber at `INFO`.
fn captured<F: std::future::Future<Output = ()>>(run: F) -> String {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        actix_web::rt::System::new().block_on(run);
    });
    buffer.text()
}

/// Runs `requests` against a resolver over acme (pro) and initech (suspended), with
/// the default `TracingAudit`; returns the log.
fn logged(requests: Vec<test::TestRequest>) -> String {
    captured(async move {
        let tenancy = common::stack::on_header(common::stack::acme_and_initech())
            .build()
            .unwrap();
        let app = test::init_service(
            App::new()
                .wrap(tenancy)
                .default_service(web::to(|_: Tenant| async { "ok" })),
        )
        .await;
        for req in requests {
            test::call_service(&app, req.to_request()).await;
        }
    })
}

fn decisions(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("tenancy decision"))
        .collect()
}

#[::core::prelude::v1::test]
fn strangers_get_a_bounded_number_of_lines_per_stage_and_code() {
    let mut requests = Vec::new();
    for i in 0..600 {
        // Made-up ids that follow the rule: 403 tenant_forbidden.
        requests.push(
            test::TestRequest::get()
                .uri(&format!("/made-up/{i}"))
                .insert_header(("x-tenant-id", format!("stranger-{i}"))),
        );
        // Ids the rule refuses: 400 tenant_invalid.
        requests.push(
            test::TestRequest::get()
                .uri("/x")
                .insert_header(("x-tenant-id", format!("Bad_{i}"))),
        );
        // No tenant at all: 401 tenant_missing.
        requests.push(test::TestRequest::get().uri(&format!("/none/{i}")));
    }
    // A known tenant's rejections are all written.
    for _ in 0..30 {
        requests.push(
            test::TestRequest::get()
                .uri("/x")
                .insert_header(("x-tenant-id", "initech")),
        );
    }
    let log = logged(requests);
    let lines = decisions(&log);
    let count = |code: &str| lines.iter().filter(|l| l.contains(code)).count();
    assert_eq!(count("tenant_invalid"), 20, "the default bound, per code");
    assert_eq!(count("tenant_missing"), 20);
    let forbidden: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("tenant_forbidden"))
        .collect();
    let known = forbidden.iter().filter(|l| l.contains("initech")).count();
    assert_eq!(
        known, 30,
        "decisions about a known tenant are never dropped"
    );
    assert_eq!(forbidden.len() - known, 20, "strangers' are bounded");
    assert_eq!(lines.len(), 90, "{log}");
    assert!(
        log.len() < 64 * 1024,
        "{} bytes for 1,830 requests",
        log.len()
    );
}

#[::core::prelude::v1::test]
fn client_values_are_escaped_in_every_line() {
    let requests = vec![
        // A decoded path with a newline, a forged field, quotes and a terminal escape.
        test::TestRequest::get()
            .uri("/x%0A2026-01-01T00:00:00Z%20ERROR%20forged=%22yes%22%1B%5B31m")
            .insert_header(("x-tenant-id", "nobody")),
        // A header that is not ASCII.
        test::TestRequest::get()
            .uri("/x")
            .insert_header(("x-tenant-id", &b"\xe2\x80\xaeevil"[..])),
    ];
    let log = logged(requests);
    let lines = decisions(&log);
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!(
        log.lines().count(),
        2,
        "no client byte started a line: {log}"
    );
    assert!(!log.contains('\u{1b}'), "{log:?}");
    assert!(!log.contains("forged=\"yes\""), "{log}");
    assert!(log.is_ascii(), "{log:?}");
    assert!(lines[0].contains("tenant_forbidden"), "{}", lines[0]);
    assert!(lines[1].contains("tenant_invalid"), "{}", lines[1]);
}

#[cfg(feature = "jwt")]
#[::core::prelude::v1::test]
fn a_hostile_token_leaves_no_raw_byte_either() {
    use actix_tenancy::session::{Key, KeySet, SessionConfig, SessionManager, TenantAuth};
    use jsonwebtoken::Algorithm;

    let log = captured(async {
        let keys = KeySet::signing(
            Key::hmac("k1", Algorithm::HS256, b"0123456789abcdef0123456789abcdef").unwrap(),
        )
        .unwrap();
        let sessions = SessionManager::new(SessionConfig::new("iss", "aud"), keys);
        let tenancy = common::stack::on_claim(InMemoryRegistry::new())
            .auth(TenantAuth::new(sessions))
            .build()
            .unwrap();
        let app = test::init_service(
            App::new()
                .wrap(tenancy)
                .default_service(web::to(|_: Tenant| async { "ok" })),
        )
        .await;
        // A header that is not ASCII, and a token whose header names a kid full
        // of escapes (`{"alg":"HS256","kid":"\n\u001b[31m"}`).
        let kid = "eyJhbGciOiJIUzI1NiIsImtpZCI6IlxuXHUwMDFiWzMxbSJ9";
        for value in [
            b"Bearer \xe2\x80\xae\xff".to_vec(),
            format!("Bearer {kid}.e30.c2ln").into_bytes(),
        ] {
            let req = test::TestRequest::get()
                .uri("/x%0Aforged")
                .insert_header(("authorization", value))
                .to_request();
            assert_eq!(test::call_service(&app, req).await.status(), 401);
        }
    });
    assert_eq!(decisions(&log).len(), 2, "{log}");
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(log.is_ascii() && !log.contains('\u{1b}'), "{log:?}");
}
