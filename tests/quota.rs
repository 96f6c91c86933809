//! The quota stage through a real `App`: refusals and their headers, costs, shadow
//! mode, corrections, refunds, and the stage's place in the pipeline.

use std::sync::Arc;

use actix_tenancy::{
    prelude::*,
    quota::{
        ActualCost, HeaderCost, LocalQuota, Period, QueryCost, QuotaPlan, QuotaPlans, TenantQuota,
    },
};
use actix_web::{
    dev::{Service, ServiceResponse},
    http::StatusCode,
    test, web, App, HttpMessage, HttpRequest, HttpResponse,
};
use serde_json::Value;

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod spellings;
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn registry() -> Arc<InMemoryRegistry> {
    Arc::new(
        InMemoryRegistry::new()
            .with(TenantRecord::new(tid("globex"), "free"))
            .with(TenantRecord::new(tid("hooli"), "free"))
            .with(TenantRecord::new(tid("acme"), "pro"))
            .with(TenantRecord::new(tid("wonka"), "platinum"))
            .with(TenantRecord::new(tid("shadowy"), "trial")),
    )
}

fn plans() -> QuotaPlans {
    QuotaPlans::builder()
        .tier("free", QuotaPlan::per_minute(5).budget(1_000, Period::Day))
        .tier("pro", QuotaPlan::per_minute(50).budget(100, Period::Day))
        .tier("trial", QuotaPlan::per_minute(1).shadow(true))
        .build()
        .unwrap()
}

fn tenancy(registry: Arc<InMemoryRegistry>, quota: TenantQuota) -> Tenancy {
    Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::header())
                .exempt("/health")
                .build()
                .unwrap(),
        )
        .quota(quota)
        .build()
        .unwrap()
}

async fn handler(req: HttpRequest) -> HttpResponse {
    if let Some(used) = req.headers().get("x-test-actual") {
        let used: u32 = used.to_str().unwrap().parse().unwrap();
        req.extensions_mut().insert(ActualCost(used));
    }
    if req.headers().contains_key("x-test-fail") {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok().body("ok")
}

macro_rules! app {
    ($tenancy:expr) => {
        test::init_service(
            App::new()
                .wrap($tenancy)
                .route("/health", web::get().to(HttpResponse::Ok))
                .default_service(web::to(handler)),
        )
        .await
    };
}

fn req(tenant: &str) -> test::TestRequest {
    test::TestRequest::get()
        .uri("/x")
        .insert_header(("x-tenant-id", tenant.to_owned()))
}

fn header(res: &ServiceResponse<impl actix_web::body::MessageBody>, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn code<B: actix_web::body::MessageBody>(res: ServiceResponse<B>) -> Value {
    let body = test::read_body(res).await;
    serde_json::from_slice(&body).unwrap()
}

#[actix_web::test]
async fn the_burst_passes_then_429_with_every_header() {
    let app = app!(tenancy(
        registry(),
        TenantQuota::new(LocalQuota::new(plans()))
    ));
    for i in 0..5 {
        let res = test::call_service(&app, req("globex").to_request()).await;
        assert_eq!(res.status(), 200, "request {i}");
        assert_eq!(
            header(&res, "x-quota-remaining").unwrap(),
            (4 - i).to_string()
        );
        assert_eq!(
            header(&res, "ratelimit-policy").unwrap(),
            "\"rate\";q=5;w=60, \"day\";q=1000;w=86400"
        );
        let state = header(&res, "ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"rate\";r={};t=", 4 - i)),
            "{state}"
        );
        assert!(
            state.contains(&format!("\"day\";r={};t=", 999 - i)),
            "{state}"
        );
    }
    let res = test::call_service(&app, req("globex").to_request()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&res, "retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=12).contains(&retry),
        "one unit comes back every 12 s: {retry}"
    );
    assert_eq!(header(&res, "x-quota-remaining").unwrap(), "0");
    assert!(header(&res, "ratelimit")
        .unwrap()
        .starts_with("\"rate\";r=0;t="));
    let policy = header(&res, "ratelimit-policy").unwrap();
    assert!(!policy.contains("globex"), "no tenant id in the fields");
    let body = code(res).await;
    assert_eq!(body["code"], "quota_exceeded");
    assert_eq!(body["status"], 429);

    // Another tenant on the same tier has its own limiter.
    let res = test::call_service(&app, req("hooli").to_request()).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn success_headers_can_be_turned_off_but_refusals_keep_them() {
    let quota = TenantQuota::builder(LocalQuota::new(plans()))
        .headers_on_success(false)
        .build()
        .unwrap();
    let app = app!(tenancy(registry(), quota));
    for _ in 0..5 {
        let res = test::call_service(&app, req("globex").to_request()).await;
        assert_eq!(res.status(), 200);
        assert!(header(&res, "x-quota-remaining").is_none());
        assert!(header(&res, "ratelimit").is_none());
    }
    let res = test::call_service(&app, req("globex").to_request()).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "x-quota-remaining").unwrap(), "0");
}

#[actix_web::test]
async fn query_costs_are_charged_and_hostile_ones_refused() {
    let quota = TenantQuota::builder(LocalQuota::new(plans()))
        .cost(QueryCost::new("max_tokens").max(60))
        .build()
        .unwrap();
    let app = app!(tenancy(registry(), quota));
    let call = |query: &'static str| {
        let app = &app;
        async move {
            let r = test::TestRequest::get()
                .uri(&format!("/x?{query}"))
                .insert_header(("x-tenant-id", "acme"))
                .to_request();
            let res = test::call_service(app, r).await;
            (res.status().as_u16(), header(&res, "x-quota-remaining"))
        }
    };
    for bad in [
        "max_tokens=-1",
        "max_tokens=abc",
        "max_tokens=",
        "max_tokens",
        "max_tokens=61",
        "max_tokens=%35",
        "max_tokens=5&max_tokens=5",
        "max_tokens=99999999999",
        "max%5Ftokens=60",
        "max%5ftokens=1&max_tokens=1",
        "%6Dax_tokens=5",
    ] {
        assert_eq!(call(bad).await.0, 400, "{bad:?}");
    }
    // The pro rate is 50 units a minute: 30 + 20 pass, one more unit does not. The
    // refusals above charged nothing: what remains (the tighter of the rate and the
    // budget) falls by exactly 30 and 20.
    let ok = |left: &str| (200, Some(left.to_owned()));
    assert_eq!(call("max_tokens=30").await, ok("20"));
    // A request naming no cost is charged the least a request costs, one unit.
    assert_eq!(
        call("max_tokens=0").await,
        ok("19"),
        "a cost of 0 is charged the minimum"
    );
    assert_eq!(call("other=1&max_tokens=19").await, ok("0"));
    assert_eq!(call("max_tokens=1").await.0, 429);
}

#[actix_web::test]
async fn header_costs_are_charged_and_hostile_ones_refused() {
    let quota = TenantQuota::builder(LocalQuota::new(plans()))
        .cost(HeaderCost::new("x-token-count").unwrap().max(50))
        .build()
        .unwrap();
    let app = app!(tenancy(registry(), quota));
    for bad in [
        "-1",
        "abc",
        "1e3",
        "99999999999",
        "51",
        "",
        " 5",
        "5 ",
        "+5",
        "0x10",
    ] {
        let res = test::call_service(
            &app,
            req("acme")
                .insert_header(("x-token-count", bad))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), 400, "{bad:?}");
        assert_eq!(code(res).await["code"], "cost_invalid", "{bad:?}");
    }
    let twice = req("acme")
        .append_header(("x-token-count", "1"))
        .append_header(("x-token-count", "1"))
        .to_request();
    assert_eq!(test::call_service(&app, twice).await.status(), 400);

    // Nothing was charged by the refusals: the budget of 100 is whole.
    let res = test::call_service(
        &app,
        req("acme")
            .insert_header(("x-token-count", "30"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(header(&res, "ratelimit").unwrap().contains("\"day\";r=70;"));
    // No header: the default cost of 1.
    let res = test::call_service(&app, req("acme").to_request()).await;
    assert!(header(&res, "ratelimit").unwrap().contains("\"day\";r=69;"));
}

#[actix_web::test]
async fn a_cost_above_the_burst_can_never_pass() {
    let quota = TenantQuota::builder(LocalQuota::new(plans()))
        .cost(HeaderCost::new("x-token-count").unwrap())
        .build()
        .unwrap();
    let app = app!(tenancy(registry(), quota));
    let res = test::call_service(
        &app,
        req("globex")
            .insert_header(("x-token-count", "6"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 429);
    assert!(
        header(&res, "retry-after").is_none(),
        "retrying cannot help"
    );
    let body = code(res).await;
    assert_eq!(body["code"], "quota_exceeded");
    assert!(body["detail"].as_str().unwrap().contains("never"));
    // And it consumed nothing.
    let res = test::call_service(
        &app,
        req("globex")
            .insert_header(("x-token-count", "5"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn the_charge_is_corrected_after_the_handler() {
    let app = app!(tenancy(
        registry(),
        TenantQuota::new(LocalQuota::new(plans()))
    ));
    // Charged 1 up front, 60 actually used.
    let res = test::call_service(
        &app,
        req("acme")
            .insert_header(("x-test-actual", "60"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 200);
    // Corrected once the response's body has been sent to its end.
    test::read_body(res).await;
    let res = test::call_service(&app, req("acme").to_request()).await;
    assert!(
        header(&res, "ratelimit").unwrap().contains("\"day\";r=39;"),
        "100 - 60 - 1: {:?}",
        header(&res, "ratelimit")
    );
}

#[actix_web::test]
async fn server_errors_are_refunded_when_asked() {
    for (refund, left) in [(true, 99), (false, 98)] {
        let quota = TenantQuota::builder(LocalQuota::new(plans()))
            .refund_server_errors(refund)
            .build()
            .unwrap();
        let app = app!(tenancy(registry(), quota));
        let res = test::call_service(
            &app,
            req("acme").insert_header(("x-test-fail", "1")).to_request(),
        )
        .await;
        assert_eq!(res.status(), 500);
        let res = test::call_service(&app, req("acme").to_request()).await;
        assert!(
            header(&res, "ratelimit")
                .unwrap()
                .contains(&format!("\"day\";r={left};")),
            "refund={refund}: {:?}",
            header(&res, "ratelimit")
        );
    }
}

#[actix_web::test]
async fn shadow_plans_pass_and_mark() {
    use actix_tenancy::observe::{AuditEvent, Stage};
    let outcomes: Arc<std::sync::Mutex<Vec<(Stage, String)>>> = Arc::default();
    let seen = Arc::clone(&outcomes);
    // The pipeline's sink hears every stage.
    let tenancy = Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry())
                .source(Source::header())
                .exempt("/health")
                .build()
                .unwrap(),
        )
        .quota(TenantQuota::new(LocalQuota::new(plans())))
        .audit(move |e: &AuditEvent<'_>| {
            seen.lock()
                .unwrap()
                .push((e.stage, e.outcome.as_str().to_owned()))
        })
        .build()
        .unwrap();
    let app = app!(tenancy);
    let first = test::call_service(&app, req("shadowy").to_request()).await;
    assert_eq!(first.status(), 200);
    assert!(header(&first, "x-quota-shadow").is_none());
    for _ in 0..3 {
        let res = test::call_service(&app, req("shadowy").to_request()).await;
        assert_eq!(res.status(), 200, "shadow mode never refuses");
        assert_eq!(header(&res, "x-quota-shadow").unwrap(), "would-deny");
    }
    let of = |stage: Stage| -> Vec<String> {
        let outcomes = outcomes.lock().unwrap();
        outcomes
            .iter()
            .filter(|(s, _)| *s == stage)
            .map(|(_, o)| o.clone())
            .collect()
    };
    assert_eq!(
        of(Stage::named("quota")),
        ["allowed", "would_deny", "would_deny", "would_deny"],
        "would-deny decisions are reported as such"
    );
    assert_eq!(
        of(Stage::named("resolution")),
        ["allowed"; 4],
        "one sink for every stage"
    );
}

#[actix_web::test]
async fn a_tier_without_a_plan_is_refused() {
    let app = app!(tenancy(
        registry(),
        TenantQuota::new(LocalQuota::new(plans()))
    ));
    let res = test::call_service(&app, req("wonka").to_request()).await;
    assert_eq!(res.status(), 429);
    assert!(header(&res, "retry-after").is_none());
}

#[actix_web::test]
async fn a_plan_change_takes_effect_on_the_next_request() {
    let registry = registry();
    let app = app!(tenancy(
        Arc::clone(&registry),
        TenantQuota::new(LocalQuota::new(plans()))
    ));
    for _ in 0..5 {
        test::call_service(&app, req("globex").to_request()).await;
    }
    assert_eq!(
        test::call_service(&app, req("globex").to_request())
            .await
            .status(),
        429
    );
    // globex upgrades to pro.
    registry.insert(TenantRecord::new(tid("globex"), "pro"));
    let res = test::call_service(&app, req("globex").to_request()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "ratelimit-policy").unwrap(),
        "\"rate\";q=50;w=60, \"day\";q=100;w=86400"
    );
}

#[actix_web::test]
async fn requests_without_a_tenant_are_not_charged() {
    let app = app!(tenancy(
        registry(),
        TenantQuota::new(LocalQuota::new(plans()))
    ));
    for _ in 0..20 {
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
        assert_eq!(res.status(), 200);
        assert!(header(&res, "x-quota-remaining").is_none());
    }
}

#[actix_web::test]
async fn standalone_stage_reads_the_resolvers_tenant_and_fails_closed_without_one() {
    let quota = TenantQuota::new(LocalQuota::new(plans()));
    let resolver = TenantResolver::builder(registry())
        .source(Source::header())
        .build()
        .unwrap();
    // `.wrap()` order: the last wrap is outermost, so the resolver runs first.
    let app = test::init_service(
        App::new()
            .wrap(quota.clone())
            .wrap(resolver)
            .default_service(web::to(handler)),
    )
    .await;
    for _ in 0..5 {
        let res = app.call(req("globex").to_request()).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = app.call(req("globex").to_request()).await.unwrap();
    assert_eq!(res.status(), 429);

    // No resolver at all: never a pass.
    let app = test::init_service(App::new().wrap(quota).default_service(web::to(handler))).await;
    let res = test::call_service(&app, req("globex").to_request()).await;
    assert_eq!(res.status(), 500);
    assert_eq!(code(res).await["code"], "internal_error");
}

#[actix_web::test]
async fn quota_rejections_use_the_pipeline_responder() {
    let tenancy = Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry())
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .quota(TenantQuota::new(LocalQuota::new(plans())))
        .responder(|err: &TenancyError, _: &HttpRequest| {
            HttpResponse::build(StatusCode::from_u16(err.status()).unwrap())
                .body(format!("mine:{}", err.code()))
        })
        .build()
        .unwrap();
    let app = app!(tenancy);
    for _ in 0..5 {
        test::call_service(&app, req("globex").to_request()).await;
    }
    let res = test::call_service(&app, req("globex").to_request()).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = header(&res, "retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "kept whatever the responder");
    assert_eq!(header(&res, "x-quota-remaining").unwrap(), "0");
    assert_eq!(test::read_body(res).await, "mine:quota_exceeded");
}

#[actix_web::test]
async fn abandoned_requests_are_refunded_when_asked() {
    for (refund, left) in [(true, 99), (false, 98)] {
        let quota = TenantQuota::builder(LocalQuota::new(plans()))
            .refund_server_errors(refund)
            .build()
            .unwrap();
        let app = test::init_service(
            App::new()
                .wrap(tenancy(registry(), quota))
                .route("/hang", web::get().to(std::future::pending::<HttpResponse>))
                .default_service(web::to(handler)),
        )
        .await;
        let hanging = test::TestRequest::get()
            .uri("/hang")
            .insert_header(("x-tenant-id", "acme"))
            .to_request();
        // The client goes away: the response future is dropped unfinished.
        drop(app.call(hanging));
        let res = test::call_service(&app, req("acme").to_request()).await;
        assert!(
            header(&res, "ratelimit")
                .unwrap()
                .contains(&format!("\"day\";r={left};")),
            "refund={refund}: {:?}",
            header(&res, "ratelimit")
        );
    }
}

/// The `RateLimit` field's remaining units for `name`.
fn remaining_of(res: &ServiceResponse<impl actix_web::body::MessageBody>, name: &str) -> u64 {
    let state = header(res, "ratelimit").unwrap();
    let item = state
        .split(", ")
        .find(|i| i.starts_with(&format!("\"{name}\";")))
        .unwrap_or_else(|| panic!("no {name} in {state}"));
    let r = item.split(';').find_map(|p| p.strip_prefix("r=")).unwrap();
    r.parse().unwrap()
}

#[actix_web::test]
async fn a_refusal_names_its_limit_and_reports_every_limits_real_remaining() {
    let quota = TenantQuota::builder(LocalQuota::new(plans()))
        .cost(HeaderCost::new("x-token-count").unwrap())
        .build()
        .unwrap();
    let app = app!(tenancy(registry(), quota));
    let spend = |tenant: &str, units: u32| {
        req(tenant)
            .insert_header(("x-token-count", units.to_string()))
            .to_request()
    };
    // acme (pro): 50 units a minute, 100 a day. 40 pass; 70 more exceed the day.
    let res = test::call_service(&app, spend("acme", 40)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(remaining_of(&res, "day"), 60);
    let rate_left = remaining_of(&res, "rate");
    assert_eq!(rate_left, 10);
    let res = test::call_service(&app, spend("acme", 70)).await;
    assert_eq!(res.status(), 429);
    assert_eq!(remaining_of(&res, "day"), 60, "the day's real remaining");
    assert!(
        remaining_of(&res, "rate") >= rate_left,
        "the rate was not spent: it reports what it has, not 0"
    );
    let retry: u64 = header(&res, "retry-after").unwrap().parse().unwrap();
    assert!(
        retry > 60,
        "the day ends later than a rate refills: {retry}"
    );
    let body = code(res).await;
    assert_eq!(
        (body["code"].as_str(), body["limit"].as_str()),
        (Some("quota_exceeded"), Some("day"))
    );
    // Neither limit was charged by the refusal: the rate's 10 units still pass.
    let res = test::call_service(&app, spend("acme", 10)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(remaining_of(&res, "day"), 50);

    // globex (free): 5 a minute, 1,000 a day. The sixth request is the rate's refusal.
    for _ in 0..5 {
        assert_eq!(
            test::call_service(&app, spend("globex", 1)).await.status(),
            200
        );
    }
    let res = test::call_service(&app, spend("globex", 1)).await;
    assert_eq!(res.status(), 429);
    assert_eq!(remaining_of(&res, "rate"), 0);
    assert_eq!(remaining_of(&res, "day"), 995, "the day's real remaining");
    let body = code(res).await;
    assert_eq!(body["limit"], "rate");

    // A cost no plan admits names its limit too, and carries no Retry-After.
    let res = test::call_service(&app, spend("hooli", 5_000)).await;
    assert_eq!(res.status(), 429);
    assert!(header(&res, "retry-after").is_none());
    assert_eq!(code(res).await["limit"], "day");
}

/// An app whose only handler is `POST /api/complete` (and `GET /v1/items/{id}` in a
/// scope), counting the requests that reach it.
macro_rules! counted_app {
    ($tenancy:expr, $hits:expr) => {{
        let hits = std::sync::Arc::clone(&$hits);
        let item_hits = std::sync::Arc::clone(&$hits);
        test::init_service(
            App::new()
                .wrap($tenancy)
                .route(
                    "/api/complete",
                    web::post().to(move || {
                        hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async { HttpResponse::Ok().body("done") }
                    }),
                )
                .service(web::scope("/v1").route(
                    "/items/{id}",
                    web::get().to(move || {
                        item_hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async { HttpResponse::Ok().body("item") }
                    }),
                )),
        )
        .await
    }};
}

#[actix_web::test]
async fn no_spelling_of_a_route_dodges_a_cost_bound_to_it() {
    use actix_tenancy::quota::RouteCost;
    use actix_web::{dev::ServiceRequest, http::Method};
    use std::sync::atomic::{AtomicUsize, Ordering};

    // acme (pro) has 100 units a day: a 500-unit completion can never be admitted.
    // In absolute form, so that a path starting `//` is a path, not an authority.
    let post = |path: &str| {
        test::TestRequest::post()
            .uri(&format!("http://localhost{path}"))
            .insert_header(("x-tenant-id", "acme"))
            .to_request()
    };
    let spellings = common::spellings::spellings("/api/complete");

    // The estimator the demo had, comparing the raw path: an encoding dodges it. (This
    // is what the test must be able to see.)
    let naive = |req: &ServiceRequest| {
        if req.path() == "/api/complete" {
            500
        } else {
            0
        }
    };
    let quota = TenantQuota::builder(LocalQuota::new(plans()))
        .cost(naive)
        .build()
        .unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let app = counted_app!(tenancy(registry(), quota), hits);
    assert_eq!(
        test::call_service(&app, post("/api/complete"))
            .await
            .status(),
        429
    );
    let res = test::call_service(&app, post("/api/%63omplete")).await;
    assert_eq!(res.status(), 200, "the raw path is dodged by an encoding");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Bound to the route actix matches, no spelling reaches the handler uncharged.
    let routed = RouteCost::builder()
        .route(Method::POST, "/api/complete", |_: &ServiceRequest| 500)
        .route(Method::GET, "/v1/items/{id}", |_: &ServiceRequest| 500)
        .otherwise(|_: &ServiceRequest| 0)
        .build()
        .unwrap();
    let quota = TenantQuota::builder(LocalQuota::new(plans()))
        .cost(routed)
        .build()
        .unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let app = counted_app!(tenancy(registry(), quota), hits);
    let mut charged = 0;
    for path in &spellings {
        let res = test::call_service(&app, post(path)).await;
        let status = res.status();
        assert_ne!(status, 200, "{path} reached the handler");
        // What actix routes as the route (an encoded letter; never an encoded slash)
        // is charged as the route: refused, as 500 units never fit in 100.
        if common::spellings::is_the_route(path, "/api/complete") {
            assert_eq!(status, 429, "{path} is the route, and must be charged");
            charged += 1;
        }
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no spelling reached the handler"
    );
    assert!(charged >= "/api/complete".len() - 2, "{charged} charged");
    // A pattern with a scope and a parameter: `/v1/items/%37` is `/v1/items/{id}`.
    let get = |path: &str| {
        test::TestRequest::get()
            .uri(path)
            .insert_header(("x-tenant-id", "acme"))
            .to_request()
    };
    for path in [
        "/v1/items/7",
        "/v1/items/%37",
        "/v1/%69tems/7",
        "/%76%31/items/7",
    ] {
        let res = test::call_service(&app, get(path)).await;
        assert_eq!(res.status(), 429, "{path}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // Another method on the route is not the route: actix answers it, no handler runs.
    let res = test::call_service(
        &app,
        test::TestRequest::put()
            .uri("/api/complete")
            .insert_header(("x-tenant-id", "acme"))
            .to_request(),
    )
    .await;
    assert_ne!(res.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[actix_web::test]
async fn route_costs_refuse_bad_patterns_and_duplicates() {
    use actix_tenancy::{error::ConfigError, quota::RouteCost};
    use actix_web::{dev::ServiceRequest, http::Method};
    let one = |_: &ServiceRequest| 1;
    let err = RouteCost::builder()
        .route(Method::POST, "api/complete", one)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { setting: "route pattern", value, .. } if value == "api/complete"),
        "{err:?}"
    );
    let err = RouteCost::builder()
        .route(Method::POST, "/a", one)
        .route(Method::POST, "/a", one)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Duplicate { what: "route", .. }),
        "{err:?}"
    );
    assert!(RouteCost::builder()
        .route(Method::POST, "/a", one)
        .route(Method::GET, "/a", one)
        .build()
        .is_ok());
}

#[actix_web::test]
async fn a_cost_of_zero_neither_passes_a_spent_budget_nor_skips_the_rate() {
    // Each tier's rate counts requests, and its day budget units: 100 for pro (acme),
    // 1 for free (globex). The client names each request's cost.
    let quota = |min_cost: Option<u32>| {
        let plan = |units| {
            QuotaPlan::per_minute(5)
                .budget(units, Period::Day)
                .rate_counts_requests(true)
        };
        let plans = QuotaPlans::builder()
            .tier("pro", plan(100))
            .tier("free", plan(1))
            .build()
            .unwrap();
        let mut b = TenantQuota::builder(LocalQuota::new(plans))
            .cost(HeaderCost::new("x-token-count").unwrap().max(1_000));
        if let Some(min) = min_cost {
            b = b.min_cost(min);
        }
        tenancy(registry(), b.build().unwrap())
    };
    let costing = |tenant: &str, n: &str| {
        req(tenant)
            .insert_header(("x-token-count", n.to_owned()))
            .to_request()
    };
    let app = app!(quota(None));
    assert_eq!(
        test::call_service(&app, costing("acme", "100"))
            .await
            .status(),
        200
    );
    // The day is spent: a request naming a cost of 0 is charged the least, 1, and refused.
    for _ in 0..3 {
        let res = test::call_service(&app, costing("acme", "0")).await;
        assert_eq!(res.status(), 429);
        assert_eq!(code(res).await["limit"], "day");
    }

    // Free requests allowed knowingly (`min_cost(0)`): the spent budget lets them
    // through, but the rate counts each of them: 5 a minute.
    let app = app!(quota(Some(0)));
    assert_eq!(
        test::call_service(&app, costing("globex", "1"))
            .await
            .status(),
        200
    );
    let mut passed = 0;
    for _ in 0..20 {
        let res = test::call_service(&app, costing("globex", "0")).await;
        if res.status() == 200 {
            passed += 1;
        } else {
            assert_eq!(code(res).await["limit"], "rate");
        }
    }
    assert_eq!(passed, 4, "free requests are still rated");
}
