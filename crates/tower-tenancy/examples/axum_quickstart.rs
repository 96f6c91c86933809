// The README's quickstart on axum: tenant resolution on `X-Tenant-ID` and subdomains
// of `localhost`, the same tenants and the same answers as actix-tenancy's
// `examples/quickstart.rs`.
//
//     cargo run -p tower-tenancy --example axum_quickstart --features axum
//     curl -s localhost:8080/whoami -H 'X-Tenant-ID: acme'
//
// Listens on 127.0.0.1:8080 unless `BIND_ADDR` says otherwise. The workspace's
// `tests/readme.rs` replays the README's quickstart session against this app too (it
// includes this file, which is why the comments here are not `//!` docs).

use axum::{
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tenancy_core::{
    error::ConfigError, registry::InMemoryRegistry, TenantId, TenantRecord, TenantStatus,
};
use tower_tenancy::{Source, TenancyLayer, Tenant};

/// JSON ending in a newline, so a shell prompt after `curl` starts on its own line.
fn json(value: serde_json::Value) -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        value.to_string() + "\n",
    )
        .into_response()
}

async fn whoami(tenant: Tenant) -> Response {
    json(serde_json::json!({
        "tenant": tenant.id().as_str(),
        "tier": tenant.tier(),
        "source": tenant.source().as_str(),
    }))
}

async fn health() -> Response {
    json(serde_json::json!({ "status": "ok" }))
}

fn tenant(id: &str, tier: &str) -> TenantRecord {
    TenantRecord::new(TenantId::parse(id).expect("valid tenant id"), tier)
}

/// The layer: `X-Tenant-ID`, then subdomains of `localhost`; `/health` is exempt.
pub fn tenancy() -> Result<TenancyLayer, ConfigError> {
    let registry = InMemoryRegistry::new()
        .with(tenant("acme", "pro"))
        .with(tenant("globex", "free"))
        .with(tenant("initech", "pro").with_status(TenantStatus::Suspended));
    TenancyLayer::builder(registry)
        .source(Source::header())
        .source(Source::subdomain(["localhost"]))
        .exempt("/health")
        .build()
}

/// The app: the routes, and the layer around them.
pub fn app() -> Result<Router, ConfigError> {
    Ok(Router::new()
        .route("/health", get(health))
        .route("/whoami", get(whoami))
        .layer(tenancy()?))
}

#[tokio::main(flavor = "current_thread")]
pub async fn main() -> std::io::Result<()> {
    let app = app().map_err(std::io::Error::other)?;
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    println!(
        "quickstart (axum) listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await
}
