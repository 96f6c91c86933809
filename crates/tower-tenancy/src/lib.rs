//! Multi-tenant isolation for Tower stacks (axum, tonic, hyper): the tenant settled
//! once, at the boundary, before the router; validated against a registry; refused
//! requests never reach the service, and are answered in the same
//! `application/problem+json` bodies as actix-tenancy's.
//!
//! This crate is the Tower adapter of [`tenancy_core`], as actix-tenancy is its actix
//! adapter: every decision (which source names the tenant, what is malformed, what
//! an unknown or suspended tenant is answered) is the core's, so the two adapters
//! answer each request the same. A conformance table in the workspace runs the same
//! requests through both and compares status, code and body.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tenancy_core::{registry::InMemoryRegistry, TenantId, TenantRecord};
//! use tower_tenancy::{Source, Tenant, TenancyLayer};
//!
//! async fn whoami(tenant: Tenant) -> String {
//!     format!("{} on {}", tenant.id(), tenant.tier())
//! }
//!
//! let registry = InMemoryRegistry::new()
//!     .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
//! let app: Router = Router::new()
//!     .route("/whoami", get(whoami))
//!     .layer(TenancyLayer::builder(registry).source(Source::header()).build().unwrap());
//! ```
//!
//! | type | what it is |
//! | --- | --- |
//! | [`TenancyLayer`] | the layer, built once with [`TenancyLayer::builder`] |
//! | [`Source`] | where the tenant id is read: claim, header, host, path, your function |
//! | [`Tenant`] | the resolved tenant; an axum extractor with the `axum` feature |
//! | `TenantAuth` (feature `jwt`) | bearer tokens of the core's `SessionManager`, verified and checked for revocation before resolution |
//! | [`TenantPolicy`] | may this tenant make this request: the core's evaluators (`RulePolicy`, your own), `403 policy_denied` |
//! | [`TenantQuota`] | per-tenant quotas on the core's engines (local, Redis): `429` with `Retry-After` and the `RateLimit` fields |
//! | `storage::TenantTx` (features `postgres`, `axum`) | a PostgreSQL transaction scoped to the resolved tenant, in the core's three isolation models |
//! | `tls` (feature `tls`) | client certificates: `attach_peer_certificate` and the core's `PeerCertificate` and `CertificateRule`, for `Source::certificate` |
//! | `testing` (feature `testing`) | `attach` a tenant to a request for handler tests; the core's fake clock and conformance suites |
//! | [`TenancyService`], [`ResponseFuture`], [`TenancyBody`] | the service, its named future and body |
//!
//! A gRPC request (tonic's) that the layer refuses is answered with a gRPC status
//! (`UNAUTHENTICATED`, `PERMISSION_DENIED`, `RESOURCE_EXHAUSTED` with a `RetryInfo`,
//! `UNAVAILABLE`, ...), not a problem body; a tonic handler reads the tenant with
//! [`Tenant::of`]`(request.extensions())`.
//!
//! Features: `axum` (the extractors for axum 0.8: `Tenant`, `Option<Tenant>`, and the
//! core's `Principal`; `IntoResponse` for a `TenancyError` a handler returns); `jwt`
//! (`TenantAuth`, on the core's sessions); `oidc` (tokens from identity providers);
//! `redis` (the Redis quota and revocation store); `postgres` (the core's PostgreSQL
//! registry and, with `axum`, the `TenantTx` extractor); `tls` (`Source::certificate`);
//! `testing` (the test kit).

#![deny(missing_docs)]

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "jwt")]
pub mod auth;
mod body;
mod grpc;
mod layer;
mod memo;
pub mod policy;
pub mod quota;
mod source;
#[cfg(all(feature = "postgres", feature = "axum"))]
pub mod storage;
mod tenant;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;

#[cfg(feature = "jwt")]
pub use auth::{TenantAuth, TenantAuthBuilder};
pub use body::TenancyBody;
pub use layer::{ResponseFuture, TenancyLayer, TenancyLayerBuilder, TenancyService};
pub use policy::{TenantPolicy, TenantPolicyBuilder};
pub use quota::{TenantQuota, TenantQuotaBuilder};
pub use source::Source;
pub use tenancy_core::{
    error::{ProblemJson, TenancyError},
    resolve::{SourceError, SourceResult, TENANT_HEADER},
    Principal, SourceKind, TenantContext,
};
pub use tenant::Tenant;
#[cfg(feature = "axum")]
pub use tenant::TenantRejection;
