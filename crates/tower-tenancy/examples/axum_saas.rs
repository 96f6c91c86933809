// The SaaS demo on axum: the tenants, routes, rules, plans and answers of actix-tenancy's
// `examples/saas.rs`, through tower-tenancy's layer (resolution, policy, quota).
//
//     cargo run -p tower-tenancy --example axum_saas --features axum
//     curl -s localhost:8080/api/whoami -H 'X-Tenant-ID: acme'
//
// Tenants: acme (pro), globex (free), initech (suspended), umbrella (enterprise, region
// eu; this deployment is `us`), hooli (enterprise, region `us`), soylent (pro). Sources:
// `X-Tenant-ID`, then the subdomain of `localhost`. Sessions (login, bearer tokens,
// logout) and the Prometheus endpoint are the actix demo's only: they come to Tower
// with the session stage. The workspace's `tests/readme.rs` replays the README's
// "Try it" session against this app (it includes this file, so these are `//`
// comments).

use axum::{
    http::{header::CONTENT_TYPE, request::Parts, HeaderMap, HeaderName, Method},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use tenancy_core::{
    error::TenancyError,
    policy::{PolicySet, RulePolicy, Rules},
    quota::{LocalQuota, Period, QueryCost, QuotaPlan, QuotaPlans},
    registry::InMemoryRegistry,
    resolve::routing_path,
    TenantId, TenantRecord, TenantStatus,
};
use tower_tenancy::{
    quota::CostEstimator, Source, TenancyLayer, Tenant, TenantPolicy, TenantQuota,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The deployment's region.
pub const REGION: &str = "us";
/// The models the demo knows; any other name is refused like one outside the plan.
pub const MODELS: [&str; 3] = ["demo-small", "demo-large", "demo-preview"];
/// The model of a completion that names none.
pub const DEFAULT_MODEL: &str = "demo-small";

fn tenant(id: &str, tier: &str) -> Result<TenantRecord, Error> {
    Ok(TenantRecord::new(TenantId::parse(id)?, tier))
}

/// The demo's tenants (the actix demo's).
pub fn registry() -> Result<InMemoryRegistry, Error> {
    Ok(InMemoryRegistry::new()
        .with(tenant("acme", "pro")?)
        .with(tenant("globex", "free")?)
        .with(tenant("initech", "pro")?.with_status(TenantStatus::Suspended))
        .with(tenant("umbrella", "enterprise")?.with_region("eu"))
        .with(tenant("hooli", "enterprise")?.with_region(REGION))
        .with(tenant("soylent", "pro")?))
}

/// The actix demo's rules: reports for pro and enterprise; models and tools by tier;
/// `acme` may also use `demo-preview`.
pub fn policy() -> Result<RulePolicy, Error> {
    let paid = || Rules::new().allow("GET /api/reports");
    let enterprise = MODELS
        .iter()
        .fold(paid(), |rules, m| {
            rules.allow_capability(&format!("model:{m}"))
        })
        .allow_capability("tool:search")
        .allow_capability("tool:code");
    Ok(RulePolicy::new(
        PolicySet::new()
            .default_rules(
                Rules::new()
                    .allow("GET /api/whoami")
                    .allow("POST /api/complete")
                    .allow_capability(&format!("model:{DEFAULT_MODEL}")),
            )
            .tier(
                "pro",
                paid()
                    .allow_capability("model:demo-large")
                    .allow_capability("tool:search"),
            )
            .tier("enterprise", enterprise)
            .tenant("acme", Rules::new().allow_capability("model:demo-preview")),
    )?)
}

/// The actix demo's plans: rates count requests; a completion's `max_tokens` also
/// takes that many units of the daily token budget.
pub fn plans() -> Result<QuotaPlans, Error> {
    let rate = |per_second: u32, burst: u32| {
        QuotaPlan::per_second(per_second)
            .burst(burst)
            .rate_counts_requests(true)
    };
    Ok(QuotaPlans::builder()
        .tier("free", rate(5, 5).budget(1_000, Period::Day))
        .tier("pro", rate(50, 50).budget(100_000, Period::Day))
        .tier("enterprise", rate(500, 1_000))
        .build()?)
}

/// `max_tokens` on the completion route (the path as actix routes it, so
/// `/api/%63omplete` is the completion too); nothing elsewhere.
struct Tokens(QueryCost);

impl CostEstimator for Tokens {
    fn estimate(&self, head: &Parts) -> Result<u32, TenancyError> {
        if head.method == Method::POST && routing_path(head.uri.path()) == "/api/complete" {
            self.0.estimate(head)
        } else {
            Ok(0)
        }
    }
}

/// The layer: resolution, policy (reading `X-Model` and `X-Tool`), quota.
pub fn tenancy() -> Result<TenancyLayer, Error> {
    let policy = TenantPolicy::builder(policy()?)
        .capability_header("model", HeaderName::from_static("x-model"))
        .capability_header("tool", HeaderName::from_static("x-tool"))
        .build()?;
    // Only the completion costs tokens; every request is rated (the plans count
    // requests), so the other routes are free knowingly.
    let quota = TenantQuota::builder(LocalQuota::new(plans()?))
        .cost(Tokens(QueryCost::new("max_tokens")))
        .min_cost(0)
        .build()?;
    Ok(TenancyLayer::builder(registry()?)
        .source(Source::header())
        .source(Source::subdomain(["localhost"]))
        .exempt("/health")
        .region(REGION)
        .policy(policy)
        .quota(quota)
        .build()?)
}

/// JSON ending in a newline, so a shell prompt after `curl` starts on its own line.
fn json(value: serde_json::Value) -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        value.to_string() + "\n",
    )
        .into_response()
}

async fn health() -> Response {
    json(serde_json::json!({ "status": "ok" }))
}

async fn whoami(tenant: Tenant) -> Response {
    json(serde_json::json!({
        "tenant": tenant.id().as_str(),
        "tier": tenant.tier(),
        "source": tenant.source().as_str(),
    }))
}

async fn reports(tenant: Tenant) -> Response {
    json(serde_json::json!({
        "tenant": tenant.id().as_str(),
        "reports": ["usage", "billing"],
    }))
}

/// The policy stage has checked `X-Model` (one value, within the tenant's plan) before
/// this runs; absent, the default model answers.
async fn complete(tenant: Tenant, headers: HeaderMap) -> Response {
    let model = headers
        .get("x-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(DEFAULT_MODEL);
    json(serde_json::json!({
        "tenant": tenant.id().as_str(),
        "completion": "Hello from the demo model.",
        "model": model,
    }))
}

/// The app: the routes, and the layer around them.
pub fn app() -> Result<Router, Error> {
    Ok(Router::new()
        .route("/health", get(health))
        .route("/api/whoami", get(whoami))
        .route("/api/reports", get(reports))
        .route("/api/complete", post(complete))
        .layer(tenancy()?))
}

#[tokio::main(flavor = "current_thread")]
pub async fn main() -> Result<(), Error> {
    let app = app()?;
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!(
        "SaaS demo (axum) listening on http://{}, region {REGION}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
