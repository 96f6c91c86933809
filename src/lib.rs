//! Multi-tenant isolation for [actix-web](https://actix.rs), safe by default.
//!
//! A request to a multi-tenant service must have its tenant settled **at the boundary,
//! before routing**, exactly once; every later step reads that one value. This crate
//! does that:
//!
//! - [`TenantResolver`] (an actix `Transform`) reads the tenant from the
//!   [sources](resolve::Source) you configure (a verified token claim, a custom
//!   function, the `X-Tenant-ID` header, the subdomain, a path prefix), rejects
//!   conflicts and malformed ids, and fails closed when there is none.
//! - It validates the tenant against a [`TenantRegistry`](registry::TenantRegistry)
//!   (in memory, in PostgreSQL with the `postgres` feature, or your own; behind a
//!   [cache](registry::CachedRegistry) unless it answers from memory), which
//!   distinguishes *not found* from *unavailable* so an outage is a `503`, never a pass.
//! - [Sessions](session) (feature `jwt`) issue, verify, refresh and revoke JWT-backed
//!   tenant sessions; their `TenantAuth` stage runs ahead of resolution.
//! - [Policy](policy) decides whether the tenant may make the request: your async
//!   evaluator, or the built-in [`RulePolicy`](policy::RulePolicy).
//! - [Quotas](quota) charge each tenant's rate and budgets, locally or in Redis.
//! - Handlers take a [`Tenant`] argument, and [guards](guard) route by tenant; the
//!   [error model](error) answers every rejection with a stable code in an RFC 9457
//!   `application/problem+json` body that reveals nothing internal.
//! - [`Tenancy::builder()`] composes the stages as one `.wrap()`, in the one correct
//!   order: authentication, resolution, policy, quota.
//!
//! ```
//! use actix_tenancy::prelude::*;
//! use actix_web::{test, web, App, HttpResponse};
//!
//! # actix_web::rt::System::new().block_on(async {
//! let registry = InMemoryRegistry::new()
//!     .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
//!     .with(TenantRecord::new(TenantId::parse("initech").unwrap(), "pro")
//!         .with_status(TenantStatus::Suspended));
//!
//! // Once per process, outside `HttpServer::new`'s closure:
//! let tenancy = Tenancy::builder()
//!     .resolver(
//!         TenantResolver::builder(registry)
//!             .source(Source::header())
//!             .source(Source::subdomain(["example.com"]))
//!             .exempt("/health")
//!             .build()
//!             .expect("valid tenancy configuration"),
//!     )
//!     .build()
//!     .expect("valid tenancy configuration");
//!
//! let app = test::init_service(
//!     App::new()
//!         .wrap(tenancy.clone())
//!         .route("/health", web::get().to(HttpResponse::Ok))
//!         .route("/whoami", web::get().to(|t: Tenant| async move {
//!             HttpResponse::Ok().json(serde_json::json!({ "tenant": t.id(), "tier": t.tier() }))
//!         })),
//! )
//! .await;
//!
//! let ok = test::TestRequest::get().uri("/whoami").insert_header(("x-tenant-id", "acme")).to_request();
//! assert_eq!(test::call_service(&app, ok).await.status(), 200);
//!
//! // Unknown and suspended tenants get the same 403.
//! for who in ["initech", "nobody"] {
//!     let req = test::TestRequest::get().uri("/whoami").insert_header(("x-tenant-id", who)).to_request();
//!     assert_eq!(test::call_service(&app, req).await.status(), 403);
//! }
//!
//! // No tenant at all: 401. Malformed: 400.
//! let req = test::TestRequest::get().uri("/whoami").to_request();
//! assert_eq!(test::call_service(&app, req).await.status(), 401);
//! let req = test::TestRequest::get().uri("/whoami").insert_header(("x-tenant-id", "../x")).to_request();
//! assert_eq!(test::call_service(&app, req).await.status(), 400);
//! # });
//! ```
//!
//! # Guides
//!
//! The documentation by topic, in the [`guide`] module:
//!
//! | guide | covers |
//! | --- | --- |
//! | [resolution](guide::resolution) | the sources and their order, tenant ids and hosts, a `Tenancy` per scope, client certificates, W3C Baggage, the error codes and bodies |
//! | [registries](guide::registries) | the in-memory registry and its files, your own store behind the cache, PostgreSQL kept fresh on every replica |
//! | [sessions and identity providers](guide::sessions) | JWT sessions: keys, refresh, revocation; tokens from OpenID providers, a provider per tenant |
//! | [policy](guide::policy) | `RulePolicy`: routes, capabilities and feature flags per tier and tenant, versions and shadow mode; your own evaluator; guards |
//! | [quotas and Redis](guide::quotas) | plans, costs and `429`s; `RedisQuota`, its failure modes and their bounds, Redis Cluster and TLS |
//! | [tenant data](guide::tenant_data) | `TenantTx` in the pooled, schema and database models; migrations across tenants |
//! | [observability](guide::observability) | audit events, the tenant span, the access line, metrics |
//! | [testing your service](guide::testing) | handlers without the middleware, conformance suites, a fake clock |
//! | [operating it](guide::operating) | bounded waits, replicas, suspending a tenant, rotating keys, log volume, the build |
//!
//! # Crate features
//!
//! | feature | adds |
//! | --- | --- |
//! | *(none, default)* | resolution, registry (in memory, cached), extractor, errors, audit |
//! | `toml` | [`InMemoryRegistry::from_toml_str`](registry::InMemoryRegistry), `from_toml_file`, and TOML policies ([`PolicySet::from_toml`](policy::PolicySet)) |
//! | `metrics` | decision counters, stage and per-tenant request histograms through the `metrics` facade (see [`observe`]) |
//! | `redis` | `RedisQuota`: one quota shared by every replica (see [`quota`]); with `jwt`, `RedisRevocations` |
//! | `redis-tls` | `rediss://` (TLS) for the Redis backends |
//! | `redis-cluster` | Redis Cluster for the Redis backends ([`RedisConnection::cluster`]) |
//! | `jwt` | JWT sessions: `KeySet`, `SessionManager`, `TenantAuth` (see [`session`]) |
//! | `oidc` | tokens from identity providers: OpenID discovery, remote JWKS kept fresh, a provider per tenant (`session::oidc`) |
//! | `postgres` | `PostgresRegistry`: tenants in PostgreSQL, kept fresh on every replica by `NOTIFY`; `storage`: the `TenantTx` extractor in the pooled, schema and database models |
//! | `tls` | `Source::certificate`: the tenant from a verified TLS client certificate (see `tls`) |
//! | `testing` | a test kit: `testing::attach`, a `FakeClock`, conformance suites for your registries, quota managers and revocation stores |
//!
//! # Invariants
//!
//! 1. The tenant is resolved once, before routing, and stored as one
//!    `Arc<TenantContext>`; nothing downstream re-reads a header.
//! 2. Fail closed: missing, malformed, unknown, suspended, conflicting tenants and
//!    registry failures are rejected. Opting out is explicit (`allow_missing`).
//! 3. A verified identity wins and must agree: any other source naming a different
//!    tenant is a `403 tenant_conflict`, never a silent override.
//! 4. One tenant, one spelling: ids are validated, not normalised.
//! 5. Errors reveal nothing: unknown and suspended tenants look the same from outside.
//! 6. Every decision is reported to the [`AuditSink`](observe::AuditSink).
//!
//! # Layout
//!
//! Layers only look down; `tests/layers.rs` reads the sources and fails on an import
//! from a layer above, and on a stage named (by module or by type) in the core, the
//! pipeline or the backends.
//!
//! The crate is the actix adapter of a workspace: `crates/tenancy-core` holds what needs
//! no web framework, and `tests/layers.rs` fails if it names one (in its code or its
//! dependencies) outside its `compat/` impls of actix's traits: tenant ids and records,
//! [`Answer`] and [`Moment`], the [`Clock`], the [`Principal`] and the
//! [`TenantContext`], the rejections as data ([`error`]), the [`registry`] backends, the
//! decisions of resolution, the [`policy`], [`quota`] and [`session`] engines, tenant
//! data (`storage`), the audit events and metrics' series ([`observe`]) and the test
//! kit; this crate re-exports each where it has always been, and keeps what is actix's:
//! the middleware and its stages, the extractors and guards, the responder, the
//! certificates of actix-tls.
//!
//! | module | holds | imports |
//! | --- | --- | --- |
//! | `crates/tenancy-core` | the framework-neutral values above; in `src/compat/`, behind its feature `actix-web-4`, actix-web's traits for its own types (`ResponseError`, `HttpResponse::from(Problem)`, the `Principal` extractor and `Principal::attach`/`of`), which only it may write | no web framework outside `compat/` |
//! | `core/` | what the neutral values are re-exported from, the actix side of rejections ([`ErrorResponder`](error::ErrorResponder); [`TenancyError`](error::TenancyError), its codes, the rejection as data ([`Problem`](error::Problem)) and [`ConfigError`](error::ConfigError) are re-exported from `tenancy-core`), the [audit](observe) sink and events (a stage is a name it gives itself), what resolution leaves in the request extensions, and the capability trait handlers ask through | `tenancy-core`, nothing else of the crate |
//! | `pipeline/` | the one middleware service and its named future; the stage protocol (`prepare` → pass, refuse, or wait once: the wait's output has no "wait" arm); the response-side step, settled when the response's body ends ([`SettlingBody`](dev::SettlingBody)); the settings every stage shares (responder, audit sink, per-tenant metrics); the per-worker route cache | `core` |
//! | `extract.rs`, [`guard`] | the [`Tenant`] extractor, route guards: they read what the core holds | `core` |
//! | [`registry`] | the resolver's backends: in memory, cached and PostgreSQL (all re-exported from `tenancy-core`) | `core` |
//! | [`resolve`], [`policy`], [`quota`], [`session`] | one stage each, the same files for the same things: `mod.rs` (docs, re-exports, the stage's own types and traits), `stage.rs` or `stage/` (the public stage, its builder, the protocol's implementation; the resolver's as `identify`, `admit` and `contexts`), and each engine a folder of one concept a file with its unit tests beside it (`policy/rules/`, `session/manager/`, `session/oidc/remote/`; the quota engines, `quota/local/` and `quota/redis/` with its Lua scripts, are tenancy-core's) | `core`, `pipeline` (and the resolver and sessions the `registry`); never another stage |
//! | [`storage`] (feature `postgres`) | tenant data: the `TenantTx` extractor (the models, migrations and row-level security are tenancy-core's, re-exported) | `core` |
//! | [`guide`] | the guides, from `docs/guide/*.md` | none |
//! | `tenancy.rs` | [`Tenancy`], the composition root: the one module that names every stage | all of the above |

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
// The docs link to every feature's items. A build with only some features leaves those
// links unresolved; the build with all of them (docs.rs, and CI's `cargo doc
// -D warnings`) still resolves every one.
#![cfg_attr(
    not(all(
        feature = "jwt",
        feature = "oidc",
        feature = "redis",
        feature = "redis-cluster",
        feature = "postgres",
        feature = "tls",
        feature = "testing",
        feature = "metrics",
        feature = "toml"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]

pub mod baggage;
mod core;
mod extract;
pub mod guard;
mod pipeline;
pub mod policy;
pub mod quota;
pub mod registry;
pub mod resolve;
pub mod session;
#[cfg(feature = "postgres")]
pub mod storage;
mod tenancy;
#[cfg(feature = "testing")]
pub mod testing;

pub use crate::core::{error, observe};
pub use crate::core::{
    Answer, Clock, InvalidTenantId, Moment, Principal, TenantContext, TenantId, TenantIdRule,
    MAX_TENANT_ID_LEN,
};
pub use extract::Tenant;
#[cfg(feature = "tls")]
pub use resolve::tls;
pub use resolve::{Source, TenantResolver};
pub use tenancy::{Tenancy, TenancyBuilder};
#[cfg(feature = "redis")]
pub use tenancy_core::RedisConnection;

/// The guides: the crate's documentation by topic, one page each.
///
/// Each page is a Markdown file of the crate (`docs/guide/`), shown here and compiled
/// with its examples as doctests.
pub mod guide {
    #[doc = include_str!("../docs/guide/resolution.md")]
    pub mod resolution {}
    #[doc = include_str!("../docs/guide/registries.md")]
    pub mod registries {}
    #[doc = include_str!("../docs/guide/sessions.md")]
    pub mod sessions {}
    #[doc = include_str!("../docs/guide/policy.md")]
    pub mod policy {}
    #[doc = include_str!("../docs/guide/quotas.md")]
    pub mod quotas {}
    #[doc = include_str!("../docs/guide/tenant_data.md")]
    pub mod tenant_data {}
    #[doc = include_str!("../docs/guide/observability.md")]
    pub mod observability {}
    #[doc = include_str!("../docs/guide/testing.md")]
    pub mod testing {}
    #[doc = include_str!("../docs/guide/operating.md")]
    pub mod operating {}
}

/// Types that appear in middleware signatures; rarely named directly.
pub mod dev {
    pub use crate::core::AnswerFuture;
    pub use crate::pipeline::{PipelineFuture, PipelineService, SettlingBody};
}

/// The names most applications need, each re-exported from its one path.
pub mod prelude {
    #[doc(no_inline)]
    pub use crate::{
        error::{ErrorCode, TenancyError},
        registry::{CacheConfig, CachedRegistry, InMemoryRegistry, TenantRecord, TenantStatus},
        resolve::{Source, TenantResolver},
        Principal, Tenancy, Tenant, TenantContext, TenantId,
    };
}

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
