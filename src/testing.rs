//! A test kit (feature `testing`): handler unit tests with a resolved tenant, and
//! conformance suites to run against your own implementations of the crate's traits
//! (the crate's own backends pass them in its tests).
//!
//! ```
//! use actix_tenancy::{testing, Tenant};
//! use actix_web::{test, FromRequest};
//!
//! async fn whoami(tenant: Tenant) -> String {
//!     tenant.id().to_string()
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let req = test::TestRequest::default().to_http_request();
//! testing::attach(&req, testing::tenant("acme", "pro"));
//! let tenant = Tenant::extract(&req).await.unwrap();
//! assert_eq!(whoami(tenant).await, "acme");
//! # });
//! ```

use std::sync::Arc;

use actix_web::HttpMessage;

use crate::{
    core::{
        error::ProblemJson, resolution::Resolution, SourceKind, TenantContext, TenantId,
        TenantRecord,
    },
    registry::TenantRegistry,
};

/// The context of an active tenant `id` on `tier`, as if named by a header. Panics on
/// an id the default rule refuses (it is for tests).
pub fn tenant(id: &str, tier: &str) -> TenantContext {
    let id = TenantId::parse(id).unwrap_or_else(|e| panic!("testing::tenant({id:?}): {e}"));
    let record = Arc::new(TenantRecord::new(id.clone(), tier));
    TenantContext::new(id, SourceKind::Header, record, None)
}

/// Puts `ctx` into `req` as the resolver would, so that the [`Tenant`](crate::Tenant)
/// extractor (and `Option<Tenant>`) find it: for calling handlers directly, or for an
/// app under test without the middleware. Errors answer in the default problem+json.
pub fn attach(req: &impl HttpMessage, ctx: TenantContext) {
    req.extensions_mut().insert(Resolution {
        tenant: Some(Arc::new(ctx)),
        exempt: false,
        responder: Arc::new(ProblemJson::default()),
        capabilities: None,
    });
}

/// Runs the registry conformance suite against `registry`, which must know `known`
/// and not `unknown`; panics, naming the rule, on the first violation.
///
/// - `lookup(known)` is `Ok(Some(record))` and the record is `known`'s;
/// - `lookup(unknown)` is `Ok(None)`: "not found" is not an error, and never a record;
/// - `lookup_ready`, when it answers, answers the same;
/// - 64 concurrent lookups of each answer the same.
///
/// For "unavailable is not not-found", see [`registry_unavailable`].
pub async fn registry_conformance<R: TenantRegistry>(
    registry: &R,
    known: &TenantId,
    unknown: &TenantId,
) {
    match registry.lookup(known).await {
        Ok(Some(record)) => assert_eq!(
            record.id(),
            known,
            "lookup(known) returned another tenant's record"
        ),
        other => panic!(
            "lookup(known) must be Ok(Some(record)), was {:?}",
            other.map(|r| r.map(|r| r.id().clone()))
        ),
    }
    match registry.lookup(unknown).await {
        Ok(None) => {}
        other => panic!(
            "lookup(unknown) must be Ok(None), was {:?}",
            other.map(|r| r.map(|r| r.id().clone()))
        ),
    }
    for id in [known, unknown] {
        if let Some(ready) = registry.lookup_ready(id.as_str()) {
            assert_eq!(
                ready.as_ref().map(|r| r.id()),
                (id == known).then_some(known),
                "lookup_ready({id}) disagrees with lookup"
            );
        }
    }
    let lookups = (0..64).map(|i| {
        let id = if i % 2 == 0 { known } else { unknown };
        async move { (id, registry.lookup(id).await) }
    });
    for (id, answer) in futures_util::future::join_all(lookups).await {
        match answer {
            Ok(Some(r)) if id == known => {
                assert_eq!(r.id(), known, "a concurrent lookup answered another tenant")
            }
            Ok(None) if id == unknown => {}
            other => panic!(
                "a concurrent lookup of {id} answered {:?}",
                other.map(|r| r.map(|r| r.id().clone()))
            ),
        }
    }
}

/// Checks that `registry`, while its backend is down, answers `Err` for `id`: never
/// `Ok(None)` (every tenant would look unknown) and never a record.
pub async fn registry_unavailable<R: TenantRegistry>(registry: &R, id: &TenantId) {
    let answer = registry.lookup(id).await;
    assert!(
        answer.is_err(),
        "an unavailable registry must answer Err, was {:?}",
        answer.map(|r| r.map(|r| r.id().clone()))
    );
}

#[cfg(feature = "jwt")]
mod revocation {
    use crate::session::{Revocation, RevocationStore, TokenFacts};

    fn now() -> u64 {
        crate::session::now()
    }

    fn facts<'a>(
        jti: &'a str,
        tenant: &'a str,
        subject: &'a str,
        issued_at: u64,
    ) -> TokenFacts<'a> {
        TokenFacts {
            jti: Some(jti),
            family: None,
            tenant: Some(tenant),
            subject,
            issued_at: Some(issued_at),
        }
    }

    async fn revoked<S: RevocationStore>(store: &S, f: &TokenFacts<'_>) -> bool {
        match store.is_revoked(f).await {
            Ok(revoked) => revoked,
            Err(e) => panic!("is_revoked failed: {e}"),
        }
    }

    /// Runs the revocation store conformance suite against `store`. Names are made
    /// unique with `prefix` (so a shared store, such as a Redis, can run it beside other
    /// tests); panics, naming the rule, on the first violation.
    ///
    /// - a revoked `jti` is revoked, another is not, and `is_revoked_now`, when it
    ///   answers, agrees;
    /// - a subject or tenant revocation applies to tokens issued at or before its
    ///   cut-off and not to later ones, and not to another subject or tenant;
    /// - (a store *may* forget an entry once its `until` has passed, which bounds its
    ///   memory; when is its own choice, so the suite does not wait for it;)
    /// - `consume` of a refresh `jti` is `true` exactly once, also under 32 concurrent
    ///   attempts.
    pub async fn revocation_conformance<S: RevocationStore>(store: &S, prefix: &str) {
        let t = now();
        let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
        let (acme, globex) = (format!("{prefix}acme"), format!("{prefix}globex"));
        store
            .revoke(Revocation::Token(&a), t + 600)
            .await
            .expect("revoke a token");
        assert!(
            revoked(store, &facts(&a, &acme, "u1", t)).await,
            "a revoked jti must be revoked"
        );
        assert!(
            !revoked(store, &facts(&b, &acme, "u1", t)).await,
            "another jti must not be"
        );
        if let Some(now) = store.is_revoked_now(&facts(&a, &acme, "u1", t)) {
            assert!(
                now.expect("is_revoked_now"),
                "is_revoked_now disagrees with is_revoked"
            );
        }

        let cut = t - 10;
        store
            .revoke(
                Revocation::Subject {
                    tenant: &acme,
                    subject: "u2",
                    before: cut,
                },
                t + 600,
            )
            .await
            .expect("revoke a subject");
        let (j1, j2, j3) = (
            format!("{prefix}j1"),
            format!("{prefix}j2"),
            format!("{prefix}j3"),
        );
        assert!(
            revoked(store, &facts(&j1, &acme, "u2", cut)).await,
            "issued at the cut-off: revoked"
        );
        assert!(
            !revoked(store, &facts(&j2, &acme, "u2", cut + 1)).await,
            "issued after the cut-off: not revoked"
        );
        assert!(
            !revoked(store, &facts(&j3, &globex, "u2", cut)).await,
            "another tenant's subject: not revoked"
        );
        store
            .revoke(
                Revocation::Tenant {
                    tenant: &globex,
                    before: cut,
                },
                t + 600,
            )
            .await
            .expect("revoke a tenant");
        assert!(
            revoked(store, &facts(&j3, &globex, "u9", cut - 5)).await,
            "a tenant revocation applies to all its subjects"
        );
        assert!(
            !revoked(store, &facts(&j3, &acme, "u9", cut - 5)).await,
            "and to no other tenant"
        );

        let refresh = format!("{prefix}refresh");
        let first = store.consume(&refresh, t + 600).await.expect("consume");
        assert!(first, "the first use of a refresh jti must succeed");
        assert!(
            !store.consume(&refresh, t + 600).await.expect("consume"),
            "a second use must fail"
        );
        let racing = format!("{prefix}race");
        let attempts = (0..32).map(|_| store.consume(&racing, t + 600));
        let wins = futures_util::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|r| *r.as_ref().expect("consume"))
            .count();
        assert_eq!(
            wins, 1,
            "32 concurrent uses of one refresh jti: exactly one wins"
        );
    }
}

#[cfg(feature = "jwt")]
pub use revocation::revocation_conformance;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::InMemoryRegistry;

    #[actix_web::test]
    async fn the_in_memory_registry_conforms() {
        let registry = InMemoryRegistry::new()
            .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
        registry_conformance(
            &registry,
            &TenantId::parse("acme").unwrap(),
            &TenantId::parse("nobody").unwrap(),
        )
        .await;
    }

    #[cfg(feature = "jwt")]
    #[actix_web::test]
    async fn the_in_memory_revocations_conform() {
        revocation_conformance(&crate::session::InMemoryRevocations::new(), "t-").await;
    }

    /// A registry that answers another tenant's record: the suite must catch it.
    struct Liar;

    #[async_trait::async_trait]
    impl TenantRegistry for Liar {
        async fn lookup(
            &self,
            _: &TenantId,
        ) -> Result<crate::registry::Lookup, crate::registry::RegistryError> {
            Ok(Some(Arc::new(TenantRecord::new(
                TenantId::parse("evil").unwrap(),
                "pro",
            ))))
        }
    }

    #[actix_web::test]
    #[should_panic(expected = "another tenant's record")]
    async fn a_registry_answering_another_tenant_fails_the_suite() {
        registry_conformance(
            &Liar,
            &TenantId::parse("acme").unwrap(),
            &TenantId::parse("nobody").unwrap(),
        )
        .await;
    }

    #[actix_web::test]
    #[should_panic(expected = "must answer Err")]
    async fn a_registry_that_hides_an_outage_fails_the_suite() {
        registry_unavailable(&InMemoryRegistry::new(), &TenantId::parse("acme").unwrap()).await;
    }
}
