//! The stages decide before routing, on the route pattern actix matches first; the router
//! then runs the first resource whose guards pass (the method guard `#[get]` and
//! `#[post]` put on the resource, or a custom guard). Where patterns overlap, the two can
//! differ: these tests send requests the router gives to another handler than the first
//! matching pattern's, in every registration order, and check that a policy deny still
//! holds and that the route's cost is still charged.

use std::sync::Arc;

use actix_tenancy::{
    policy::{PolicySet, RulePolicy, Rules, TenantPolicy},
    prelude::*,
    quota::{LocalQuota, Period, QuotaPlan, QuotaPlans, RouteCost, TenantQuota},
};
use actix_web::{
    dev::ServiceRequest, get, guard, http::Method, post, put, test, web, App, HttpResponse,
};

#[get("/items/{id}")]
async fn item(id: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().body(format!("item {id}"))
}

#[post("/items/export")]
async fn export() -> HttpResponse {
    HttpResponse::Ok().body("exported every item")
}

#[put("/items/{id}")]
async fn replace(id: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().body(format!("replaced {id}"))
}

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod send;
}
use common::send::send;

fn registry() -> Arc<InMemoryRegistry> {
    Arc::new(
        InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "free")),
    )
}

fn resolver() -> TenantResolver {
    TenantResolver::builder(registry())
        .source(Source::header())
        .build()
        .unwrap()
}

/// Tier `free`: every item route, but never the export.
fn policy() -> TenantPolicy {
    let rules = RulePolicy::new(
        PolicySet::new().tier(
            "free",
            Rules::new()
                .allow("* /items/*")
                .deny("POST /items/export")
                .allow("* /things/*")
                .deny("* /things/special"),
        ),
    )
    .unwrap();
    TenantPolicy::builder(rules).build().unwrap()
}

/// 100 units a day; the export costs 50.
fn quota() -> TenantQuota {
    let plans = QuotaPlans::builder()
        .tier(
            "free",
            QuotaPlan::per_minute(1_000).budget(100, Period::Day),
        )
        .build()
        .unwrap();
    let cost = RouteCost::builder()
        .route(Method::POST, "/items/export", |_: &ServiceRequest| 50)
        .route(Method::GET, "/things/{id}", |_: &ServiceRequest| 2)
        .route(Method::GET, "/things/special", |_: &ServiceRequest| 30)
        .build()
        .unwrap();
    TenantQuota::builder(LocalQuota::new(plans))
        .cost(cost)
        .build()
        .unwrap()
}

fn with_policy() -> Tenancy {
    Tenancy::builder()
        .resolver(resolver())
        .policy(policy())
        .build()
        .unwrap()
}

fn with_quota() -> Tenancy {
    Tenancy::builder()
        .resolver(resolver())
        .quota(quota())
        .build()
        .unwrap()
}

fn call(method: Method, path: &str) -> test::TestRequest {
    test::TestRequest::default()
        .method(method)
        .uri(path)
        .insert_header(("x-tenant-id", "acme"))
}

/// What the budget says is left (the `day` item of the `RateLimit` field).
async fn day_left<S, B>(app: &S, req: test::TestRequest) -> (u16, String)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    let res = test::call_service(app, req.to_request()).await;
    let field = res
        .headers()
        .get("ratelimit")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (res.status().as_u16(), field)
}

/// Every order of the three handlers.
fn orders() -> Vec<[usize; 3]> {
    vec![
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ]
}

/// The three macro handlers, registered in `order`.
fn register(order: [usize; 3]) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        for i in order {
            match i {
                0 => cfg.service(item),
                1 => cfg.service(export),
                _ => cfg.service(replace),
            };
        }
    }
}

#[actix_web::test]
async fn a_denied_route_is_denied_in_every_registration_order() {
    for order in orders() {
        let app =
            test::init_service(App::new().wrap(with_policy()).configure(register(order))).await;
        let (status, body) = send(&app, call(Method::POST, "/items/export")).await;
        assert_eq!(status, 403, "order {order:?}: {body}");
        assert!(body.contains("policy_denied"), "order {order:?}: {body}");
        assert!(!body.contains("exported"), "order {order:?}");
        // What the tier may do is still served, whichever handler actix picks.
        for (method, path, want) in [
            (Method::GET, "/items/7", "item 7"),
            (Method::PUT, "/items/7", "replaced 7"),
            (Method::GET, "/items/export", "item export"),
        ] {
            let (status, body) = send(&app, call(method.clone(), path)).await;
            assert_eq!(
                (status, &*body),
                (200, want),
                "order {order:?}: {method} {path}"
            );
        }
    }
}

#[actix_web::test]
async fn a_routes_cost_is_charged_in_every_registration_order() {
    for order in orders() {
        let app =
            test::init_service(App::new().wrap(with_quota()).configure(register(order))).await;
        let (status, field) = day_left(&app, call(Method::POST, "/items/export")).await;
        assert_eq!(status, 200, "order {order:?}");
        assert!(field.contains("\"day\";r=50"), "order {order:?}: {field}");
        // An item costs the default unit, whatever order the routes were registered in.
        let (status, field) = day_left(&app, call(Method::GET, "/items/export")).await;
        assert_eq!(status, 200, "order {order:?}");
        assert!(field.contains("\"day\";r=49"), "order {order:?}: {field}");
        // Another 50 are not there: 49 left.
        let (status, _) = day_left(&app, call(Method::POST, "/items/export")).await;
        assert_eq!(status, 429, "order {order:?}");
    }
}

#[actix_web::test]
async fn resources_with_routes_and_custom_guards_are_judged_as_they_run() {
    let things = |first_guarded: bool| {
        let guarded = web::resource("/things/{id}")
            .guard(guard::Header("x-kind", "plain"))
            .route(web::get().to(|| async { "a thing" }));
        let special = web::resource("/things/special").route(web::get().to(|| async { "special" }));
        move |cfg: &mut web::ServiceConfig| {
            if first_guarded {
                cfg.service(guarded).service(special);
            } else {
                cfg.service(special).service(guarded);
            }
        }
    };
    for first_guarded in [true, false] {
        let app = test::init_service(
            App::new()
                .wrap(with_policy())
                .configure(things(first_guarded)),
        )
        .await;
        // No `x-kind`: the guarded resource does not take it; the special one would.
        let (status, body) = send(&app, call(Method::GET, "/things/special")).await;
        assert_eq!(status, 403, "guarded first: {first_guarded}: {body}");
        let req = call(Method::GET, "/things/7").insert_header(("x-kind", "plain"));
        assert_eq!(send(&app, req).await, (200, "a thing".into()));

        let app = test::init_service(
            App::new()
                .wrap(with_quota())
                .configure(things(first_guarded)),
        )
        .await;
        let (status, field) = day_left(&app, call(Method::GET, "/things/special")).await;
        assert_eq!(status, 200);
        assert!(
            field.contains("\"day\";r=70"),
            "guarded first: {first_guarded}: {field}"
        );
    }
}

#[actix_web::test]
async fn web_resource_routes_on_overlapping_patterns() {
    // `web::resource(..).route(..)`: the method guard is on the route, inside the
    // resource; actix does not look past a resource whose routes all refuse, so this
    // layout cannot reach `/items/export` through `/items/{id}`. Both orders are
    // still decided on what runs.
    for export_first in [true, false] {
        let items = web::resource("/items/{id}").route(web::get().to(|| async { "an item" }));
        let exports = web::resource("/items/export").route(web::post().to(|| async { "exported" }));
        let app = if export_first {
            App::new().service(exports).service(items)
        } else {
            App::new().service(items).service(exports)
        };
        let app = test::init_service(app.wrap(with_policy())).await;
        let (status, body) = send(&app, call(Method::POST, "/items/export")).await;
        assert!(!body.contains("exported"), "export first: {export_first}");
        assert!(
            status == 403 || status == 405,
            "export first: {export_first}: {status}"
        );
        assert_eq!(send(&app, call(Method::GET, "/items/7")).await.0, 200);
    }
}

#[actix_web::test]
async fn a_cached_decision_for_one_path_is_not_reused_for_another_of_the_same_pattern() {
    use actix_tenancy::policy::CachedPolicy;
    let rules = RulePolicy::new(PolicySet::new().tier(
        "free",
        Rules::new().allow("* /items/*").deny("POST /items/export"),
    ))
    .unwrap();
    let cached = CachedPolicy::new(rules, std::time::Duration::from_secs(60));
    let tenancy = Tenancy::builder()
        .resolver(resolver())
        .policy(TenantPolicy::new(cached))
        .build()
        .unwrap();
    // `#[post("/items/export")]` first, a `POST` on `/items/{id}` after it: both paths
    // match `/items/{id}` first, guards aside.
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .service(item)
            .service(export)
            .route("/items/{id}", web::post().to(|| async { "posted" })),
    )
    .await;
    assert_eq!(
        send(&app, call(Method::POST, "/items/9")).await,
        (200, "posted".into())
    );
    let (status, body) = send(&app, call(Method::POST, "/items/export")).await;
    assert_eq!(status, 403, "{body}");
}

#[actix_web::test]
async fn a_deny_on_a_parameter_route_holds_behind_a_literal_one() {
    // `/items/export` (POST only) is registered first and is the first pattern for
    // `PUT /items/export`, which actix gives to `PUT /items/{id}`: denied for the tier.
    let rules = RulePolicy::new(PolicySet::new().tier(
        "free",
        Rules::new().allow("* /items/*").deny("PUT /items/{id}"),
    ))
    .unwrap();
    let tenancy = Tenancy::builder()
        .resolver(resolver())
        .policy(TenantPolicy::new(rules))
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .service(export)
            .service(replace)
            .service(item),
    )
    .await;
    let (status, body) = send(&app, call(Method::PUT, "/items/export")).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("replaced"));
    assert_eq!(send(&app, call(Method::POST, "/items/export")).await.0, 200);
    assert_eq!(send(&app, call(Method::GET, "/items/7")).await.0, 200);
}
