//! Resolvers and pipelines nested inside one another.
//!
//! - A resolver inside a request an outer `Tenancy` already resolved agrees with the
//!   first resolution or fails closed: whatever its header, subdomain or path source
//!   names, it never moves the request to another tenant.
//! - The verified principal has one home, the request extensions: the extractor,
//!   `web::ReqData<Principal>`, an inner middleware and a nested resolver all find the
//!   one the tenant was resolved with.
//! - An exempt path of the outer `Tenancy` leaves nothing an inner one mistakes for a
//!   resolution: a `Tenancy` on a scope the outer one exempts works on its own.
#![cfg(feature = "jwt")]

use std::sync::{Arc, Mutex};

use actix_tenancy::{
    prelude::*,
    session::{Grant, Key, KeySet, SessionConfig, SessionManager, TenantAuth},
};
use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::{from_fn, Next},
    test, web, App, HttpMessage as _,
};
use jsonwebtoken::Algorithm;

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod send;
}
use common::send::send;

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn sessions() -> SessionManager {
    let key = Key::hmac("k1", Algorithm::HS256, &[7u8; 32]).unwrap();
    SessionManager::new(
        SessionConfig::new("https://auth.test", "api"),
        KeySet::signing(key).unwrap(),
    )
}

fn reg() -> InMemoryRegistry {
    InMemoryRegistry::new()
        .with(TenantRecord::new(id("acme"), "pro"))
        .with(TenantRecord::new(id("globex"), "pro"))
}

fn token(s: &SessionManager, tenant: &str, subject: &str) -> String {
    s.issue(&id(tenant), subject, Grant::new())
        .unwrap()
        .access_token
}

fn bearer(req: test::TestRequest, token: &str) -> test::TestRequest {
    req.insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
}

/// The outer `Tenancy`: JWT auth, then the claim.
fn outer(s: &SessionManager) -> Tenancy {
    Tenancy::builder()
        .auth(TenantAuth::new(s.clone()))
        .resolver(
            TenantResolver::builder(reg())
                .source(Source::claim())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

#[actix_web::test]
async fn a_nested_resolver_never_moves_a_resolved_request_to_another_tenant() {
    let s = sessions();
    // The layout the review reproduced: a resolver reading the claim, then the header,
    // wrapped inside a `Tenancy` that resolved from the verified claim.
    let app = test::init_service(
        App::new()
            .wrap(
                TenantResolver::builder(reg())
                    .source(Source::claim())
                    .source(Source::header())
                    .build()
                    .unwrap(),
            )
            .wrap(outer(&s))
            .route(
                "/me",
                web::get().to(|t: Tenant| async move { t.id().to_string() }),
            ),
    )
    .await;
    let acme = token(&s, "acme", "user-1");
    let spoofed =
        bearer(test::TestRequest::get().uri("/me"), &acme).insert_header(("x-tenant-id", "globex"));
    let (status, body) = send(&app, spoofed).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("tenant_conflict"), "{body}");

    let agreeing =
        bearer(test::TestRequest::get().uri("/me"), &acme).insert_header(("x-tenant-id", "acme"));
    assert_eq!(send(&app, agreeing).await, (200, "acme".into()));
    let plain = bearer(test::TestRequest::get().uri("/me"), &acme);
    assert_eq!(send(&app, plain).await, (200, "acme".into()));
}

#[actix_web::test]
async fn header_subdomain_and_path_sources_inside_a_resolved_request_agree_or_fail() {
    let s = sessions();
    // Inner resolvers that read no claim: only a source the client controls.
    let inner = |source: Source| {
        TenantResolver::builder(reg())
            .source(source)
            .build()
            .unwrap()
    };
    let app = test::init_service(
        App::new()
            .wrap(outer(&s))
            .service(web::scope("/h").wrap(inner(Source::header())).route(
                "/me",
                web::get().to(|t: Tenant| async move { t.id().to_string() }),
            ))
            .service(
                web::scope("/s")
                    .wrap(inner(Source::subdomain(["example.com"])))
                    .route(
                        "/me",
                        web::get().to(|t: Tenant| async move { t.id().to_string() }),
                    ),
            )
            .service(
                web::scope("/t/{tenant}")
                    .wrap(inner(Source::path_prefix("/t/")))
                    .route(
                        "/me",
                        web::get().to(|t: Tenant| async move { t.id().to_string() }),
                    ),
            ),
    )
    .await;
    let acme = token(&s, "acme", "user-1");
    let get = |uri: &str| bearer(test::TestRequest::get().uri(uri), &acme);

    // Another tenant named by each client-controlled source: a conflict, never globex.
    for (req, what) in [
        (
            get("/h/me").insert_header(("x-tenant-id", "globex")),
            "header",
        ),
        (
            get("/s/me").insert_header((header::HOST, "globex.example.com")),
            "subdomain",
        ),
        (get("/t/globex/me"), "path"),
    ] {
        let (status, body) = send(&app, req).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert!(body.contains("tenant_conflict"), "{what}: {body}");
    }
    // The same tenant, or none named: the outer resolution stands.
    for (req, what) in [
        (
            get("/h/me").insert_header(("x-tenant-id", "acme")),
            "header",
        ),
        (get("/h/me"), "no header"),
        (
            get("/s/me").insert_header((header::HOST, "acme.example.com")),
            "subdomain",
        ),
        (get("/t/acme/me"), "path"),
    ] {
        assert_eq!(send(&app, req).await, (200, "acme".into()), "{what}");
    }
    // Malformed input is still a 400, not a pass.
    let (status, _) = send(&app, get("/h/me").insert_header(("x-tenant-id", "../x"))).await;
    assert_eq!(status, 400);
}

/// What an inner middleware read from the extensions.
type Seen = Arc<Mutex<Vec<Option<String>>>>;

async fn reads_extensions(
    seen: Seen,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let subject = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject().to_owned());
    seen.lock().unwrap().push(subject);
    next.call(req).await
}

/// An authentication layer outside everything that attaches a principal of its own.
async fn attaches_outsider(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    Principal::new("outsider")
        .with_tenant(id("globex"))
        .attach(&req);
    next.call(req).await
}

#[actix_web::test]
async fn every_reader_finds_the_principal_the_tenant_was_resolved_with() {
    let s = sessions();
    let seen: Seen = Arc::default();
    let inner_seen = Arc::clone(&seen);
    let app = test::init_service(
        App::new()
            .wrap(from_fn(move |req, next| {
                reads_extensions(Arc::clone(&inner_seen), req, next)
            }))
            .wrap(outer(&s))
            .wrap(from_fn(attaches_outsider))
            .route(
                "/me",
                web::get().to(
                    |t: Tenant, p: Principal, data: web::ReqData<Principal>| async move {
                        format!(
                            "{} {} {} {}",
                            t.id(),
                            p.subject(),
                            data.subject(),
                            t.context().principal().map_or("none", Principal::subject)
                        )
                    },
                ),
            ),
    )
    .await;
    let acme = token(&s, "acme", "user-1");
    let req = bearer(test::TestRequest::get().uri("/me"), &acme);
    assert_eq!(
        send(&app, req).await,
        (200, "acme user-1 user-1 user-1".into())
    );
    assert_eq!(seen.lock().unwrap().as_slice(), [Some("user-1".to_owned())]);
}

#[actix_web::test]
async fn a_tenancy_on_a_scope_the_outer_one_exempts_works_on_its_own() {
    let s = sessions();
    // The layout a new user wrote: JWT and the claim for the app, except `/public/`,
    // where a second `Tenancy` lets anonymous callers name their tenant by header.
    let outer = Tenancy::builder()
        .auth(TenantAuth::new(s.clone()))
        .resolver(
            TenantResolver::builder(reg())
                .source(Source::claim())
                .exempt_prefix("/public/")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let public = Tenancy::builder()
        .auth(
            TenantAuth::builder(s.clone())
                .allow_anonymous(true)
                .build()
                .unwrap(),
        )
        .resolver(
            TenantResolver::builder(reg())
                .source(Source::claim())
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(outer)
            .service(web::scope("/public").wrap(public).route(
                "/me",
                web::get().to(|t: Tenant| async move { t.id().to_string() }),
            ))
            .route(
                "/me",
                web::get().to(|t: Tenant| async move { t.id().to_string() }),
            ),
    )
    .await;
    let acme = token(&s, "acme", "user-1");

    let anonymous = test::TestRequest::get()
        .uri("/public/me")
        .insert_header(("x-tenant-id", "globex"));
    assert_eq!(send(&app, anonymous).await, (200, "globex".into()));
    let signed = bearer(test::TestRequest::get().uri("/public/me"), &acme);
    assert_eq!(send(&app, signed).await, (200, "acme".into()));
    let spoofed = bearer(test::TestRequest::get().uri("/public/me"), &acme)
        .insert_header(("x-tenant-id", "globex"));
    let (status, body) = send(&app, spoofed).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("tenant_conflict"), "{body}");
    let (status, _) = send(&app, test::TestRequest::get().uri("/public/me")).await;
    assert_eq!(status, 401, "no tenant named at all");

    // Outside `/public/` the outer `Tenancy` still wants a token.
    let (status, _) = send(
        &app,
        test::TestRequest::get()
            .uri("/me")
            .insert_header(("x-tenant-id", "acme")),
    )
    .await;
    assert_eq!(status, 401);
    let signed = bearer(test::TestRequest::get().uri("/me"), &acme);
    assert_eq!(send(&app, signed).await, (200, "acme".into()));
}

#[actix_web::test]
async fn an_auth_stage_behind_a_resolver_that_settled_a_tenant_fails_closed() {
    let s = sessions();
    // A `Tenancy` with JWT auth on a scope the outer resolver does not exempt: the
    // outer one settled the tenant from a header before any token was read.
    let app = test::init_service(
        App::new()
            .wrap(
                TenantResolver::builder(reg())
                    .source(Source::header())
                    .build()
                    .unwrap(),
            )
            .service(web::scope("/api").wrap(outer(&s)).route(
                "/me",
                web::get().to(|t: Tenant| async move { t.id().to_string() }),
            )),
    )
    .await;
    let acme = token(&s, "acme", "user-1");
    let req = bearer(test::TestRequest::get().uri("/api/me"), &acme)
        .insert_header(("x-tenant-id", "globex"));
    let (status, body) = send(&app, req).await;
    assert_eq!(status, 500, "{body}");
    assert!(!body.contains("globex") && !body.contains("acme"), "{body}");
}
