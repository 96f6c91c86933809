//! How the crate sits in apps as users write them: a `Tenancy` wrapped on a
//! `web::scope(..)` (routes, exemptions and policy see the full path), `#[get]`-style
//! macro handlers taking `Tenant`, and routes outside the scope left alone.
//! (`tests/interop-default/` checks that an app with actix-web's default features
//! builds beside the crate; CI runs `cargo check` on it.)

use actix_tenancy::{
    policy::{PolicySet, RulePolicy, TenantPolicy},
    prelude::*,
};
use actix_web::{get, test, web, App, HttpResponse};

#[get("/items/{id}")]
async fn item(tenant: Tenant, id: web::Path<u32>) -> String {
    format!("{} item {id}", tenant.id())
}

#[get("/reports")]
async fn reports(tenant: Tenant) -> String {
    format!("{} reports", tenant.id())
}

fn tenancy() -> Tenancy {
    let registry = InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "free"))
        .with(TenantRecord::new(TenantId::parse("globex").unwrap(), "pro"));
    // Rules name the full path: the scope's prefix included.
    let rules = PolicySet::from_json(
        r#"{
          "default": { "routes": { "allow": ["GET /api/health"] } },
          "tiers": {
            "free": { "routes": { "allow": ["GET /api/items/{id}"] } },
            "pro": { "routes": { "allow": ["GET /api/**"] } }
          }
        }"#,
    )
    .and_then(RulePolicy::new)
    .unwrap();
    Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::header())
                .exempt("/api/health")
                .build()
                .unwrap(),
        )
        .policy(TenantPolicy::new(rules))
        .build()
        .unwrap()
}

async fn get<S, B>(app: &S, path: &str, tenant: Option<&str>) -> (u16, String)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let mut req = test::TestRequest::get().uri(path);
    if let Some(t) = tenant {
        req = req.insert_header(("X-Tenant-ID", t));
    }
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status().as_u16();
    (
        status,
        String::from_utf8(test::read_body(res).await.to_vec()).unwrap(),
    )
}

#[actix_web::test]
async fn a_scope_wrapped_tenancy_sees_full_paths_and_macro_handlers_take_tenant() {
    let app = test::init_service(
        App::new()
            .service(
                web::scope("/api")
                    .wrap(tenancy())
                    .service(item)
                    .service(reports)
                    .route("/health", web::get().to(HttpResponse::Ok)),
            )
            // Outside the scope: no tenancy at all.
            .route("/public", web::get().to(|| async { "public" })),
    )
    .await;
    assert_eq!(
        get(&app, "/api/items/7", Some("acme")).await,
        (200, "acme item 7".into())
    );
    // The free tier's rule allows items only, by the full route pattern.
    assert_eq!(get(&app, "/api/reports", Some("acme")).await.0, 403);
    assert_eq!(
        get(&app, "/api/reports", Some("globex")).await,
        (200, "globex reports".into())
    );
    // The exemption names the full path too.
    assert_eq!(get(&app, "/api/health", None).await.0, 200);
    assert_eq!(get(&app, "/api/items/7", None).await.0, 401, "no tenant");
    assert_eq!(get(&app, "/public", None).await, (200, "public".into()));
}

#[actix_web::test]
async fn two_scopes_with_their_own_tenancy_do_not_mix() {
    let header = |name: &'static str| {
        TenantResolver::builder(
            InMemoryRegistry::new()
                .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro")),
        )
        .source(Source::header_named(name))
        .build()
        .unwrap()
    };
    let app = test::init_service(
        App::new()
            .service(web::scope("/a").wrap(header("x-a")).route(
                "/who",
                web::get().to(|t: Tenant| async move { t.id().to_string() }),
            ))
            .service(web::scope("/b").wrap(header("x-b")).route(
                "/who",
                web::get().to(|t: Tenant| async move { t.id().to_string() }),
            )),
    )
    .await;
    let req = |path: &str, name: &str| {
        test::TestRequest::get()
            .uri(path)
            .insert_header((name.to_owned(), "acme"))
            .to_request()
    };
    assert_eq!(
        test::call_service(&app, req("/a/who", "x-a"))
            .await
            .status(),
        200
    );
    assert_eq!(
        test::call_service(&app, req("/a/who", "x-b"))
            .await
            .status(),
        401
    );
    assert_eq!(
        test::call_service(&app, req("/b/who", "x-b"))
            .await
            .status(),
        200
    );
}

#[actix_web::test]
async fn baggage_names_the_tenant_only_for_trusted_callers() {
    use actix_tenancy::baggage;
    let registry =
        InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
    // Trusted: here a header standing in for what a real service checks (a verified
    // client certificate, the port internal callers use).
    let resolver = TenantResolver::builder(registry)
        .source(baggage::trusted_source(|req| {
            req.headers().contains_key("x-test-internal")
        }))
        .build()
        .unwrap();
    let app = test::init_service(App::new().wrap(resolver).route(
        "/who",
        // The tenant goes on downstream, with its tier.
        web::get().to(|t: Tenant| async move {
            let (_, value) = baggage::outgoing(&t, true);
            value.to_str().unwrap().to_owned()
        }),
    ))
    .await;
    let req = |internal: bool, baggage: &str| {
        let mut r = test::TestRequest::get()
            .uri("/who")
            .insert_header(("baggage", baggage));
        if internal {
            r = r.insert_header(("x-test-internal", "1"));
        }
        r.to_request()
    };
    let res = test::call_service(&app, req(true, "userId=alice,tenant.id=acme")).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(test::read_body(res).await, "tenant.id=acme,tenant.tier=pro");
    // From an untrusted caller the same header names nothing.
    let res = test::call_service(&app, req(false, "tenant.id=acme")).await;
    assert_eq!(res.status().as_u16(), 401);
    // Two tenants in one baggage: invalid, never one of them.
    let res = test::call_service(&app, req(true, "tenant.id=acme,tenant.id=globex")).await;
    assert_eq!(res.status().as_u16(), 400);
}
