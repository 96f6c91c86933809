//! Resolution inside a resolved request, on both adapters: an outer resolution on
//! `X-Tenant-ID` (missing allowed) around an inner one on the path under `/t/`. The
//! inner one must agree with a tenant the outer one settled, and never moves the
//! request to another tenant; where the outer one settled none, the inner one
//! resolves on its own. Each row is checked against the table on each adapter, and the
//! two answers (and their audit events) must be the same.

use actix_web::{test as atest, web, App};
use axum::routing::get;
use tower::ServiceExt as _;

#[allow(dead_code, unreachable_pub)]
mod common;

use common::*;

async fn on_actix(req: &Req) -> Got {
    let audit = Recorder::default();
    let outer = actix_tenancy::Tenancy::builder()
        .resolver(
            actix_tenancy::TenantResolver::builder(Registry::new())
                .source(actix_tenancy::Source::header())
                .allow_missing(true)
                .build()
                .unwrap(),
        )
        .audit(audit.sink())
        .build()
        .unwrap();
    let inner = actix_tenancy::Tenancy::builder()
        .resolver(
            actix_tenancy::TenantResolver::builder(Registry::new())
                .source(actix_tenancy::Source::path_prefix("/t/"))
                .build()
                .unwrap(),
        )
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<actix_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let app = atest::init_service(
        App::new()
            .wrap(outer)
            .route("/whoami", web::to(whoami))
            .service(
                web::scope("/t")
                    .wrap(inner)
                    .route("/{tenant}/whoami", web::to(whoami)),
            ),
    )
    .await;
    let res = atest::call_service(&app, actix_request(req)).await;
    actix_answer(res, &audit).await
}

async fn on_axum(req: &Req) -> Got {
    let audit = Recorder::default();
    let outer = tower_tenancy::TenancyLayer::builder(Registry::new())
        .source(tower_tenancy::Source::header())
        .allow_missing(true)
        .audit(audit.sink())
        .build()
        .unwrap();
    let inner = tower_tenancy::TenancyLayer::builder(Registry::new())
        .source(tower_tenancy::Source::path_prefix("/t/"))
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<tower_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let router = axum::Router::new()
        .route("/whoami", get(whoami))
        .route("/t/{tenant}/whoami", get(whoami).layer(inner))
        .layer(outer);
    let res = router.oneshot(axum_request(req)).await.unwrap();
    axum_answer(res, &audit).await
}

fn table() -> Vec<(&'static str, Req, Want)> {
    use Want::{Refused, Served};
    vec![
        (
            "outer only",
            get_("/whoami").h("x-tenant-id", "acme"),
            Served("acme header"),
        ),
        (
            "outer and inner agree",
            get_("/t/acme/whoami").h("x-tenant-id", "acme"),
            Served("acme path"),
        ),
        (
            "inner names another tenant",
            get_("/t/initech/whoami").h("x-tenant-id", "acme"),
            Refused(403, "tenant_conflict"),
        ),
        (
            "inner names an unknown tenant",
            get_("/t/nobody/whoami").h("x-tenant-id", "acme"),
            Refused(403, "tenant_conflict"),
        ),
        ("inner alone", get_("/t/acme/whoami"), Served("acme path")),
        (
            "inner alone, unknown",
            get_("/t/nobody/whoami"),
            Refused(403, "tenant_forbidden"),
        ),
        (
            "inner malformed",
            get_("/t/ACME/whoami").h("x-tenant-id", "acme"),
            Refused(400, "tenant_invalid"),
        ),
        (
            "outer refuses first",
            get_("/t/acme/whoami").h("x-tenant-id", "globex"),
            Refused(403, "tenant_forbidden"),
        ),
        ("neither names one", get_("/whoami"), Served("no tenant")),
    ]
}

#[actix_web::test]
async fn an_inner_resolution_agrees_with_the_outer_one_on_both_adapters() {
    for (name, req, want) in table() {
        let actix = on_actix(&req).await;
        let axum = on_axum(&req).await;
        check(name, &want, &actix, "actix");
        check(name, &want, &axum, "axum");
        assert_eq!(actix, axum, "{name}: the adapters differ");
    }
}
