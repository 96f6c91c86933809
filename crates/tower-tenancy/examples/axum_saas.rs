// The SaaS demo on axum: the tenants, routes, rules, plans and answers of actix-tenancy's
// `examples/saas.rs`, through tower-tenancy's layer (resolution, policy, quota).
//
//     cargo run -p tower-tenancy --example axum_saas --features axum,jwt
//     curl -s localhost:8080/api/whoami -H 'X-Tenant-ID: acme'
//
// Tenants: acme (pro), globex (free), initech (suspended), umbrella (enterprise, region
// eu; this deployment is `us`), hooli (enterprise, region `us`), soylent (pro). Sources:
// `X-Tenant-ID`, then the subdomain of `localhost`. Sessions (login, bearer tokens,
// logout) and the Prometheus endpoint are the actix demo's only: they come to Tower
// with the session stage. The workspace's `tests/readme.rs` replays the README's
// "Try it" session against this app (it includes this file, so these are `//`
// comments).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{header::CONTENT_TYPE, request::Parts, HeaderMap, HeaderName, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use jsonwebtoken::Algorithm;
use tenancy_core::{
    error::TenancyError,
    policy::{PolicySet, RulePolicy, Rules},
    quota::{LocalQuota, Period, QueryCost, QuotaPlan, QuotaPlans},
    registry::InMemoryRegistry,
    resolve::routing_path,
    session::{Grant, Key, KeySet, SessionConfig, SessionError, SessionManager, TokenPair},
    Access, Principal, StatusRules, TenantId, TenantRecord, TenantStatus,
};
use tower_tenancy::{
    quota::CostEstimator, Source, TenancyLayer, Tenant, TenantAuth, TenantPolicy, TenantQuota,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The secret used when `TENANCY_DEMO_SECRET` is unset (the actix demo's). Never in
/// production.
pub const DEFAULT_SECRET: &str = "actix-tenancy-demo-secret-change-me!";
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
                    .allow("POST /auth/logout")
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

/// The demo's sessions: the actix demo's issuer, audience and secret.
pub fn sessions() -> Result<SessionManager, Error> {
    let secret = std::env::var("TENANCY_DEMO_SECRET").unwrap_or_else(|_| DEFAULT_SECRET.into());
    let keys = KeySet::signing(Key::hmac("demo", Algorithm::HS256, secret.as_bytes())?)?;
    Ok(SessionManager::new(
        SessionConfig::new("actix-tenancy-demo", "demo-api"),
        keys,
    ))
}

/// The layer: authentication (a request without a token goes on), resolution,
/// policy (reading `X-Model` and `X-Tool`), quota.
pub fn tenancy(sessions: &SessionManager) -> Result<TenancyLayer, Error> {
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
    let auth = TenantAuth::builder(sessions.clone())
        .allow_anonymous(true)
        .build()?;
    Ok(TenancyLayer::builder(registry()?)
        .auth(auth)
        .source(Source::claim())
        .source(Source::header())
        .source(Source::subdomain(["localhost"]))
        .exempt("/health")
        .exempt("/auth/login")
        .exempt("/auth/refresh")
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

/// The demo's state: its sessions and tenants, for the login routes.
#[derive(Debug, Clone)]
pub struct Demo {
    sessions: SessionManager,
    registry: Arc<InMemoryRegistry>,
}

/// A JSON body of at most 4 KiB; anything else is a `400 invalid_request`.
fn body_json(body: &[u8]) -> Result<serde_json::Value, TenancyError> {
    let bad = |why: &str| TenancyError::InvalidRequest {
        reason: why.to_owned().into(),
    };
    if body.len() > 4_096 {
        return Err(bad("the body is larger than 4 KiB"));
    }
    serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))
}

fn field<'a>(value: &'a serde_json::Value, name: &str) -> Result<&'a str, TenancyError> {
    value
        .get(name)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| TenancyError::InvalidRequest {
            reason: format!("missing field `{name}`").into(),
        })
}

fn pair_body(pair: &TokenPair) -> Response {
    json(serde_json::json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "expires_in": pair.expires_in,
    }))
}

fn session_error(e: &SessionError) -> TenancyError {
    match e {
        SessionError::Store(_) => TenancyError::AuthUnavailable {
            reason: "revocation store".into(),
        },
        _ => TenancyError::Unauthenticated {
            reason: "bad refresh token".into(),
        },
    }
}

/// Demo login: no password. Unknown and suspended tenants get the resolver's 403.
async fn login(State(demo): State<Demo>, body: Bytes) -> Result<Response, TenancyError> {
    let body = body_json(&body)?;
    let forbidden = || TenancyError::TenantForbidden {
        reason: "login for an unknown or inactive tenant".into(),
    };
    let id = TenantId::parse(field(&body, "tenant")?).map_err(|_| forbidden())?;
    let user = field(&body, "user")?;
    if user.is_empty() || user.len() > 64 || !user.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TenancyError::InvalidRequest {
            reason: "user must be 1 to 64 printable ASCII characters".into(),
        });
    }
    let record = demo.registry.get(id.as_str()).ok_or_else(forbidden)?;
    // The resolver's own rules (the defaults): a session only for a tenant it serves
    // in full.
    if StatusRules::default().access(record.status()) != Access::Allow {
        return Err(forbidden());
    }
    if record.region().is_some_and(|r| r != REGION) {
        return Err(TenancyError::TenantMisdirected);
    }
    let pair = demo
        .sessions
        .issue(&id, user, Grant::new())
        .map_err(|e| session_error(&e))?;
    Ok(pair_body(&pair))
}

async fn refresh(State(demo): State<Demo>, body: Bytes) -> Result<Response, TenancyError> {
    let body = body_json(&body)?;
    let pair = demo
        .sessions
        .refresh(field(&body, "refresh_token")?)
        .await
        .map_err(|e| session_error(&e))?;
    Ok(pair_body(&pair))
}

async fn logout(State(demo): State<Demo>, user: Principal) -> Result<Response, TenancyError> {
    demo.sessions
        .logout(&user)
        .await
        .map_err(|e| session_error(&e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The app: the routes, and the layer around them.
pub fn app() -> Result<Router, Error> {
    let sessions = sessions()?;
    let demo = Demo {
        sessions: sessions.clone(),
        registry: Arc::new(registry()?),
    };
    Ok(Router::new()
        .route("/health", get(health))
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/api/whoami", get(whoami))
        .route("/api/reports", get(reports))
        .route("/api/complete", post(complete))
        .with_state(demo)
        .layer(tenancy(&sessions)?))
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
