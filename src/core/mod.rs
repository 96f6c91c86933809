//! The leaf of the crate: the values every stage shares, and nothing that runs a stage.
//!
//! Tenant ids and their rule, the [`SourceKind`] that named a tenant, the tenant's
//! record and the per-request [`TenantContext`], the verified [`Principal`], the error
//! type with its codes and responder, the audit sink with its events, and what
//! resolution leaves in the request extensions. It imports no other module of the
//! crate: the pipeline and every stage build on it, never the other way round.

mod answer;
pub(crate) mod caught;
mod charge;
pub(crate) mod clock;
pub mod error;
pub mod observe;
mod principal;
pub(crate) mod record;
pub(crate) mod resolution;
mod source;
pub(crate) mod tenant;

pub use answer::{Answer, AnswerFuture, Lease, Moment};
pub use charge::Charge;
pub use clock::Clock;
pub use principal::{Principal, RevokeSessions};
pub use record::{Access, StatusRules, TenantRecord, TenantStatus};
pub(crate) use resolution::{Capabilities, Resolution};
pub use source::SourceKind;
pub use tenant::{InvalidTenantId, TenantContext, TenantId, TenantIdRule, MAX_TENANT_ID_LEN};
