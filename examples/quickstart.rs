//! The quickstart: tenant resolution on `X-Tenant-ID` and subdomains of `localhost`.
//!
//! ```sh
//! cargo run --example quickstart
//! curl -s localhost:8080/whoami -H 'X-Tenant-ID: acme'
//! ```
//!
//! Listens on 127.0.0.1:8080 unless `BIND_ADDR` says otherwise.

use actix_tenancy::prelude::*;
use actix_web::{middleware::Logger, web, App, HttpResponse, HttpServer};

async fn whoami(tenant: Tenant) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "tenant": tenant.id(),
        "tier": tenant.tier(),
        "source": tenant.source().as_str(),
    }))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

fn tenant(id: &str, tier: &str) -> TenantRecord {
    TenantRecord::new(TenantId::parse(id).expect("valid tenant id"), tier)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let registry = InMemoryRegistry::new()
        .with(tenant("acme", "pro"))
        .with(tenant("globex", "free"))
        .with(tenant("initech", "pro").with_status(TenantStatus::Suspended));

    // Built once, outside the per-worker closure: every worker shares the registry.
    let resolver = TenantResolver::builder(registry)
        .source(Source::header())
        .source(Source::subdomain(["localhost"]))
        .exempt("/health")
        .build()
        .map_err(std::io::Error::other)?;

    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    println!("quickstart listening on http://{addr}");
    HttpServer::new(move || {
        App::new()
            .wrap(resolver.clone())
            .wrap(Logger::default())
            .route("/health", web::get().to(health))
            .route("/whoami", web::get().to(whoami))
    })
    .bind(addr)?
    .run()
    .await
}
