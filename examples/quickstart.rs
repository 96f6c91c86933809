// The quickstart: tenant resolution on `X-Tenant-ID` and subdomains of `localhost`.
//
//     cargo run --example quickstart
//     curl -s localhost:8080/whoami -H 'X-Tenant-ID: acme'
//
// Listens on 127.0.0.1:8080 unless `BIND_ADDR` says otherwise. `tests/readme.rs`
// replays the README's curl session against this app (it includes this file, which
// is why the comments here are not `//!` docs).

use actix_tenancy::prelude::*;
use actix_web::{middleware::Logger, web, App, HttpResponse, HttpServer};

/// JSON ending in a newline, so a shell prompt after `curl` starts on its own line.
fn json(value: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(value.to_string() + "\n")
}

async fn whoami(tenant: Tenant) -> HttpResponse {
    json(serde_json::json!({
        "tenant": tenant.id(),
        "tier": tenant.tier(),
        "source": tenant.source().as_str(),
    }))
}

async fn health() -> HttpResponse {
    json(serde_json::json!({ "status": "ok" }))
}

fn tenant(id: &str, tier: &str) -> TenantRecord {
    TenantRecord::new(TenantId::parse(id).expect("valid tenant id"), tier)
}

/// The resolver: `X-Tenant-ID`, then subdomains of `localhost`; `/health` is exempt.
pub fn resolver() -> Result<TenantResolver, actix_tenancy::error::ConfigError> {
    let registry = InMemoryRegistry::new()
        .with(tenant("acme", "pro"))
        .with(tenant("globex", "free"))
        .with(tenant("initech", "pro").with_status(TenantStatus::Suspended));
    TenantResolver::builder(registry)
        .source(Source::header())
        .source(Source::subdomain(["localhost"]))
        .exempt("/health")
        .build()
}

/// The routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/whoami", web::get().to(whoami));
}

#[actix_web::main]
pub async fn main() -> std::io::Result<()> {
    // Built once, outside the per-worker closure: every worker shares the registry.
    let resolver = resolver().map_err(std::io::Error::other)?;
    // `Logger` writes through the `log` facade: a subscriber that takes those lines
    // (colour only on a terminal).
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .try_init();
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let server = HttpServer::new(move || {
        App::new()
            .wrap(resolver.clone())
            .wrap(Logger::default())
            .configure(routes)
    })
    .bind(&addr)
    .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    for bound in server.addrs() {
        println!("quickstart listening on http://{bound}");
    }
    server.run().await
}
