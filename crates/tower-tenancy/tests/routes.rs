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
