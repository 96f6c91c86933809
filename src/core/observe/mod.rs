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

pub(crate) use tenancy_core::observe::{escaped, wanted};
pub use tenancy_core::observe::{AuditEvent, AuditSink, NoAudit, Outcome, Stage, TracingAudit};

/// The metric every decision counts in (feature `metrics`).
pub const DECISIONS_METRIC: &str = "tenancy_decisions_total";

/// The histogram of how long the policy and quota stages take to decide, in seconds,
/// labelled `stage` (feature `metrics`). A decision that waited (an async evaluator,
/// a Redis round trip) is measured from the start of its wait to its answer.
pub const DURATION_METRIC: &str = "tenancy_stage_duration_seconds";

/// The counter of the requests of the tenants named with `metrics_for_tenants`,
/// labelled `tenant` (the id, `other` or `none`) and `status` (`2xx` to `5xx`; feature
/// `metrics`).
pub const TENANT_REQUESTS_METRIC: &str = "tenancy_tenant_requests_total";

/// The histogram of how long the requests of the tenants named with
/// `metrics_for_tenants` take, in seconds, until the response's head is ready; labelled
/// `tenant` (feature `metrics`).
pub const TENANT_DURATION_METRIC: &str = "tenancy_tenant_request_duration_seconds";

pub use tenancy_core::observe::DEGRADED_METRIC;

/// Describes the crate's metrics to the installed recorder (`# HELP` lines, units), so
/// exporters such as Prometheus show what each one is. The crate calls it once, when it
/// records its first metric; call it yourself right after installing a recorder to
/// have the descriptions before any request.
#[cfg(feature = "metrics")]
pub fn describe_metrics() {
    metrics::describe_counter!(
        DECISIONS_METRIC,
        "Tenancy decisions, by stage, outcome, error code and tier (and tenant, for the tenants named)"
    );
    metrics::describe_histogram!(
        DURATION_METRIC,
        metrics::Unit::Seconds,
        "How long the policy and quota stages took to decide"
    );
    metrics::describe_counter!(
        TENANT_REQUESTS_METRIC,
        "Requests of the tenants named for metrics, by tenant (or other, none) and status class"
    );
    metrics::describe_histogram!(
        TENANT_DURATION_METRIC,
        metrics::Unit::Seconds,
        "How long the requests of the tenants named for metrics took, until the response head"
    );
    metrics::describe_counter!(
        DEGRADED_METRIC,
        "Switches of the Redis quota into and out of its degraded mode"
    );
}

#[cfg(feature = "metrics")]
pub(crate) fn describe_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(describe_metrics);
}

/// Times a stage for [`DURATION_METRIC`]; without the `metrics` feature it is empty
/// and costs nothing.
pub(crate) struct Timer {
    #[cfg(feature = "metrics")]
    start: std::time::Instant,
}

impl Timer {
    #[inline]
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            start: std::time::Instant::now(),
        }
    }

    #[inline]
    pub(crate) fn stop(self, stage: Stage) {
        #[cfg(feature = "metrics")]
        {
            describe_once();
            metrics::histogram!(DURATION_METRIC, "stage" => stage.as_str())
                .record(self.start.elapsed().as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = stage;
    }
}

/// Reports a decision: to the audit sink, and, with the `metrics` feature, to the
/// decision counter (with a `tenant` label only when `per_tenant` is set).
pub(crate) fn emit(audit: &dyn AuditSink, per_tenant: bool, event: &AuditEvent<'_>) {
    tenancy_core::observe::report(audit, event);
    #[cfg(feature = "metrics")]
    count(per_tenant, event);
    #[cfg(not(feature = "metrics"))]
    let _ = per_tenant;
}

/// Counts a decision in the metrics (what [`emit`] does besides auditing); alone for
/// authentication passes, which would otherwise double every request's audit lines.
/// The `tenant` label of decisions about an id with no known record.
#[cfg(feature = "metrics")]
pub(crate) const UNKNOWN_TENANT_LABEL: &str = "unknown";

#[cfg(feature = "metrics")]
pub(crate) fn count(per_tenant: bool, e: &AuditEvent<'_>) {
    describe_once();
    let outcome = e.outcome.kind();
    let code = e.outcome.code().map_or("none", |c| c.as_str());
    let tier = e.tier.unwrap_or("none").to_owned();
    let stage = e.stage.as_str();
    if per_tenant {
        // Only a tenant whose record was found (its tier is known) becomes a label:
        // ids a client made up, and tenants named before the registry was asked (the
        // authentication stage), count under one fixed label, so clients cannot
        // create series.
        let tenant = match (e.tenant, e.tier) {
            (Some(t), Some(_)) => t.as_str(),
            (Some(_), None) => UNKNOWN_TENANT_LABEL,
            (None, _) => "none",
        }
        .to_owned();
        metrics::counter!(DECISIONS_METRIC, "stage" => stage, "outcome" => outcome,
            "code" => code, "tier" => tier, "tenant" => tenant)
        .increment(1);
    } else {
        metrics::counter!(DECISIONS_METRIC, "stage" => stage, "outcome" => outcome,
            "code" => code, "tier" => tier)
        .increment(1);
    }
}
