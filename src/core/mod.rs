//! The leaf of the crate: the values every stage shares, and nothing that runs a stage.
//!
//! Tenant ids and their rule, the [`SourceKind`] that named a tenant, the tenant's
//! record and the per-request [`TenantContext`], the verified [`Principal`], the error
//! type with its codes and responder, the audit sink with its events, and what
//! resolution leaves in the request extensions. It imports no other module of the
//! crate: the pipeline and every stage build on it, never the other way round.

pub mod error;
pub mod observe;
pub(crate) mod resolution;

// The values of the framework-neutral core (`tenancy-core`), where the crate has
// always had them.
pub use tenancy_core::{
    Answer, AnswerFuture, Clock, InvalidTenantId, Moment, Principal, RevokeSessions, SourceKind,
    TenantContext, TenantId, TenantIdRule, MAX_TENANT_ID_LEN,
};
pub(crate) use tenancy_core::{Charge, StatusRules, TenantRecord};

pub(crate) use resolution::{Capabilities, Resolution};
