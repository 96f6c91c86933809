// The SaaS demo: every stage through `Tenancy::builder()`, with no services needed.
//
//     cargo run --example saas --features jwt,metrics
//     curl -s localhost:8080/api/whoami -H 'X-Tenant-ID: acme'
//
// Tenants: acme (pro), globex (free), initech (suspended), umbrella (enterprise, region
// eu; this deployment is `us`). Sources: a bearer token's `tenant_id`, then
// `X-Tenant-ID`, then the subdomain of `localhost`. With `REDIS_URL` set, quotas and
// revocations live in Redis. `tests/saas.rs` checks every behaviour listed in the
// README against this file (it includes it, which is why these are `//` comments).

use std::{
    error::Error,
    sync::{Arc, OnceLock},
};

use actix_tenancy::{
    policy::{PolicySet, RulePolicy, Rules, TenantPolicy},
    prelude::*,
    quota::{
        LocalQuota, Period, QueryCost, QuotaPlan, QuotaPlans, RouteCost, TenantQuota,
        TenantQuotaBuilder,
    },
    registry::{Access, StatusRules},
    session::{Grant, Key, KeySet, SessionConfig, SessionError, SessionManager, TenantAuth},
    Clock,
};
use actix_web::{
    dev::ServiceRequest,
    http::{header::HeaderName, Method},
    web, App, HttpResponse, HttpServer,
};
use jsonwebtoken::Algorithm;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;

/// The secret used when `TENANCY_DEMO_SECRET` is unset. Never in production.
pub const DEFAULT_SECRET: &str = "actix-tenancy-demo-secret-change-me!";
/// The deployment's region.
pub const REGION: &str = "us";

/// Everything the demo's app needs, built once and shared by every worker.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The pipeline.
    pub tenancy: Tenancy,
    /// Sessions: login, refresh, logout.
    pub sessions: SessionManager,
    /// The tenants, for the login route.
    pub registry: Arc<InMemoryRegistry>,
    /// The active policy (reloadable).
    pub policy: RulePolicy,
    /// Where quotas and revocations live: `memory` or `redis`.
    pub backend: &'static str,
}

fn tenant(id: &str, tier: &str) -> Result<TenantRecord, Box<dyn Error>> {
    Ok(TenantRecord::new(TenantId::parse(id)?, tier))
}

/// The demo's tenants.
pub fn registry() -> Result<InMemoryRegistry, Box<dyn Error>> {
    Ok(InMemoryRegistry::new()
        .with(tenant("acme", "pro")?)
        .with(tenant("globex", "free")?)
        .with(tenant("initech", "pro")?.with_status(TenantStatus::Suspended))
        .with(tenant("umbrella", "enterprise")?.with_region("eu"))
        .with(tenant("hooli", "enterprise")?.with_region(REGION))
        .with(tenant("soylent", "pro")?))
}

/// The models the demo knows; any other name is refused like one outside the plan.
pub const MODELS: [&str; 3] = ["demo-small", "demo-large", "demo-preview"];
/// The model of a completion that names none.
pub const DEFAULT_MODEL: &str = "demo-small";

/// Reports are for pro and enterprise; everyone may ask who they are, complete and
/// log out. Anything else is denied.
///
/// Models (`X-Model`) and tools (`X-Tool`) by tier: free `demo-small` and no tool; pro
/// also `demo-large` and the tool `search`; enterprise every model and the tools
/// `search` and `code`. One pro tenant, `acme`, may also use `demo-preview`.
pub fn policy() -> Result<RulePolicy, Box<dyn Error>> {
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

/// Rates count requests; `POST /api/complete?max_tokens=N` also takes N units of the
/// daily token budget.
pub fn plans() -> Result<QuotaPlans, Box<dyn Error>> {
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

/// `max_tokens` on the completion route, found the way actix routes (so
/// `/api/%63omplete` is the completion route too); nothing elsewhere.
pub fn tokens() -> Result<RouteCost, Box<dyn Error>> {
    Ok(RouteCost::builder()
        .route(Method::POST, "/api/complete", QueryCost::new("max_tokens"))
        .otherwise(|_: &ServiceRequest| 0)
        .build()?)
}

fn secret() -> Vec<u8> {
    match std::env::var("TENANCY_DEMO_SECRET") {
        Ok(s) => s.into_bytes(),
        Err(_) => {
            tracing::warn!("TENANCY_DEMO_SECRET is unset: using the built-in demo secret");
            DEFAULT_SECRET.as_bytes().to_vec()
        }
    }
}

/// Builds the demo: in memory, or on Redis when `redis_url` is given.
pub fn build(redis_url: Option<&str>) -> Result<Demo, Box<dyn Error>> {
    build_on(redis_url, None)
}

/// [`build`], with the in-memory quotas on `clock` when one is given: `tests/saas.rs`
/// hands it a `testing::FakeClock`'s, to refill a rate by hand, not by sleeping.
/// Redis quotas keep Redis's own time.
pub fn build_on(redis_url: Option<&str>, clock: Option<Clock>) -> Result<Demo, Box<dyn Error>> {
    let in_memory = move || -> Result<TenantQuotaBuilder, Box<dyn Error>> {
        Ok(match clock {
            Some(clock) => TenantQuota::builder(LocalQuota::with_clock(plans()?, clock)),
            None => TenantQuota::builder(LocalQuota::new(plans()?)),
        })
    };
    let keys = KeySet::signing(Key::hmac("demo", Algorithm::HS256, &secret())?)?;
    #[allow(unused_mut)]
    let mut sessions =
        SessionManager::new(SessionConfig::new("actix-tenancy-demo", "demo-api"), keys);
    let registry = Arc::new(registry()?);
    let policy = policy()?;
    let (quota, backend) = match redis_url {
        #[cfg(feature = "redis")]
        Some(url) => {
            // A demo on a busy laptop: generous timeouts. Production keeps them tight.
            let timeout = std::time::Duration::from_millis(250);
            let store = actix_tenancy::session::RedisRevocations::with_options(
                url,
                "tenancy-demo:rev:",
                timeout,
            )?;
            sessions = sessions.with_store(store);
            let quota = actix_tenancy::quota::RedisQuota::builder(url, plans()?)
                .prefix("tenancy-demo")
                .timeout(timeout)
                .build()?;
            (TenantQuota::builder(quota), "redis")
        }
        #[cfg(not(feature = "redis"))]
        Some(_) => {
            tracing::warn!("REDIS_URL is set, but the demo was built without the `redis` feature");
            (in_memory()?, "memory")
        }
        None => (in_memory()?, "memory"),
    };
    let resolver = TenantResolver::builder(Arc::clone(&registry))
        .source(Source::claim())
        .source(Source::header())
        .source(Source::subdomain(["localhost"]))
        .exempt("/health")
        .exempt("/metrics")
        .exempt("/auth/login")
        .exempt("/auth/refresh")
        .region(REGION)
        .build()?;
    let tenancy = Tenancy::builder()
        .auth(
            TenantAuth::builder(sessions.clone())
                .allow_anonymous(true)
                .build()?,
        )
        .resolver(resolver)
        // The demo's plans name models and tools: the policy stage reads them from
        // `X-Model` and `X-Tool` (it reads no header it is not told to).
        .policy(
            TenantPolicy::builder(policy.clone())
                .capability_header("model", HeaderName::from_static("x-model"))
                .capability_header("tool", HeaderName::from_static("x-tool"))
                .build()?,
        )
        // Only the completion costs tokens; every request is rated (the plans count
        // requests), so the other routes are free knowingly.
        .quota(quota.cost(tokens()?).min_cost(0).build()?)
        // Request counts and latency by name for these tenants (the rest are `other`);
        // `examples/grafana/tenancy.json` charts them.
        .metrics_for_tenants(["acme", "globex", "umbrella"])
        .build()?;
    Ok(Demo {
        tenancy,
        sessions,
        registry,
        policy,
        backend,
    })
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Real histogram buckets for the stage durations (without them the exporter
        // writes a summary), from 50 µs to 1 s.
        let buckets = [
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
        ];
        // And for whole requests, from 1 ms to 10 s.
        let requests = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ];
        let full = |name: &str| metrics_exporter_prometheus::Matcher::Full(name.into());
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(full(actix_tenancy::observe::DURATION_METRIC), &buckets)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    full(actix_tenancy::observe::TENANT_DURATION_METRIC),
                    &requests,
                )
            })
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (a test harness): keep it.
        if metrics::set_global_recorder(recorder).is_ok() {
            actix_tenancy::observe::describe_metrics();
        }
        handle
    })
}

#[derive(Deserialize)]
struct Login {
    tenant: String,
    user: String,
}

#[derive(Deserialize)]
struct Refresh {
    refresh_token: String,
}

/// JSON ending in a newline, so a shell prompt after `curl` starts on its own line.
fn json(value: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(value.to_string() + "\n")
}

fn pair_body(pair: &actix_tenancy::session::TokenPair) -> HttpResponse {
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
async fn login(
    demo: web::Data<Demo>,
    body: web::Json<Login>,
) -> Result<HttpResponse, TenancyError> {
    let forbidden = || TenancyError::TenantForbidden {
        reason: "login for an unknown or inactive tenant".into(),
    };
    let id = TenantId::parse(&body.tenant).map_err(|_| forbidden())?;
    let user = body.user.as_str();
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

async fn refresh(
    demo: web::Data<Demo>,
    body: web::Json<Refresh>,
) -> Result<HttpResponse, TenancyError> {
    let pair = demo
        .sessions
        .refresh(&body.refresh_token)
        .await
        .map_err(|e| session_error(&e))?;
    Ok(pair_body(&pair))
}

async fn logout(demo: web::Data<Demo>, user: Principal) -> Result<HttpResponse, TenancyError> {
    demo.sessions
        .logout(&user)
        .await
        .map_err(|e| session_error(&e))?;
    Ok(HttpResponse::NoContent().finish())
}

async fn health() -> HttpResponse {
    json(serde_json::json!({ "status": "ok" }))
}

async fn whoami(tenant: Tenant) -> HttpResponse {
    json(serde_json::json!({
        "tenant": tenant.id(),
        "tier": tenant.tier(),
        "source": tenant.source().as_str(),
    }))
}

async fn reports(tenant: Tenant) -> HttpResponse {
    json(serde_json::json!({
        "tenant": tenant.id(),
        "reports": ["usage", "billing"],
    }))
}

/// The policy stage has checked `X-Model` (one value, within the tenant's plan) before
/// this runs; absent, the default model answers.
async fn complete(tenant: Tenant, req: actix_web::HttpRequest) -> HttpResponse {
    let model = req
        .headers()
        .get("x-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(DEFAULT_MODEL);
    json(serde_json::json!({
        "tenant": tenant.id(),
        "completion": "Hello from the demo model.",
        "model": model,
    }))
}

async fn prometheus() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics().render())
}

/// A malformed JSON body is a problem+json `400 invalid_request` too.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(4096)
        .error_handler(|err, _req| {
            TenancyError::InvalidRequest {
                reason: err.to_string().into(),
            }
            .into()
        })
}

/// The demo's routes; the app data must hold the [`Demo`].
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(prometheus))
        .route("/auth/login", web::post().to(login))
        .route("/auth/refresh", web::post().to(refresh))
        .route("/auth/logout", web::post().to(logout))
        .route("/api/whoami", web::get().to(whoami))
        .route("/api/reports", web::get().to(reports))
        .route("/api/complete", web::post().to(complete));
}

/// The demo's log subscriber, at `INFO`: one JSON object per line when `json`
/// (`LOG_FORMAT=json`), readable text otherwise.
pub fn log_subscriber<W>(json: bool, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // Colour only on a terminal: escape codes in a log file or pipe are noise.
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(writer);
    if json {
        Box::new(builder.json().finish())
    } else {
        Box::new(builder.finish())
    }
}

fn init_logging() {
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json");
    // Ignored if the application set one already.
    let _ = tracing::subscriber::set_global_default(log_subscriber(json, std::io::stdout));
}

/// `url` with the password of its user info replaced by `***`, for logs.
pub fn redacted(url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(s, rest)| Some((s, rest.split_once('@')?)))
    {
        Some((scheme, (user, host))) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// What the demo says at start-up: where quotas and revocations live, and where it
/// listens (the address it bound, after binding).
pub fn announce(demo: &Demo, redis: Option<&str>, addr: &str) {
    match demo.backend {
        "redis" => tracing::info!(
            redis = %redacted(redis.unwrap_or("")),
            "quotas and revocations in Redis"
        ),
        _ => tracing::info!("quotas and revocations in memory (set REDIS_URL to share them)"),
    }
    tracing::info!(%addr, region = REGION, "actix-tenancy demo listening");
}

#[actix_web::main]
pub async fn main() -> Result<(), Box<dyn Error>> {
    init_logging();
    metrics();
    let redis = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
    let demo = build(redis.as_deref())?;
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let data = web::Data::new(demo.clone());
    let tenancy = demo.tenancy.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(tenancy.clone())
            .configure(routes)
    })
    .bind(&addr)
    .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    for bound in server.addrs() {
        announce(&demo, redis.as_deref(), &bound.to_string());
    }
    server.run().await?;
    Ok(())
}
