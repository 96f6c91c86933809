// The tenants both bench servers serve (`bench/bench_server.rs`, actix, and
// `bench/tower`, axum), included by each with `#[path]`: 10,000 tenants in memory, and
// the same behind a registry that can only answer asynchronously.

use tenancy_core::{
    registry::{InMemoryRegistry, Lookup, RegistryError, TenantRegistry},
    Answer, Moment, TenantId, TenantRecord,
};

/// How many tenants the registry holds (`t0` to `t9999`).
pub(crate) const TENANTS: usize = 10_000;

/// The tenants, half `pro` and half `free`.
pub(crate) fn registry() -> InMemoryRegistry {
    InMemoryRegistry::from_records((0..TENANTS).map(|i| {
        TenantRecord::new(
            TenantId::parse(&format!("t{i}")).expect("valid id"),
            if i % 2 == 0 { "pro" } else { "free" },
        )
    }))
}

/// A registry that can only answer asynchronously, like a database: the cache in
/// front of it is what keeps the hot path synchronous.
pub(crate) struct Remote(pub(crate) InMemoryRegistry);

impl TenantRegistry for Remote {
    fn lookup<'a>(
        &'a self,
        id: &'a str,
        _: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>> {
        Answer::later(async move { Ok(self.0.get(id)) })
    }
}
