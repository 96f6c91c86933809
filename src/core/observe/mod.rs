//! Observability: the [`AuditSink`] every decision is reported to, and the tracing
//! fields the crate sets.
//!
//! Each request that a stage decides on produces one [`AuditEvent`]. The default sink,
//! [`TracingAudit`], writes it as a `tracing` event with target `actix_tenancy::audit`:
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

mod tracing_audit;

use std::fmt;

use actix_web::http::Method;

pub use tracing_audit::TracingAudit;
pub(crate) use tracing_audit::{escaped, wanted};

use super::{error::ErrorCode, SourceKind, TenantId};

/// The stage that made a decision, by its name: the crate's stages are
/// `authentication` (a bearer token), `resolution` (tenant resolution and registry
/// validation), `policy` and `quota`.
///
/// The name is the `stage` label of the metrics and the audit lines. Each stage names
/// itself; nothing here lists them.
///
/// ```
/// use actix_tenancy::observe::{AuditEvent, Stage};
///
/// fn is_policy(e: &AuditEvent<'_>) -> bool {
///     e.stage == Stage::named("policy")
/// }
/// assert_eq!(Stage::named("quota").as_str(), "quota");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stage(&'static str);

impl Stage {
    /// The stage named `name` (a short lowercase word).
    pub const fn named(name: &'static str) -> Self {
        Self(name)
    }

    /// The stage's name.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// What the stage decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The request goes on.
    Allowed,
    /// The request goes on without a tenant (an exempt path, or none found and missing
    /// is allowed).
    Skipped,
    /// The request was answered with this rejection.
    Rejected(ErrorCode),
    /// Shadow mode: the request goes on, but this rejection would have answered it.
    WouldDeny(ErrorCode),
    /// Shadow mode: a shadow policy version would have let the request on.
    WouldAllow,
}

impl Outcome {
    /// `allowed`, `skipped`, `would_deny` (a shadow-mode refusal), or the rejection's
    /// code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Skipped => "skipped",
            Self::Rejected(code) => code.as_str(),
            Self::WouldDeny(_) => "would_deny",
            Self::WouldAllow => "would_allow",
        }
    }
}

/// One decision, as reported to the [`AuditSink`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditEvent<'a> {
    /// The stage.
    pub stage: Stage,
    /// The decision.
    pub outcome: Outcome,
    /// The tenant, when one was named and valid.
    pub tenant: Option<&'a TenantId>,
    /// The tenant's tier, when its record was found.
    pub tier: Option<&'a str>,
    /// The source that named the tenant.
    pub source: Option<SourceKind>,
    /// The request method.
    pub method: &'a Method,
    /// The request path (as routed).
    pub path: &'a str,
    /// Why, in words, for operators. May name internal details; never sent to clients.
    pub reason: &'a str,
    /// The policy rule that decided (policy stage).
    pub rule: Option<&'a str>,
    /// The policy version that decided (policy stage).
    pub policy_version: Option<u64>,
}

/// Receives every decision. Keep it fast: it runs on the request path (send to a
/// channel for anything slow).
///
/// A closure `Fn(&AuditEvent<'_>)` is a sink:
///
/// ```
/// use actix_tenancy::observe::{AuditEvent, AuditSink};
///
/// let sink = |e: &AuditEvent<'_>| eprintln!("{} {}", e.stage.as_str(), e.outcome.as_str());
/// fn takes(_: impl AuditSink) {}
/// takes(sink);
/// ```
pub trait AuditSink: Send + Sync + 'static {
    /// Records one decision.
    fn record(&self, event: &AuditEvent<'_>);
}

impl<F> AuditSink for F
where
    F: Fn(&AuditEvent<'_>) + Send + Sync + 'static,
{
    fn record(&self, event: &AuditEvent<'_>) {
        self(event)
    }
}

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

/// The counter of switches into and out of the Redis quota's degraded mode (feature
/// `metrics`).
pub const DEGRADED_METRIC: &str = "tenancy_quota_degraded_total";

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
    // The sink is the application's code: a panic in it loses that one event (logged),
    // never the decision or the connection.
    let _ = tenancy_core::caught("AuditSink::record", || audit.record(event));
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
    let (outcome, code) = match e.outcome {
        Outcome::Allowed => ("allowed", "none"),
        Outcome::Skipped => ("skipped", "none"),
        Outcome::Rejected(code) => ("rejected", code.as_str()),
        Outcome::WouldDeny(code) => ("would_deny", code.as_str()),
        Outcome::WouldAllow => ("would_allow", "none"),
    };
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

/// A sink that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _: &AuditEvent<'_>) {}
}
