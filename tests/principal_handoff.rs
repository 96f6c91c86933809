//! The JWT stage puts its principal in the request extensions, its one home, where the
//! resolver of the same `Tenancy` reads it. Wherever the request ends, `Principal::of`
//! (and the `Principal` extractor) must find it: in the handler, in an estimator, in a
//! custom source, on an exempt path, and on the request of a response refused by any
//! stage, as seen by a middleware outside the `Tenancy`. (`tests/nested.rs` has
//! `web::ReqData<Principal>`, inner middleware and nested resolvers.)
#![cfg(feature = "jwt")]

use std::sync::{Arc, Mutex};

use actix_tenancy::{
    policy::{PolicySet, RulePolicy, Rules, TenantPolicy},
    prelude::*,
    quota::{LocalQuota, Period, QuotaPlan, QuotaPlans, TenantQuota},
    resolve::TenantResolverBuilder,
    session::{Grant, Key, KeySet, SessionConfig, SessionManager, TenantAuth},
};
use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::{from_fn, Next},
    test, web, App, HttpResponse,
};
use jsonwebtoken::Algorithm;

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn sessions() -> SessionManager {
    let key = Key::hmac("k1", Algorithm::HS256, &[9u8; 32]).unwrap();
    SessionManager::new(
        SessionConfig::new("https://auth.test", "api"),
        KeySet::signing(key).unwrap(),
    )
}

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::new()
        .with(TenantRecord::new(id("acme"), "pro"))
        .with(TenantRecord::new(id("gone"), "pro").with_status(TenantStatus::Suspended))
}

/// What the outer middleware saw: the status, and the subject `Principal::of` found on
/// the response's request.
type Seen = Arc<Mutex<Vec<(u16, Option<String>)>>>;

/// Records, outside the `Tenancy`, what `Principal::of` finds once the response is made.
async fn outer(
    seen: Seen,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let res = next.call(req).await?;
    let subject = Principal::of(res.request()).map(|p| p.subject().to_owned());
    seen.lock().unwrap().push((res.status().as_u16(), subject));
    Ok(res)
}

fn token(s: &SessionManager, tenant: &str) -> String {
    s.issue(&id(tenant), "user-7", Grant::new().scopes(["reports:read"]))
        .unwrap()
        .access_token
}

fn get(path: &str, token: &str) -> test::TestRequest {
    test::TestRequest::get()
        .uri(path)
        .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
}

/// The estimator's view: the subject `Principal::of` found from the quota stage.
type Estimated = Arc<Mutex<Vec<Option<String>>>>;

fn tenancy(s: &SessionManager, estimated: &Estimated) -> Tenancy {
    let rules = RulePolicy::new(
        PolicySet::new().tier(
            "pro",
            Rules::new()
                .allow("GET /me")
                .allow("GET /health")
                .deny("GET /admin"),
        ),
    )
    .unwrap();
    let plan = QuotaPlan::per_second(1_000).budget(1_000, Period::Day);
    let plans = QuotaPlans::builder().tier("pro", plan).build().unwrap();
    let estimated = Arc::clone(estimated);
    let quota = TenantQuota::builder(LocalQuota::new(plans))
        .cost(move |req: &ServiceRequest| {
            let subject = Principal::of(req).map(|p| p.subject().to_owned());
            estimated.lock().unwrap().push(subject);
            1
        })
        .build()
        .unwrap();
    Tenancy::builder()
        .auth(TenantAuth::new(s.clone()))
        .resolver(
            TenantResolver::builder(registry())
                .source(Source::claim())
                .source(Source::header())
                .exempt("/health")
                .build()
                .unwrap(),
        )
        .policy(TenantPolicy::new(rules))
        .quota(quota)
        .build()
        .unwrap()
}

#[actix_web::test]
async fn the_principal_is_found_wherever_the_request_ends() {
    let s = sessions();
    let seen: Seen = Arc::default();
    let estimated: Estimated = Arc::default();
    let seen_by = Arc::clone(&seen);
    let app = test::init_service(
        App::new()
            .wrap(tenancy(&s, &estimated))
            .wrap(from_fn(move |req, next| {
                outer(Arc::clone(&seen_by), req, next)
            }))
            .route(
                "/me",
                web::get().to(|p: Principal, t: Tenant| async move {
                    // The tenant's context carries the very principal.
                    let carried = t.context().principal().map(Principal::subject);
                    format!(
                        "{} {} {}",
                        p.subject(),
                        t.id(),
                        carried == Some(p.subject())
                    )
                }),
            )
            .route(
                "/health",
                web::get().to(|p: Option<Principal>| async move {
                    p.map_or("none".to_owned(), |p| p.subject().to_owned())
                }),
            )
            .route("/admin", web::get().to(HttpResponse::Ok)),
    )
    .await;
    let acme = token(&s, "acme");

    // Through every stage to the handler: the extractor and the tenant's context.
    let res = test::call_service(&app, get("/me", &acme).to_request()).await;
    assert_eq!(res.status(), 200);
    let body = test::read_body(res).await;
    assert_eq!(body, "user-7 acme true");
    assert_eq!(
        estimated.lock().unwrap().as_slice(),
        [Some("user-7".to_owned())],
        "a cost estimator finds the principal through Principal::of"
    );

    // An exempt path: the JWT stage does not read the token there (as before).
    let res = test::call_service(&app, get("/health", &acme).to_request()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(test::read_body(res).await, "none");

    // Refused by the policy stage, after resolution.
    let res = test::call_service(&app, get("/admin", &acme).to_request()).await;
    assert_eq!(res.status(), 403);

    // Refused by the resolver: a conflicting header, and a suspended tenant.
    let conflict = get("/me", &acme).insert_header(("x-tenant-id", "globex"));
    let res = test::call_service(&app, conflict.to_request()).await;
    assert_eq!(res.status(), 403);
    let res = test::call_service(&app, get("/me", &token(&s, "gone")).to_request()).await;
    assert_eq!(res.status(), 403);

    // Refused by the JWT stage itself: there is no principal to find.
    let res = test::call_service(&app, get("/me", "not.a.token").to_request()).await;
    assert_eq!(res.status(), 401);

    let subject = Some("user-7".to_owned());
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            (200, subject.clone()),
            (200, None),
            (403, subject.clone()),
            (403, subject.clone()),
            (403, subject),
            (401, None),
        ],
        "outside the Tenancy, Principal::of answers as when the principal was attached"
    );
}

/// The JWT stage and `resolver` (its claim source and the rest), nothing else.
fn jwt_and(s: &SessionManager, resolver: TenantResolverBuilder) -> Tenancy {
    Tenancy::builder()
        .auth(TenantAuth::new(s.clone()))
        .resolver(resolver.build().unwrap())
        .build()
        .unwrap()
}

#[actix_web::test]
async fn a_custom_source_reads_the_principal_from_the_request() {
    let s = sessions();
    // A source that derives the tenant from the principal's subject by itself: it
    // reads Principal::of(req), so the principal must be attached before it runs.
    let by_subject =
        Source::custom(|req| {
            Ok(Principal::of(req)
                .and_then(|p| p.subject().strip_prefix("user-of-").map(str::to_owned)))
        });
    let tenancy = jwt_and(
        &s,
        TenantResolver::builder(registry())
            .source(Source::claim())
            .source(by_subject),
    );
    let app = test::init_service(
        App::new().wrap(tenancy).route(
            "/me",
            web::get()
                .to(|p: Principal, t: Tenant| async move { format!("{} {}", p.subject(), t.id()) }),
        ),
    )
    .await;
    let agree = s.issue(&id("acme"), "user-of-acme", Grant::new()).unwrap();
    let res = test::call_service(&app, get("/me", &agree.access_token).to_request()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(test::read_body(res).await, "user-of-acme acme");
    // The custom source names another tenant than the claim: it did read the principal.
    let disagree = s
        .issue(&id("acme"), "user-of-globex", Grant::new())
        .unwrap();
    let res = test::call_service(&app, get("/me", &disagree.access_token).to_request()).await;
    assert_eq!(
        res.status(),
        403,
        "a conflict between the claim and the custom source"
    );
}

#[actix_web::test]
async fn a_principal_without_a_tenant_is_attached_when_none_is_resolved() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let key = Key::hmac("k1", Algorithm::HS256, &[9u8; 32]).unwrap();
    let s = SessionManager::new(
        SessionConfig::new("https://auth.test", "api").require_tenant(false),
        KeySet::signing(key).unwrap(),
    );
    let tenancy = jwt_and(
        &s,
        TenantResolver::builder(registry())
            .source(Source::claim())
            .allow_missing(true),
    );
    let app = test::init_service(App::new().wrap(tenancy).route(
        "/who",
        web::get().to(|p: Principal, t: Option<Tenant>| async move {
            format!(
                "{} {}",
                p.subject(),
                t.map_or("none".into(), |t| t.id().to_string())
            )
        }),
    ))
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://auth.test", "aud": "api", "sub": "operator",
        "iat": now, "nbf": now, "exp": now + 600, "jti": "no-tenant-1",
    });
    let mut head = Header::new(Algorithm::HS256);
    head.kid = Some("k1".into());
    let token = encode(&head, &claims, &EncodingKey::from_secret(&[9u8; 32])).unwrap();
    let res = test::call_service(&app, get("/who", &token).to_request()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(test::read_body(res).await, "operator none");
}

#[actix_web::test]
async fn the_principal_the_tenant_was_resolved_with_is_the_one_handlers_see() {
    let s = sessions();
    let tenancy = jwt_and(
        &s,
        TenantResolver::builder(registry())
            .source(Source::claim())
            .allow_missing(true)
            .exempt("/health"),
    );
    // An authentication layer outside the Tenancy attaches a principal of its own
    // (registered last, it runs first); the JWT stage inside verifies another.
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .wrap(from_fn(|req: ServiceRequest, next: Next<_>| async move {
                Principal::new("outer-user").attach(&req);
                next.call(req).await
            }))
            .route(
                "/me",
                web::get().to(|p: Principal, t: Option<Tenant>| async move {
                    let tenant = t.map_or("none".to_owned(), |t| t.id().to_string());
                    format!("{} {tenant}", p.subject())
                }),
            )
            .route(
                "/health",
                web::get().to(|p: Principal| async move { p.subject().to_owned() }),
            ),
    )
    .await;
    let res = test::call_service(&app, get("/me", &token(&s, "acme")).to_request()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        test::read_body(res).await,
        "user-7 acme",
        "the token's principal, which named the tenant, not the outer layer's"
    );
    // Where the JWT stage does not run, the outer layer's principal is the one.
    let res = test::call_service(&app, get("/health", "ignored").to_request()).await;
    assert_eq!(test::read_body(res).await, "outer-user");
}
