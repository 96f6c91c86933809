//! The pieces many tests build the same way.

use std::sync::Arc;

use actix_tenancy::{prelude::*, registry::TenantRegistry, resolve::SourceKind, TenancyBuilder};

/// acme (pro, active) and initech (pro, suspended).
pub fn acme_and_initech() -> InMemoryRegistry {
    InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
        .with(
            TenantRecord::new(TenantId::parse("initech").unwrap(), "pro")
                .with_status(TenantStatus::Suspended),
        )
}

/// acme alone, on `tier`.
pub fn acme_on(tier: &str) -> InMemoryRegistry {
    InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), tier))
}

/// A `Tenancy` builder whose resolver reads `X-Tenant-ID` from `registry`.
pub fn on_header(registry: impl TenantRegistry) -> TenancyBuilder {
    Tenancy::builder().resolver(
        TenantResolver::builder(registry)
            .source(Source::header())
            .build()
            .unwrap(),
    )
}

/// A `Tenancy` builder whose resolver reads the verified principal's tenant.
pub fn on_claim(registry: impl TenantRegistry) -> TenancyBuilder {
    Tenancy::builder().resolver(
        TenantResolver::builder(registry)
            .source(Source::claim())
            .build()
            .unwrap(),
    )
}

/// The context of tenant `id` on `tier`, named by the header.
pub fn context(id: &str, tier: &str) -> TenantContext {
    let id = TenantId::parse(id).unwrap();
    TenantContext::new(
        id.clone(),
        SourceKind::Header,
        Arc::new(TenantRecord::new(id, tier)),
        None,
    )
}
