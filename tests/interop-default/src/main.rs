//! A service as users write it with actix-web's default features: compression and
//! macros on, `Tenancy` on a scope, handlers taking `Tenant`.

use actix_tenancy::prelude::*;
use actix_web::{get, middleware::Compress, web, App, HttpServer};

#[get("/whoami")]
async fn whoami(tenant: Tenant) -> String {
    tenant.id().to_string()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let registry = InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
    let tenancy = Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::header())
                .build()
                .map_err(std::io::Error::other)?,
        )
        .build()
        .map_err(std::io::Error::other)?;
    HttpServer::new(move || {
        App::new()
            .wrap(Compress::default())
            .service(web::scope("/api").wrap(tenancy.clone()).service(whoami))
    })
    .bind("127.0.0.1:0")?
    .run()
    .await
}
