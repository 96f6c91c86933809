//! The SaaS demo's contract (`examples/saas.rs`), bullet by bullet, in process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_tenancy::{policy::PolicyRequest, prelude::*, resolve::SourceKind, testing::FakeClock};
use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceResponse},
    http::{header, Method},
    test, web, App,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod buffer;
    pub mod curl;
    pub mod services;
    pub mod spellings;
}

#[allow(dead_code, unreachable_pub)]
mod saas {
    include!("../examples/saas.rs");
}

#[allow(dead_code, unreachable_pub)]
mod saas_axum {
    include!("../crates/tower-tenancy/examples/axum_saas.rs");
}

async fn app() -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    saas::metrics();
    app_for(saas::build(None).unwrap()).await
}

/// The demo's app with its in-memory quotas on `time`: a rate refills only when the
/// test moves the clock, so a slow machine earns no request.
async fn app_on(
    time: &FakeClock,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    saas::metrics();
    app_for(saas::build_on(None, Some(time.clock())).unwrap()).await
}

/// The demo's app, as its `main` builds it, around `demo`.
async fn app_for(
    demo: saas::Demo,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .app_data(web::Data::new(demo.clone()))
            .wrap(demo.tenancy.clone())
            .configure(saas::routes),
    )
    .await
}

/// Status, content type and JSON body (or the text, as a string).
async fn call<S, B>(app: &S, req: test::TestRequest) -> (u16, String, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = test::read_body(res).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, ct, value)
}

fn get(path: &str) -> test::TestRequest {
    test::TestRequest::get().uri(path)
}

fn as_tenant(req: test::TestRequest, tenant: &str) -> test::TestRequest {
    req.insert_header(("x-tenant-id", tenant.to_owned()))
}

fn bearer(req: test::TestRequest, token: &str) -> test::TestRequest {
    req.insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
}

/// A problem+json rejection with `code`.
fn problem(r: &(u16, String, Value), status: u16, code: &str) {
    assert_eq!(r.0, status, "{r:?}");
    assert_eq!(r.1, "application/problem+json", "{r:?}");
    assert_eq!(r.2["code"], code, "{r:?}");
}

async fn login<S, B>(app: &S, tenant: &str) -> (u16, String, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let req = test::TestRequest::post()
        .uri("/auth/login")
        .set_json(json!({"tenant": tenant, "user": "ada"}));
    call(app, req).await
}

#[actix_web::test]
async fn health_and_whoami_from_every_source() {
    let app = app().await;
    assert_eq!(call(&app, get("/health")).await.0, 200);
    let r = call(&app, as_tenant(get("/api/whoami"), "acme")).await;
    assert_eq!(
        r.2,
        json!({"tenant": "acme", "tier": "pro", "source": "header"})
    );
    let host = get("/api/whoami").insert_header((header::HOST, "globex.localhost:8080"));
    let r = call(&app, host).await;
    assert_eq!(
        r.2,
        json!({"tenant": "globex", "tier": "free", "source": "host"})
    );
    let token = login(&app, "acme").await.2["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(&app, bearer(get("/api/whoami"), &token)).await;
    assert_eq!(
        r.2,
        json!({"tenant": "acme", "tier": "pro", "source": "claim"})
    );
    // Every rejection is problem+json with its code.
    problem(&call(&app, get("/api/whoami")).await, 401, "tenant_missing");
    problem(
        &call(&app, as_tenant(get("/api/whoami"), "initech")).await,
        403,
        "tenant_forbidden",
    );
    problem(
        &call(&app, as_tenant(get("/api/whoami"), "nobody")).await,
        403,
        "tenant_forbidden",
    );
    problem(
        &call(&app, as_tenant(get("/api/whoami"), "umbrella")).await,
        421,
        "tenant_misdirected",
    );
    problem(
        &call(&app, as_tenant(get("/api/whoami"), "../x")).await,
        400,
        "tenant_invalid",
    );
    let conflict = as_tenant(bearer(get("/api/whoami"), &token), "globex");
    problem(&call(&app, conflict).await, 403, "tenant_conflict");
}

#[actix_web::test]
async fn reports_are_for_pro_and_enterprise() {
    let app = app().await;
    assert_eq!(
        call(&app, as_tenant(get("/api/reports"), "acme")).await.0,
        200
    );
    problem(
        &call(&app, as_tenant(get("/api/reports"), "globex")).await,
        403,
        "policy_denied",
    );
    // umbrella (enterprise) is served by the eu deployment; the policy itself allows it.
    let demo = saas::build(None).unwrap();
    let umbrella = demo.registry.get("umbrella").unwrap();
    let ctx = TenantContext::new(umbrella.id().clone(), SourceKind::Header, umbrella, None);
    let ask = PolicyRequest::new(Method::GET, "/api/reports").with_route("/api/reports");
    assert!(demo.policy.decide(&ctx, &ask).allowed);
}

#[actix_web::test]
async fn complete_charges_the_daily_token_budget_and_one_request_of_rate() {
    let time = FakeClock::new();
    let app = app_on(&time).await;
    let complete = |n: u32| {
        as_tenant(
            test::TestRequest::post().uri(&format!("/api/complete?max_tokens={n}")),
            "globex",
        )
    };
    // free: 1,000 tokens a day, 5 requests a second with a burst of 5. The clock
    // stands still until the test moves it.
    assert_eq!(call(&app, complete(600)).await.0, 200);
    let res = test::call_service(&app, complete(600).to_request()).await;
    assert_eq!(res.status(), 429, "over the token budget");
    assert!(res.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(call(&app, complete(400)).await.0, 200);
    // Two requests so far took rate (the refused one took none); three more pass,
    // the sixth does not.
    for _ in 0..3 {
        assert_eq!(
            call(&app, as_tenant(get("/api/whoami"), "globex")).await.0,
            200
        );
    }
    let whoami = || as_tenant(get("/api/whoami"), "globex");
    problem(&call(&app, whoami()).await, 429, "quota_exceeded");
    // The rate refills one request every 200 ms: not a moment before.
    time.advance(Duration::from_millis(199));
    problem(&call(&app, whoami()).await, 429, "quota_exceeded");
    time.advance(Duration::from_millis(1));
    assert_eq!(call(&app, whoami()).await.0, 200, "refilled after 200 ms");
    problem(&call(&app, whoami()).await, 429, "quota_exceeded");
    problem(
        &call(&app, complete(0).uri("/api/complete?max_tokens=-5")).await,
        400,
        "cost_invalid",
    );
    // pro: 100,000 tokens.
    let pro = |n: u32| {
        as_tenant(
            test::TestRequest::post().uri(&format!("/api/complete?max_tokens={n}")),
            "acme",
        )
    };
    assert_eq!(call(&app, pro(60_000)).await.0, 200);
    assert_eq!(call(&app, pro(40_000)).await.0, 200);
    problem(&call(&app, pro(1)).await, 429, "quota_exceeded");
}

#[actix_web::test]
async fn rate_quotas_per_tier() {
    let time = FakeClock::new();
    let app = app_on(&time).await;
    // On a clock that stands still: exactly the burst passes, the rest are refused;
    // then one interval refills exactly one request.
    let count = |tenant: &'static str, n: usize, per_second: u64, burst: usize| {
        let (app, time) = (&app, &time);
        async move {
            let mut ok = 0;
            for _ in 0..n {
                if call(app, as_tenant(get("/api/whoami"), tenant)).await.0 == 200 {
                    ok += 1;
                }
            }
            assert_eq!(ok, burst, "{tenant}: {ok} of {n} passed, burst {burst}");
            time.advance(Duration::from_secs(1) / per_second as u32);
            let passed = |r: (u16, String, Value)| r.0 == 200;
            assert!(
                passed(call(app, as_tenant(get("/api/whoami"), tenant)).await),
                "{tenant}: one interval refills one request"
            );
            assert!(
                !passed(call(app, as_tenant(get("/api/whoami"), tenant)).await),
                "{tenant}: and only one"
            );
        }
    };
    count("globex", 8, 5, 5).await;
    count("acme", 60, 50, 50).await;
    // enterprise's burst of 1,000 is checked on the plan: umbrella is not served here.
    let plans = saas::plans().unwrap();
    let demo = saas::build(None).unwrap();
    let umbrella = demo.registry.get("umbrella").unwrap();
    let ctx = TenantContext::new(umbrella.id().clone(), SourceKind::Header, umbrella, None);
    let rate = *plans.plan_for(&ctx).unwrap().rate_limit().unwrap();
    assert_eq!((rate.amount, rate.burst), (500, 1_000));
    assert!(
        plans.plan_for(&ctx).unwrap().budgets().is_empty(),
        "no token budget"
    );
}

#[actix_web::test]
async fn login_refresh_logout() {
    let app = app().await;
    let r = login(&app, "acme").await;
    assert_eq!(r.0, 200);
    let keys: Vec<&str> =
        r.2.as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
    assert_eq!(keys, ["access_token", "expires_in", "refresh_token"]);
    // Unknown and suspended tenants: the same 403 as everywhere.
    let unknown = login(&app, "nobody").await;
    let suspended = login(&app, "initech").await;
    problem(&unknown, 403, "tenant_forbidden");
    assert_eq!(unknown, suspended);
    problem(&login(&app, "umbrella").await, 421, "tenant_misdirected");
    let bad = test::TestRequest::post()
        .uri("/auth/login")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload("{not json");
    problem(&call(&app, bad).await, 400, "invalid_request");

    let refresh = |t: &str| {
        test::TestRequest::post()
            .uri("/auth/refresh")
            .set_json(json!({"refresh_token": t}))
    };
    let first = r.2["refresh_token"].as_str().unwrap();
    let next = call(&app, refresh(first)).await;
    assert_eq!(next.0, 200);
    let access = next.2["access_token"].as_str().unwrap().to_owned();
    problem(&call(&app, refresh(&access)).await, 401, "unauthenticated");
    let logout = bearer(test::TestRequest::post().uri("/auth/logout"), &access);
    assert_eq!(call(&app, logout).await.0, 204);
    problem(
        &call(&app, bearer(get("/api/whoami"), &access)).await,
        401,
        "unauthenticated",
    );
    // The first refresh token was used up by the refresh: presented again within the
    // grace (30 s), it is a retry whose answer was lost, and gets the same pair, whose
    // logged-out access token stays refused.
    let again = call(&app, refresh(first)).await;
    assert_eq!(again.0, 200);
    assert_eq!(again.2["refresh_token"], next.2["refresh_token"]);
    assert_eq!(again.2["access_token"].as_str(), Some(access.as_str()));
    problem(
        &call(&app, bearer(get("/api/whoami"), &access)).await,
        401,
        "unauthenticated",
    );
}

#[actix_web::test]
async fn tokens_from_any_jwt_library_with_the_demo_values_are_accepted() {
    let app = app().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mint = |extra: Value| {
        let mut claims = json!({
            "iss": "actix-tenancy-demo", "aud": "demo-api", "sub": "ext-user",
            "tenant_id": "globex", "iat": now, "exp": now + 300, "jti": format!("ext-{now}"),
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("demo".into());
        jsonwebtoken::encode(
            &h,
            &claims,
            &EncodingKey::from_secret(saas::DEFAULT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let r = call(&app, bearer(get("/api/whoami"), &mint(json!({})))).await;
    assert_eq!(
        r.2,
        json!({"tenant": "globex", "tier": "free", "source": "claim"})
    );
    let refresh = mint(json!({"token_use": "refresh"}));
    problem(
        &call(&app, bearer(get("/api/whoami"), &refresh)).await,
        401,
        "unauthenticated",
    );
}

#[actix_web::test]
async fn metrics_are_served_without_a_tenant() {
    let app = app().await;
    assert_eq!(
        call(&app, as_tenant(get("/api/whoami"), "acme")).await.0,
        200
    );
    assert_eq!(
        call(&app, as_tenant(get("/api/reports"), "globex")).await.0,
        403
    );
    // An authentication pass is counted, as the other stages' passes are.
    let token = login(&app, "acme").await.2["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(call(&app, bearer(get("/api/whoami"), &token)).await.0, 200);
    let (status, ct, body) = call(&app, get("/metrics")).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = body.as_str().unwrap();
    assert!(text.contains("tenancy_decisions_total{"), "{text}");
    assert!(text.contains(r#"stage="policy""#), "{text}");
    assert!(text.contains(r#"code="policy_denied""#), "{text}");
    assert!(text.contains("tenancy_stage_duration_seconds"), "{text}");
    // A real histogram, and what each metric is.
    assert!(
        text.contains("tenancy_stage_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(text.contains("# HELP tenancy_decisions_total "), "{text}");
    assert!(
        text.contains("# HELP tenancy_stage_duration_seconds "),
        "{text}"
    );
}

/// Every query of `examples/grafana/tenancy.json` names a metric the demo exports, and
/// every label it groups or filters by is on that metric's series.
#[actix_web::test]
async fn the_grafana_dashboard_queries_what_the_demo_exports() {
    let app = app().await;
    for (path, tenant) in [
        ("/api/whoami", "acme"),
        ("/api/reports", "globex"),
        ("/api/whoami", "hooli"),
    ] {
        call(&app, as_tenant(get(path), tenant)).await;
    }
    let (_, _, body) = call(&app, get("/metrics")).await;
    let text = body.as_str().unwrap().to_owned();

    let dashboard: Value =
        serde_json::from_str(include_str!("../examples/grafana/tenancy.json")).unwrap();
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(
        queries.len() >= 8,
        "the dashboard lost its panels: {queries:?}"
    );
    for query in &queries {
        let names = metric_names(query);
        assert!(!names.is_empty(), "{query}: names no tenancy_ metric");
        let series: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                names.iter().any(|n| {
                    l.strip_prefix(n.as_str())
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                })
            })
            .collect();
        assert!(
            !series.is_empty(),
            "{query}: the demo exports none of {names:?}\n{text}"
        );
        for label in label_names(query) {
            assert!(
                series.iter().any(|l| l.contains(&format!("{label}=\""))),
                "{query}: no series of {names:?} has the label {label}"
            );
        }
    }
}

/// Every `expr` and templating `query` string in a Grafana dashboard.
fn collect_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(q)) => out.push(q.clone()),
                    ("query", Value::Object(q)) => {
                        if let Some(Value::String(q)) = q.get("query") {
                            out.push(q.clone());
                        }
                    }
                    _ => collect_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

fn words(query: &str) -> impl Iterator<Item = &str> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// The `tenancy_` metrics a query reads, as exported (histogram suffixes kept).
fn metric_names(query: &str) -> Vec<String> {
    words(query)
        .filter(|w| w.starts_with("tenancy_"))
        .map(str::to_owned)
        .collect()
}

/// The labels a query groups by (`by (a, b)`) or selects on (`{a="x"}`), but `le`.
fn label_names(query: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("by (") {
        let inner = &rest[at + 4..];
        let end = inner.find(')').expect("a closed by (...)");
        labels.extend(inner[..end].split(',').map(|l| l.trim().to_owned()));
        rest = &inner[end..];
    }
    let mut rest = query;
    while let Some(at) = rest.find('{') {
        let inner = &rest[at + 1..];
        let end = inner.find('}').expect("a closed selector");
        for matcher in inner[..end].split(',') {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !matcher.trim_start().starts_with("{{") {
                labels.push(name);
            }
        }
        rest = &inner[end..];
    }
    labels.retain(|l| l != "le" && !l.is_empty());
    labels.sort();
    labels.dedup();
    labels
}

#[actix_web::test]
async fn the_readme_session_answers_as_shown() {
    let readme = include_str!("../README.md");
    let session = common::curl::exchanges(readme, "Try it");
    assert!(session.len() >= 8, "the README's demo session went missing");
    let app = app().await;
    for ex in session {
        let body = test::call_and_read_body(&app, common::curl::request(&ex).to_request()).await;
        assert_eq!(std::str::from_utf8(&body).unwrap(), ex.body(), "{ex:?}");
    }
}

/// With `REDIS_URL` (and the `redis` feature), two demo instances share one quota and
/// one revocation store, as two replicas would.
#[cfg(feature = "redis")]
#[actix_web::test]
async fn with_redis_two_instances_share_quotas_and_revocations() {
    let Some(url) = common::services::service_url("REDIS_URL") else {
        return;
    };
    // A fresh quota window: the demo's keys are per tenant, so clear globex's first.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tenancy-demo*")
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let make = || {
        let demo = saas::build(Some(&url)).unwrap();
        assert_eq!(demo.backend, "redis");
        demo
    };
    let (a, b) = (make(), make());
    let (app_a, app_b) = (app_for(a).await, app_for(b).await);
    // globex's burst of 5, across both instances (plus what the rate refills while
    // the loop runs, one every 200 ms; two separate quotas would pass 8).
    let start = std::time::Instant::now();
    let mut ok = 0;
    for i in 0..8 {
        let app = if i % 2 == 0 { &app_a } else { &app_b };
        if call(app, as_tenant(get("/api/whoami"), "globex")).await.0 == 200 {
            ok += 1;
        }
    }
    let earned = (start.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (5..=5 + earned).contains(&ok) && ok < 8,
        "one quota for both instances: {ok}"
    );
    // Log out on one instance: the token stops working on the other.
    let token = login(&app_a, "acme").await.2["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        call(&app_b, bearer(get("/api/whoami"), &token)).await.0,
        200
    );
    let logout = bearer(test::TestRequest::post().uri("/auth/logout"), &token);
    assert_eq!(call(&app_a, logout).await.0, 204);
    problem(
        &call(&app_b, bearer(get("/api/whoami"), &token)).await,
        401,
        "unauthenticated",
    );
}

/// The start-up lines the README promises, as JSON lines with `LOG_FORMAT=json`: where
/// quotas and revocations live, and where the demo listens.
#[actix_web::test]
async fn start_up_is_announced_in_json_lines() {
    let buffer = common::buffer::Buffer::default();
    let writer = buffer.clone();
    tracing::subscriber::with_default(saas::log_subscriber(true, move || writer.clone()), || {
        let demo = saas::build(None).unwrap();
        saas::announce(&demo, None, "127.0.0.1:8080");
    });
    let lines: Vec<Value> = buffer
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is one JSON object"))
        .collect();
    let message = |m: &str| lines.iter().find(|l| l["fields"]["message"] == m).cloned();
    assert!(
        message("quotas and revocations in memory (set REDIS_URL to share them)").is_some(),
        "{lines:?}"
    );
    let listening = message("actix-tenancy demo listening").expect("the listening line");
    assert_eq!(listening["fields"]["addr"], "127.0.0.1:8080");
    assert_eq!(listening["fields"]["region"], "us");
    assert_eq!(listening["level"], "INFO");
    // A Redis URL's password never reaches the log.
    assert_eq!(
        saas::redacted("redis://:s3cret@cache:6379/0"),
        "redis://:***@cache:6379/0"
    );
    assert_eq!(saas::redacted("redis://cache:6379"), "redis://cache:6379");
}

#[actix_web::test]
async fn no_spelling_of_the_completion_route_dodges_the_token_budget() {
    let app = app().await;
    let complete = |path: &str, tenant: &str, tokens: u32| {
        as_tenant(
            test::TestRequest::post().uri(&format!("http://localhost{path}?max_tokens={tokens}")),
            tenant,
        )
    };
    // globex (free) spends 600 of its 1,000 tokens; 600 more are refused, spelled
    // however the client likes.
    assert_eq!(
        call(&app, complete("/api/complete", "globex", 600)).await.0,
        200
    );
    problem(
        &call(&app, complete("/api/complete", "globex", 600)).await,
        429,
        "quota_exceeded",
    );
    for path in common::spellings::spellings("/api/complete") {
        let (status, _, body) = call(&app, complete(&path, "globex", 600)).await;
        assert_ne!(status, 200, "{path} was served: {body}");
        if common::spellings::is_the_route(&path, "/api/complete") {
            assert_eq!(status, 429, "{path} is the completion route: {body}");
        }
    }
    // A cost no plan admits is refused however it is spelled.
    for path in ["/api/complete", "/api/%63omplete", "/%61pi/complete"] {
        problem(
            &call(&app, complete(path, "acme", 1_000_000)).await,
            429,
            "quota_exceeded",
        );
    }
    // The rate still counts the other routes, which cost no tokens.
    assert_eq!(
        call(&app, as_tenant(get("/api/whoami"), "acme")).await.0,
        200
    );
}

/// `POST /api/complete?max_tokens=1` for `tenant`, naming `model` and `tool` when given.
fn completion(tenant: &str, model: Option<&str>, tool: Option<&str>) -> test::TestRequest {
    let mut req = as_tenant(
        test::TestRequest::post().uri("/api/complete?max_tokens=1"),
        tenant,
    );
    if let Some(m) = model {
        req = req.insert_header(("x-model", m.to_owned()));
    }
    if let Some(t) = tool {
        req = req.insert_header(("x-tool", t.to_owned()));
    }
    req
}

/// The demo's plans, written out again from the README's table: whether `tier` (and the
/// tenant, for acme's override) may use `model` and `tool`.
fn in_plan(tenant: &str, tier: &str, model: &str, tool: Option<&str>) -> bool {
    let model_ok = match tier {
        "free" => model == "demo-small",
        "pro" => {
            matches!(model, "demo-small" | "demo-large")
                || (tenant == "acme" && model == "demo-preview")
        }
        "enterprise" => matches!(model, "demo-small" | "demo-large" | "demo-preview"),
        _ => false,
    };
    let tool_ok = matches!(
        (tier, tool),
        (_, None) | ("pro", Some("search")) | ("enterprise", Some("search" | "code"))
    );
    model_ok && tool_ok
}

#[actix_web::test]
async fn models_and_tools_follow_each_tier_and_acmes_override() {
    let app = app().await;
    let tenants = [
        ("globex", "free"),
        ("acme", "pro"),
        ("soylent", "pro"),
        ("hooli", "enterprise"),
    ];
    let models = [
        None,
        Some("demo-small"),
        Some("demo-large"),
        Some("demo-preview"),
        Some("gpt-x"),
        Some("Demo-Small"),
    ];
    let tools = [
        None,
        Some("search"),
        Some("code"),
        Some("shell"),
        Some("Search"),
    ];
    for (tenant, tier) in tenants {
        for model in models {
            for tool in tools {
                let r = call(&app, completion(tenant, model, tool)).await;
                let used = model.unwrap_or("demo-small");
                if in_plan(tenant, tier, used, tool) {
                    assert_eq!(r.0, 200, "{tenant} {model:?} {tool:?}: {r:?}");
                    assert_eq!(r.2["model"], used, "{r:?}");
                    assert_eq!(r.2["tenant"], tenant, "{r:?}");
                } else {
                    problem(&r, 403, "policy_denied");
                    // Which capability was refused, and nothing of the rules.
                    let model_ok = in_plan(tenant, tier, used, None);
                    let kind = if model_ok { "tool" } else { "model" };
                    assert_eq!(
                        r.2["capability"], kind,
                        "{tenant} {model:?} {tool:?}: {r:?}"
                    );
                    let body = r.2.to_string();
                    assert!(
                        !body.contains("demo-") && !body.contains("tier") && !body.contains(tenant),
                        "{body}"
                    );
                }
            }
        }
    }
}

#[actix_web::test]
async fn a_refused_model_or_tool_costs_neither_rate_nor_budget() {
    let app = app().await;
    // globex (free): 5 requests a second with a burst of 5, 1,000 tokens a day.
    for _ in 0..20 {
        let r = call(&app, completion("globex", Some("demo-large"), None)).await;
        problem(&r, 403, "policy_denied");
        let r = call(&app, completion("globex", None, Some("search"))).await;
        problem(&r, 403, "policy_denied");
    }
    let res = test::call_service(&app, completion("globex", None, None).to_request()).await;
    assert_eq!(res.status(), 200);
    let state = res
        .headers()
        .get("ratelimit")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        state.contains("\"rate\";r=4;") && state.contains("\"day\";r=999;"),
        "the full rate and budget, less this request: {state}"
    );
}

#[actix_web::test]
async fn a_repeated_model_or_tool_header_is_refused_whatever_its_values() {
    let app = app().await;
    for (name, values, kind) in [
        ("x-model", ["demo-small", "demo-small"], "model"),
        ("x-model", ["demo-small", "demo-large"], "model"),
        ("x-tool", ["search", "search"], "tool"),
    ] {
        let mut req = as_tenant(
            test::TestRequest::post().uri("/api/complete?max_tokens=1"),
            "hooli",
        );
        for v in values {
            req = req.append_header((name, v));
        }
        let r = call(&app, req).await;
        problem(&r, 403, "policy_denied");
        assert_eq!(r.2["capability"], kind, "{r:?}");
    }
    // An empty or oversized value is refused the same way.
    for model in ["", &"m".repeat(200)] {
        let r = call(&app, completion("hooli", Some(model), None)).await;
        problem(&r, 403, "policy_denied");
        assert_eq!(r.2["capability"], "model", "{r:?}");
    }
}

/// The demo's sessions on axum (tower-tenancy's `axum_saas`): every step of the
/// README's session block, and the login's refusals, answered as the actix demo
/// answers them (the tokens themselves differ: each demo mints its own).
#[actix_web::test]
async fn the_demo_on_axum_logs_in_refreshes_and_out_as_the_actix_demo_does() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    /// One request to both demos, with the token each minted; (status, body) of each.
    struct Both<S> {
        actix: S,
        axum: axum::Router,
    }
    async fn send<S, B>(
        both: &Both<S>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> ((u16, Value), (u16, Value))
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let mut a = test::TestRequest::default()
            .method(method.parse().unwrap())
            .uri(path);
        let mut x = axum::http::Request::builder().method(method).uri(path);
        for (n, v) in headers {
            a = a.insert_header((*n, *v));
            x = x.header(*n, *v);
        }
        if let Some(b) = &body {
            a = a.set_json(b);
            x = x.header("content-type", "application/json");
        }
        let on_actix = call(&both.actix, a).await;
        let x = x
            .body(axum::body::Body::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            ))
            .unwrap();
        let res = both.axum.clone().oneshot(x).await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        ((on_actix.0, on_actix.2), (status, value))
    }

    let both = Both {
        actix: app().await,
        axum: saas_axum::app().unwrap(),
    };
    let login = |tenant: &str| Some(json!({"tenant": tenant, "user": "ada"}));
    let (a, x) = send(&both, "POST", "/auth/login", &[], login("acme")).await;
    assert_eq!((a.0, x.0), (200, 200), "{a:?} {x:?}");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a.1), keys(&x.1));
    let token = |v: &Value, k: &str| format!("Bearer {}", v[k].as_str().unwrap());
    let (ta, tx) = (token(&a.1, "access_token"), token(&x.1, "access_token"));
    let (ra, rx) = (
        a.1["refresh_token"].as_str().unwrap().to_owned(),
        x.1["refresh_token"].as_str().unwrap().to_owned(),
    );

    // Each demo with its own token, the same answers.
    async fn with_tokens<S, B>(
        both: &Both<S>,
        method: &str,
        path: &str,
        tokens: (&str, &str),
        extra: &[(&str, &str)],
    ) -> ((u16, Value), (u16, Value))
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let mut ha = vec![("authorization", tokens.0)];
        ha.extend_from_slice(extra);
        let mut hx = vec![("authorization", tokens.1)];
        hx.extend_from_slice(extra);
        let (a, _) = send(both, method, path, &ha, None).await;
        let (_, x) = send(both, method, path, &hx, None).await;
        (a, x)
    }
    let whoami = with_tokens(&both, "GET", "/api/whoami", (&ta, &tx), &[]).await;
    assert_eq!(whoami.0, whoami.1);
    assert_eq!(
        whoami.0 .1,
        json!({"tenant": "acme", "tier": "pro", "source": "claim"})
    );
    let other = [("x-tenant-id", "globex")];
    let conflict = with_tokens(&both, "GET", "/api/whoami", (&ta, &tx), &other).await;
    assert_eq!(conflict.0, conflict.1);
    assert_eq!(conflict.0 .0, 403);
    // A refresh, on each demo with its own refresh token.
    let (fa, _) = send(
        &both,
        "POST",
        "/auth/refresh",
        &[],
        Some(json!({"refresh_token": ra})),
    )
    .await;
    let (_, fx) = send(
        &both,
        "POST",
        "/auth/refresh",
        &[],
        Some(json!({"refresh_token": rx})),
    )
    .await;
    assert_eq!((fa.0, keys(&fa.1)), (fx.0, keys(&fx.1)));
    assert_eq!(fa.0, 200);
    let logout = with_tokens(&both, "POST", "/auth/logout", (&ta, &tx), &[]).await;
    assert_eq!((logout.0 .0, logout.1 .0), (204, 204));
    let after = with_tokens(&both, "GET", "/api/whoami", (&ta, &tx), &[]).await;
    assert_eq!(after.0, after.1);
    assert_eq!(after.0 .0, 401);
    // The login's refusals, byte for byte.
    for (tenant, status) in [("nobody", 403), ("initech", 403), ("umbrella", 421)] {
        let (a, x) = send(&both, "POST", "/auth/login", &[], login(tenant)).await;
        assert_eq!(a, x, "{tenant}");
        assert_eq!(a.0, status, "{tenant}");
    }
    let (a, x) = send(
        &both,
        "POST",
        "/auth/login",
        &[],
        Some(json!({"tenant": "acme"})),
    )
    .await;
    assert_eq!((a.0, x.0), (400, 400), "{a:?} {x:?}");
}
