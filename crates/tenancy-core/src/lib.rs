//! The framework-neutral core of [actix-tenancy](https://docs.rs/actix-tenancy): the
//! values every adapter and backend shares, whatever web framework serves the request.
//!
//! - [`TenantId`] and its [`TenantIdRule`]: one tenant, one spelling.
//! - [`TenantRecord`], its [`TenantStatus`] and the [`StatusRules`] that say what each
//!   status may do.
//! - [`SourceKind`]: which kind of source named a tenant.
//! - [`Principal`]: a verified identity, and [`TenantContext`]: what the resolver
//!   settled for one request.
//! - [`registry`]: the [`TenantRegistry`](registry::TenantRegistry) trait, the registry
//!   in memory, the cache in front of any registry and, with feature `postgres`, the
//!   registry in PostgreSQL kept fresh on every replica by `NOTIFY`.
//! - [`Answer`]: the one return type of every backend operation, ready now or later,
//!   and the request's [`Moment`].
//! - [`policy`]: the [`PolicyEvaluator`](policy::PolicyEvaluator) trait, the rules
//!   engine ([`RulePolicy`](policy::RulePolicy): routes, capabilities and features per
//!   tier and tenant, versions and shadow mode) and a cache in front of a slow
//!   evaluator.
//! - [`quota`]: per-tenant plans (a rate with a burst, budgets per calendar period),
//!   the [`QuotaManager`](quota::QuotaManager) trait, the local engine on `governor`'s
//!   algorithm in a sharded map and, with feature `redis`, the Redis engine with its
//!   degraded mode; and the [`Charge`] a check made, to be settled.
//! - `session` (feature `jwt`; `oidc` for identity providers): JWT sessions (the
//!   `SessionManager`, its keys and revocation stores) and the steps of an
//!   authentication stage every adapter runs.
//! - `storage` (feature `postgres`): tenant data, PostgreSQL transactions scoped to one
//!   tenant in three isolation models (row-level security, a schema, a database per
//!   tenant), their migrations, and the pools of tenant databases.
//! - `testing` (feature `testing`): a test kit, conformance suites for your own
//!   registries, quota managers and revocation stores.
//! - [`Clock`] and [`FakeClock`]: the time the stages read.
//! - [`error`]: every rejection as data ([`TenancyError`](error::TenancyError), its
//!   code, status and `application/problem+json` body), and [`ConfigError`], a
//!   configuration mistake in a few shapes each stage fills in with its own setting.
//! - [`caught`] and [`caught_async`]: an application's callbacks, run so that a panic is
//!   an answer.
//!
//! It names no web framework, but for `src/compat/`: the few impls of a framework's
//! traits for the core's own types, which Rust lets only this crate write, each behind a
//! feature that only that framework's adapter turns on (`actix-web-4`).
//! `tests/layers.rs` in the workspace holds it to that.
//! `actix-tenancy` re-exports everything here where its users have always found it.

#![deny(missing_docs)]

mod answer;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod backend;
mod caught;
mod charge;
mod clock;
mod compat;
mod context;
pub mod error;
mod id;
pub mod observe;
pub mod policy;
mod principal;
pub mod quota;
mod record;
pub mod registry;
pub mod resolve;
#[cfg(feature = "jwt")]
pub mod session;
mod source;
#[cfg(feature = "postgres")]
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

pub use answer::{Answer, AnswerFuture, Lease, Moment};
#[cfg(feature = "redis")]
pub use backend::RedisConnection;
pub use caught::{caught, caught_async};
pub use charge::Charge;
pub use clock::{Clock, FakeClock};
pub use context::TenantContext;
pub use error::ConfigError;
pub use id::{InvalidTenantId, TenantId, TenantIdRule, MAX_TENANT_ID_LEN};
pub use principal::{Principal, RevokeSessions};
pub use record::{Access, StatusRules, TenantRecord, TenantStatus};
pub use resolve::Exempt;
pub use source::SourceKind;
