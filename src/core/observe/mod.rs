//! Observability: the [`AuditSink`] every decision is reported to, and the tracing
//! fields the crate sets.
//!
//! Each request that a stage decides on produces one [`AuditEvent`]. The default sink,
//! [`TracingAudit`], writes it as a `tracing` event with target `tenancy::audit`:
//! `DEBUG` for passes, `INFO` for rejections, `WARN` for backend failures and `ERROR`
//! for misconfiguration. The inner service runs inside a `tenant` span with the fields
//! `tenant.id` and `tenant.tier`, so handler logs carry the tenant.
//!
//! With the `metrics` feature, every decision also increments the counter
//! `tenancy_decisions_total` through the [`metrics`](https://docs.rs/metrics) facade,
//! labelled `stage`, `outcome` (`allowed`, `skipped`, `rejected`, and `would_deny` /
//! `would_allow` for shadow decisions), `code` (the
//! rejection's code, or `none`) and `tier` (or `none` when no record was found).
//! Tenant ids are not labels by default: with many tenants they would make one time
//! series each. Opt in with [`TenancyBuilder::per_tenant_metrics`], which adds
//! a `tenant` label: the id of a tenant whose record was found, `unknown` for an id
//! with no record (made up by a client, or named by a token before the registry was
//! asked), `none` without an id, so clients cannot create series. Install any `metrics` recorder (e.g. a Prometheus exporter) to
//! collect them.
//!
//! [`TenancyBuilder::per_tenant_metrics`]: crate::TenancyBuilder::per_tenant_metrics

#[cfg(all(feature = "metrics", feature = "jwt"))]
pub(crate) use tenancy_core::observe::count;
#[cfg(feature = "metrics")]
pub use tenancy_core::observe::describe_metrics;
#[cfg(feature = "metrics")]
pub(crate) use tenancy_core::observe::describe_once;
pub(crate) use tenancy_core::observe::{emit, escaped, wanted, StageTimer as Timer, COUNTING};
pub use tenancy_core::observe::{
    AuditEvent, AuditSink, NoAudit, Outcome, Stage, TracingAudit, DECISIONS_METRIC,
    DEGRADED_METRIC, DURATION_METRIC, TENANT_DURATION_METRIC, TENANT_REQUESTS_METRIC,
};
