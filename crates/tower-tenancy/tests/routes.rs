//! Route templates: with the layer inside axum's router (`Router::layer`), the policy
//! is asked about the template axum matched (`MatchedPath`), the route that really
//! runs; with the layer around the router, there is none yet, and the path is judged
//! (a rule written as a template then allows nothing).

use std::sync::{Arc, Mutex};

use axum::{body::Body, routing::get, Router};
use http::Request;
use tenancy_core::{
    policy::{Decision, PolicyError, PolicyEvaluator, PolicyRequest, PolicySet, RulePolicy, Rules},
    registry::InMemoryRegistry,
    Answer, TenantContext, TenantId, TenantRecord,
};
use tower::{Layer as _, ServiceExt as _};
use tower_tenancy::{Source, TenancyLayer, TenantPolicy};

/// The rules, and every route the evaluator was asked about.
struct Seen(RulePolicy, Arc<Mutex<Vec<Option<String>>>>);

impl PolicyEvaluator for Seen {
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        self.1.lock().unwrap().push(req.route().map(str::to_owned));
        self.0.evaluate(tenant, req)
    }
}

fn layer(seen: &Arc<Mutex<Vec<Option<String>>>>) -> TenancyLayer {
    let rules = RulePolicy::new(
        PolicySet::new().tier(
            "free",
            Rules::new()
                .allow("GET /items/{id}")
                .deny("GET /items/export"),
        ),
    )
    .unwrap();
    let registry = InMemoryRegistry::new().with(TenantRecord::new(
        TenantId::parse("globex").unwrap(),
        "free",
    ));
    TenancyLayer::builder(registry)
        .source(Source::header())
        .policy(TenantPolicy::new(Seen(rules, Arc::clone(seen))))
        .build()
        .unwrap()
}

fn routes() -> Router {
    Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .route("/items/{id}/edit", get(|| async { "edit" }))
        .nest(
            "/v2",
            Router::new().route("/items/{id}", get(|| async { "v2" })),
        )
}

fn get_(uri: &str) -> Request<Body> {
    Request::builder()
        .uri(uri)
        .header("x-tenant-id", "globex")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn inside_the_router_the_policy_judges_the_matched_template() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = routes().layer(layer(&seen));
    for (uri, status, route) in [
        ("/items/7", 200, Some("/items/{id}")),
        // A route no rule allows: denied by its template.
        ("/items/7/edit", 403, Some("/items/{id}/edit")),
        // A nested router's template carries its prefix.
        ("/v2/items/7", 403, Some("/v2/items/{id}")),
        // axum routes the encoded spelling to `/items/{id}`; its path is the
        // denied export all the same: route and path are both judged.
        ("/items/%65xport", 403, Some("/items/{id}")),
    ] {
        let res = app.clone().oneshot(get_(uri)).await.unwrap();
        assert_eq!(res.status(), status, "{uri}");
        let asked = seen.lock().unwrap().pop().unwrap();
        assert_eq!(asked.as_deref(), route, "{uri}");
    }
}

#[tokio::test]
async fn around_the_router_there_is_no_template_and_the_path_is_judged() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = layer(&seen).layer(routes());
    // A rule written as a template (`GET /items/{id}`) names a route, and there is
    // none yet: it allows nothing here (closed, never open). Rules for a layer
    // around the router are written against paths (`GET /items/*`).
    for uri in ["/items/7", "/items/7/edit", "/items/export"] {
        let status = 403;
        let res = app.clone().oneshot(get_(uri)).await.unwrap();
        assert_eq!(res.status(), status, "{uri}");
        assert_eq!(seen.lock().unwrap().pop().unwrap(), None, "{uri}");
    }
}

/// The rules, counting the evaluations, and keeping `RulePolicy`'s promise that its
/// decisions may be remembered while its epoch holds.
struct Counted(Arc<RulePolicy>, Arc<std::sync::atomic::AtomicUsize>);

impl PolicyEvaluator for Counted {
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.evaluate(tenant, req)
    }

    fn memo_epoch(&self) -> Option<u64> {
        self.0.memo_epoch()
    }
}

#[tokio::test]
async fn a_remembered_decision_is_asked_once_per_route_and_epoch() {
    use std::sync::atomic::Ordering::SeqCst;
    let set = |allow: &str| PolicySet::new().tier("free", Rules::new().allow(allow));
    let rules = Arc::new(RulePolicy::new(set("GET /items/{id}")).unwrap());
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let registry = InMemoryRegistry::new().with(TenantRecord::new(
        TenantId::parse("globex").unwrap(),
        "free",
    ));
    let policy = TenantPolicy::builder(Counted(Arc::clone(&rules), Arc::clone(&asked)))
        .capability_header("model", http::HeaderName::from_static("x-model"))
        .build()
        .unwrap();
    let tenancy = TenancyLayer::builder(registry)
        .source(Source::header())
        .policy(policy)
        .build()
        .unwrap();
    // One layer in two routers: the same path is another route in each.
    let items = Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .layer(tenancy.clone());
    let files = Router::new()
        .route("/items/{*rest}", get(|| async { "file" }))
        .layer(tenancy);
    let status = |app: &Router, req: Request<Body>| {
        let app = app.clone();
        async move { app.oneshot(req).await.unwrap().status().as_u16() }
    };

    assert_eq!(status(&items, get_("/items/7")).await, 200);
    assert_eq!(status(&items, get_("/items/7")).await, 200);
    assert_eq!(asked.load(SeqCst), 1, "the second was remembered");
    // Another route for the same path: asked, and denied by its template.
    assert_eq!(status(&files, get_("/items/7")).await, 403);
    assert_eq!(status(&files, get_("/items/7")).await, 403);
    assert_eq!(asked.load(SeqCst), 2, "a denial is remembered too");
    // A capability asked for is never remembered.
    let with_model = || {
        let mut req = get_("/items/7");
        req.headers_mut()
            .insert("x-model", http::HeaderValue::from_static("small"));
        req
    };
    status(&items, with_model()).await;
    status(&items, with_model()).await;
    assert_eq!(asked.load(SeqCst), 4);
    // A new version is a new epoch: asked again, and its answer holds.
    rules.load(set("GET /other")).unwrap();
    assert_eq!(status(&items, get_("/items/7")).await, 403);
    assert_eq!(asked.load(SeqCst), 5);
}

#[tokio::test]
async fn a_head_request_is_judged_as_the_get_axum_runs_for_it() {
    let rules = RulePolicy::new(
        PolicySet::new().tier(
            "free",
            Rules::new()
                .allow("* /**")
                .deny("GET /admin/**")
                .deny("HEAD /private/**"),
        ),
    )
    .unwrap();
    let registry = InMemoryRegistry::new().with(TenantRecord::new(
        TenantId::parse("globex").unwrap(),
        "free",
    ));
    let app = Router::new()
        .route("/admin/{page}", get(|| async { "admin" }))
        .route("/private/{page}", get(|| async { "private" }))
        .route("/items/{id}", get(|| async { "item" }))
        .layer(
            TenancyLayer::builder(registry)
                .source(Source::header())
                .policy(TenantPolicy::new(rules))
                .build()
                .unwrap(),
        );
    let head = |uri: &str| {
        let mut req = get_(uri);
        *req.method_mut() = http::Method::HEAD;
        req
    };
    for (req, status) in [
        // axum runs the GET handler for HEAD: a rule denying GET denies it.
        (head("/admin/users"), 403),
        (get_("/admin/users"), 403),
        // A rule denying HEAD still does, though GET is allowed.
        (head("/private/x"), 403),
        (get_("/private/x"), 200),
        (head("/items/7"), 200),
    ] {
        let what = format!("{} {}", req.method(), req.uri());
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), status, "{what}");
    }
}
