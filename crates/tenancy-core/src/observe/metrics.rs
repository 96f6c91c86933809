//! The metrics every adapter records (feature `metrics`, through the
//! [`metrics`](https://docs.rs/metrics) facade): their names, their descriptions, and
//! the counting of decisions, so that a dashboard built on one adapter reads the other.
//! Without the feature the functions here do nothing and cost nothing.

use super::{report, AuditEvent, AuditSink, Stage};

/// The metric every decision counts in (feature `metrics`), labelled `stage`,
/// `outcome`, `code` and `tier` (and `tenant` with per-tenant metrics on).
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

/// The counter of switches into and out of the Redis quota's degraded mode (feature
/// `metrics`), labelled `to` (`degraded` or `normal`).
pub const DEGRADED_METRIC: &str = "tenancy_quota_degraded_total";

/// Whether decisions are counted ([`count`] records them): the core was built with
/// its `metrics` feature. An adapter that skips building a pass's event when nobody
/// would read it checks this first.
pub const COUNTING: bool = cfg!(feature = "metrics");

/// The `tenant` label of decisions about an id with no known record.
#[cfg(feature = "metrics")]
const UNKNOWN_TENANT_LABEL: &str = "unknown";

/// Describes the metrics to the installed recorder (`# HELP` lines, units), so
/// exporters such as Prometheus show what each one is. The adapters call it once, when
/// they record their first metric; call it yourself right after installing a recorder
/// to have the descriptions before any request.
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

/// [`describe_metrics`], once per process.
#[cfg(feature = "metrics")]
pub fn describe_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(describe_metrics);
}

/// Times a stage's decision for [`DURATION_METRIC`]; without the `metrics` feature it
/// is empty and costs nothing.
#[derive(Debug)]
pub struct StageTimer {
    #[cfg(feature = "metrics")]
    start: std::time::Instant,
}

impl StageTimer {
    /// Starts timing.
    #[inline]
    pub fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            start: std::time::Instant::now(),
        }
    }

    /// Records the time since [`start`](Self::start) for `stage`.
    #[inline]
    pub fn stop(self, stage: Stage) {
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

/// Reports a decision: to the audit sink ([`report`]), and, with the `metrics`
/// feature, to [`DECISIONS_METRIC`] (with a `tenant` label only when `per_tenant` is
/// set). What every adapter's stages call for each decision.
#[inline]
pub fn emit(audit: &dyn AuditSink, per_tenant: bool, event: &AuditEvent<'_>) {
    report(audit, event);
    count(per_tenant, event);
}

/// Counts a decision in [`DECISIONS_METRIC`] only, not audited (feature `metrics`;
/// nothing without it): the authentication stage's passes, which would otherwise
/// double every request's audit lines.
///
/// With `per_tenant`, only a tenant whose record was found (its tier is known) becomes
/// a `tenant` label: ids a client made up, and tenants named before the registry was
/// asked, count as `unknown`, and a request without an id as `none`, so clients
/// cannot create series.
#[inline]
pub fn count(per_tenant: bool, event: &AuditEvent<'_>) {
    #[cfg(feature = "metrics")]
    {
        describe_once();
        let e = event;
        let outcome = e.outcome.kind();
        let code = e.outcome.code().map_or("none", |c| c.as_str());
        let tier = e.tier.unwrap_or("none").to_owned();
        let stage = e.stage.as_str();
        if per_tenant {
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
    #[cfg(not(feature = "metrics"))]
    let _ = (per_tenant, event);
}
