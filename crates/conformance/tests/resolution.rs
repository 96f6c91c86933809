//! One table of requests and their answers (status, code, the problem body and its
//! headers, or the handler's answer), run against both adapters: actix-tenancy's
//! `TenantResolver` in an actix `App`, and tower-tenancy's `TenancyLayer` in an axum
//! `Router`. Each row checks what the table expects on each adapter, and that the two
//! answers are the same byte for byte, and so are the audit events each reported.

use std::time::Duration;

use actix_web::{dev::Service as _, test as atest, web, App, HttpMessage as _};
use axum::routing::get;
use tower::ServiceExt as _;

#[allow(dead_code, unreachable_pub)]
mod common;

use common::*;

async fn on_actix(req: &Req) -> Got {
    let audit = Recorder::default();
    let resolver = actix_tenancy::TenantResolver::builder(Registry::new())
        .source(actix_tenancy::Source::claim())
        .source(actix_tenancy::Source::header())
        .source(actix_tenancy::Source::subdomain(["example.com"]))
        .source(actix_tenancy::Source::path_prefix("/t/"))
        .exempt("/health")
        .region("eu")
        .registry_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    async fn whoami(t: Option<actix_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let tenancy = actix_tenancy::Tenancy::builder()
        .resolver(resolver)
        .audit(audit.sink())
        .build()
        .unwrap();
    let app = atest::init_service(
        App::new()
            .wrap(tenancy)
            .wrap_fn(|req, srv| {
                if let Some(t) = req.headers().get("x-test-principal") {
                    let t = t.to_str().unwrap().to_owned();
                    req.extensions_mut().insert(principal(&t));
                }
                srv.call(req)
            })
            .route("/whoami", web::to(whoami))
            .route("/t/{tenant}/whoami", web::to(whoami))
            .route("/health", web::to(|| async { "ok" })),
    )
    .await;
    let res = atest::call_service(&app, actix_request(req)).await;
    actix_answer(res, &audit).await
}

async fn on_axum(req: &Req) -> Got {
    let audit = Recorder::default();
    let layer = tower_tenancy::TenancyLayer::builder(Registry::new())
        .source(tower_tenancy::Source::claim())
        .source(tower_tenancy::Source::header())
        .source(tower_tenancy::Source::subdomain(["example.com"]))
        .source(tower_tenancy::Source::path_prefix("/t/"))
        .exempt("/health")
        .region("eu")
        .registry_timeout(Duration::from_millis(200))
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<tower_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let router = axum::Router::new()
        .route("/whoami", get(whoami).post(whoami))
        .route("/t/{tenant}/whoami", get(whoami).post(whoami))
        .route("/health", get(|| async { "ok" }))
        .layer(layer)
        .layer(tower::util::MapRequestLayer::new(
            |mut r: http::Request<axum::body::Body>| {
                if let Some(t) = r.headers().get("x-test-principal") {
                    let t = t.to_str().unwrap().to_owned();
                    r.extensions_mut().insert(principal(&t));
                }
                r
            },
        ));
    let res = router.oneshot(axum_request(req)).await.unwrap();
    axum_answer(res, &audit).await
}

fn table() -> Vec<(&'static str, Req, Want)> {
    use Want::{Refused, Served};
    vec![
        // Sources.
        (
            "header",
            get_("/whoami").h("x-tenant-id", "acme"),
            Served("acme header"),
        ),
        (
            "host",
            get_("/whoami").h("host", "acme.example.com"),
            Served("acme host"),
        ),
        ("path", get_("/t/acme/whoami"), Served("acme path")),
        (
            "claim",
            get_("/whoami").signed_in("acme"),
            Served("acme claim"),
        ),
        (
            "none named",
            get_("/whoami"),
            Refused(401, "tenant_missing"),
        ),
        ("exempt", get_("/health"), Served("ok")),
        (
            "exempt reads no source",
            get_("/health").h("x-tenant-id", "ACME"),
            Served("ok"),
        ),
        // Agreement and conflicts.
        (
            "header and host agree",
            get_("/whoami")
                .h("x-tenant-id", "acme")
                .h("host", "acme.example.com"),
            Served("acme header"),
        ),
        (
            "claim wins when it agrees",
            get_("/whoami").h("x-tenant-id", "acme").signed_in("acme"),
            Served("acme claim"),
        ),
        (
            "header and host disagree",
            get_("/whoami")
                .h("x-tenant-id", "acme")
                .h("host", "initech.example.com"),
            Refused(403, "tenant_conflict"),
        ),
        (
            "header and claim disagree",
            get_("/whoami")
                .h("x-tenant-id", "initech")
                .signed_in("acme"),
            Refused(403, "tenant_conflict"),
        ),
        (
            "path and header disagree",
            get_("/t/acme/whoami").h("x-tenant-id", "initech"),
            Refused(403, "tenant_conflict"),
        ),
        // Hostile spellings and encodings.
        (
            "upper-case header",
            get_("/whoami").h("x-tenant-id", "ACME"),
            Refused(400, "tenant_invalid"),
        ),
        (
            "two headers",
            get_("/whoami")
                .h("x-tenant-id", "acme")
                .h("x-tenant-id", "acme"),
            Refused(400, "tenant_invalid"),
        ),
        (
            "non-ASCII header",
            get_("/whoami").raw("x-tenant-id", b"acm\xc3\xa9"),
            Refused(400, "tenant_invalid"),
        ),
        (
            "malformed beside a conflict",
            get_("/whoami")
                .h("x-tenant-id", "ACME")
                .h("host", "initech.example.com"),
            Refused(400, "tenant_invalid"),
        ),
        (
            "host in capitals with a port",
            get_("/whoami").h("host", "ACME.Example.COM:8443"),
            Served("acme host"),
        ),
        (
            "host with a trailing dot",
            get_("/whoami").h("host", "acme.example.com."),
            Served("acme host"),
        ),
        (
            "two labels above the base",
            get_("/whoami").h("host", "a.acme.example.com"),
            Refused(400, "tenant_invalid"),
        ),
        (
            "the apex",
            get_("/whoami").h("host", "example.com"),
            Refused(401, "tenant_missing"),
        ),
        (
            "an IP address",
            get_("/whoami").h("host", "127.0.0.1:8080"),
            Refused(401, "tenant_missing"),
        ),
        (
            "another domain",
            get_("/whoami").h("host", "acme.example.org"),
            Refused(401, "tenant_missing"),
        ),
        (
            "a look-alike domain",
            get_("/whoami").h("host", "acme.evilexample.com"),
            Refused(401, "tenant_missing"),
        ),
        (
            "a bad port",
            get_("/whoami").h("host", "acme.example.com:x"),
            Refused(400, "tenant_invalid"),
        ),
        (
            "authority and Host disagree",
            get_("http://initech.example.com/whoami").h("host", "acme.example.com"),
            Refused(400, "tenant_invalid"),
        ),
        (
            "an encoded path segment",
            get_("/t/ac%6De/whoami"),
            Served("acme path"),
        ),
        (
            "an encoded slash",
            get_("/t/ac%2Fme/whoami"),
            Refused(400, "tenant_invalid"),
        ),
        (
            "an upper-case path",
            get_("/t/ACME/whoami"),
            Refused(400, "tenant_invalid"),
        ),
        (
            "an invalid UTF-8 escape",
            get_("/t/%FF/whoami"),
            Refused(400, "tenant_invalid"),
        ),
        // Unknown equal to suspended; the record's status, region and method.
        (
            "unknown",
            get_("/whoami").h("x-tenant-id", "nobody"),
            Refused(403, "tenant_forbidden"),
        ),
        (
            "suspended",
            get_("/whoami").h("x-tenant-id", "globex"),
            Refused(403, "tenant_forbidden"),
        ),
        (
            "read-only reads",
            get_("/whoami").h("x-tenant-id", "initech"),
            Served("initech header"),
        ),
        (
            "read-only writes",
            get_("/whoami").h("x-tenant-id", "initech").method("POST"),
            Refused(403, "tenant_read_only"),
        ),
        (
            "maintenance",
            get_("/whoami").h("x-tenant-id", "hooli"),
            Refused(503, "tenant_unavailable"),
        ),
        (
            "another region",
            get_("/whoami").h("x-tenant-id", "umbrella"),
            Refused(421, "tenant_misdirected"),
        ),
        // The registry.
        (
            "a registry that waits",
            get_("/whoami").h("x-tenant-id", "slowco"),
            Served("slowco header"),
        ),
        (
            "a registry that is down",
            get_("/whoami").h("x-tenant-id", "broken"),
            Refused(503, "tenant_unavailable"),
        ),
        (
            "a registry that panics",
            get_("/whoami").h("x-tenant-id", "panics"),
            Refused(503, "tenant_unavailable"),
        ),
        (
            "a registry that times out",
            get_("/whoami").h("x-tenant-id", "stuck"),
            Refused(503, "tenant_unavailable"),
        ),
        (
            "another tenant's record",
            get_("/whoami").h("x-tenant-id", "liar"),
            Refused(503, "tenant_unavailable"),
        ),
        // The request's id in the problem body.
        (
            "a request id",
            get_("/whoami").h("x-request-id", "req-1"),
            Refused(401, "tenant_missing"),
        ),
        (
            "a hostile request id",
            get_("/whoami").h("x-request-id", "\"><script>"),
            Refused(401, "tenant_missing"),
        ),
    ]
}

#[actix_web::test]
async fn both_adapters_answer_every_row_of_the_table_the_same() {
    let mut answers = Vec::new();
    for (name, req, want) in table() {
        let actix = on_actix(&req).await;
        let axum = on_axum(&req).await;
        check(name, &want, &actix, "actix");
        check(name, &want, &axum, "axum");
        assert_eq!(actix, axum, "{name}: the adapters differ");
        answers.push((name, actix));
    }
    let body = |n: &str| &answers.iter().find(|(name, _)| *name == n).unwrap().1;
    // An unknown tenant and a suspended one cannot be told apart.
    let (unknown, suspended) = (body("unknown"), body("suspended"));
    assert_eq!(
        (unknown.status, &unknown.headers, &unknown.body),
        (suspended.status, &suspended.headers, &suspended.body)
    );
    // The request id is echoed when it is safe to, and never otherwise.
    assert!(body("a request id").body.contains(r#""instance":"req-1""#));
    assert!(!body("a hostile request id").body.contains("instance"));
    // Every request was reported once, whatever its outcome.
    assert!(
        answers.iter().all(|(_, got)| got.audit.len() == 1),
        "{answers:#?}"
    );
    assert!(body("unknown").audit[0].contains("tier=None"));
    assert!(body("suspended").audit[0].contains("tier=Some(\"free\")"));
    // A rejection that knows when to come back says so.
    assert!(body("maintenance")
        .headers
        .contains(&("retry-after", "30".into())));
}
