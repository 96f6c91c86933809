//! Audit: the [`AuditSink`] every decision is reported to, the [`AuditEvent`] it
//! receives, and [`TracingAudit`], the default sink, shared by every adapter.
//!
//! Each request that a stage decides on produces one [`AuditEvent`]. [`TracingAudit`]
//! writes it as a `tracing` event with target `tenancy::audit`: `DEBUG` for passes,
//! `INFO` for rejections, `WARN` for backend failures and `ERROR` for
//! misconfiguration; what strangers can make it write is bounded, and client values
//! are escaped.
//!
//! With the `metrics` feature, every decision also increments the counter
//! [`DECISIONS_METRIC`] (`tenancy_decisions_total`) through the
//! [`metrics`](https://docs.rs/metrics) facade, labelled `stage`, `outcome`
//! (`allowed`, `skipped`, `rejected`, and `would_deny` / `would_allow` for shadow
//! decisions), `code` (the rejection's code, or `none`) and `tier` (or `none` when no
//! record was found); the policy and quota stages are timed in [`DURATION_METRIC`].
//! Both adapters record the same series ([`emit`], [`StageTimer`]).

mod metrics;
mod tracing_audit;

use std::fmt;

pub use metrics::{
    count, emit, StageTimer, COUNTING, DECISIONS_METRIC, DEGRADED_METRIC, DURATION_METRIC,
    TENANT_DURATION_METRIC, TENANT_REQUESTS_METRIC,
};
#[cfg(feature = "metrics")]
pub use metrics::{describe_metrics, describe_once};
pub use tracing_audit::{escaped, wanted, TracingAudit};

use crate::{error::ErrorCode, SourceKind, TenantId};

/// The stage that made a decision, by its name: the crate's stages are
/// `authentication` (a bearer token), `resolution` (tenant resolution and registry
/// validation), `policy` and `quota`.
///
/// The name is the `stage` label of the metrics and the audit lines. Each stage names
/// itself; nothing here lists them.
///
/// ```
/// use tenancy_core::observe::{AuditEvent, Stage};
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
    /// The kind of decision, without its code: `allowed`, `skipped`, `rejected`,
    /// `would_deny` or `would_allow` (the `outcome` label of the metrics).
    pub const fn kind(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Skipped => "skipped",
            Self::Rejected(_) => "rejected",
            Self::WouldDeny(_) => "would_deny",
            Self::WouldAllow => "would_allow",
        }
    }

    /// The rejection's code (or the one that would have rejected), if any.
    pub const fn code(self) -> Option<ErrorCode> {
        match self {
            Self::Rejected(code) | Self::WouldDeny(code) => Some(code),
            _ => None,
        }
    }

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
    /// The request method (`GET`).
    pub method: &'a str,
    /// The request path (as routed).
    pub path: &'a str,
    /// Why, in words, for operators. May name internal details; never sent to clients.
    pub reason: &'a str,
    /// The policy rule that decided (policy stage).
    pub rule: Option<&'a str>,
    /// The policy version that decided (policy stage).
    pub policy_version: Option<u64>,
}

impl<'a> AuditEvent<'a> {
    /// A decision of `stage` on the request `method path`, with nothing known of the
    /// tenant yet. `reason` is for operators.
    #[inline]
    pub const fn new(
        stage: Stage,
        outcome: Outcome,
        method: &'a str,
        path: &'a str,
        reason: &'a str,
    ) -> Self {
        Self {
            stage,
            outcome,
            tenant: None,
            tier: None,
            source: None,
            method,
            path,
            reason,
            rule: None,
            policy_version: None,
        }
    }

    /// The tenant named, its tier when its record was found, and the source.
    #[inline]
    #[must_use]
    pub const fn tenant(
        mut self,
        tenant: Option<&'a TenantId>,
        tier: Option<&'a str>,
        source: Option<SourceKind>,
    ) -> Self {
        self.tenant = tenant;
        self.tier = tier;
        self.source = source;
        self
    }

    /// The policy rule and version that decided.
    #[inline]
    #[must_use]
    pub const fn rule(mut self, rule: Option<&'a str>, version: Option<u64>) -> Self {
        self.rule = rule;
        self.policy_version = version;
        self
    }
}

/// Receives every decision. Keep it fast: it runs on the request path (send to a
/// channel for anything slow).
///
/// A closure `Fn(&AuditEvent<'_>)` is a sink:
///
/// ```
/// use tenancy_core::observe::{AuditEvent, AuditSink};
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

/// A sink that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _: &AuditEvent<'_>) {}
}

/// Reports `event` to `sink`, which is the application's code: a panic in it loses
/// that one event (logged), never the decision or the connection.
#[inline]
pub fn report(sink: &dyn AuditSink, event: &AuditEvent<'_>) {
    let _ = crate::caught("AuditSink::record", || sink.record(event));
}
