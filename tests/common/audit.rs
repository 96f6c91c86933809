//! The requests the audit tests watch: one a resolver lets through (`acme`), one it
//! rejects (`nobody`, `403 tenant_forbidden`), each audited once by the default sink.

use actix_tenancy::prelude::*;
use actix_web::{test, web, App};

pub async fn one_pass_and_one_rejection() {
    let registry =
        InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
    let resolver = TenantResolver::builder(registry)
        .source(Source::header())
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(resolver)
            .route("/x", web::get().to(|_: Tenant| async { "ok" })),
    )
    .await;
    for tenant in ["acme", "nobody"] {
        let req = test::TestRequest::get()
            .uri("/x")
            .insert_header(("x-tenant-id", tenant))
            .to_request();
        test::call_service(&app, req).await;
    }
}
