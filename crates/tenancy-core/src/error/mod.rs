//! Every rejection, as data: its stable code, its HTTP status, and the
//! `application/problem+json` body clients see ([`ProblemJson`], [`Problem`]), for any
//! web framework to send. The table of codes, with what each means, is on
//! actix-tenancy's `error` page, where [`DEFAULT_TYPE_BASE`] points.
//!
//! What caused a rejection (which source, which status, which backend error) goes to
//! logs and the audit sink only: [`TenancyError::reason`].
//!
//! Also here: [`ConfigError`], a configuration mistake reported when the middleware is
//! built.

use std::{borrow::Cow, fmt, time::Duration};

use crate::SourceKind;

mod config;
mod problem;
pub use config::ConfigError;
#[doc(hidden)]
pub use problem::retry_after_secs;
pub use problem::{Problem, ProblemJson, DEFAULT_TYPE_BASE};
#[cfg(test)]
mod tests;

/// The stable, public code of a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `tenant_missing`, 401.
    TenantMissing,
    /// `tenant_invalid`, 400.
    TenantInvalid,
    /// `tenant_conflict`, 403.
    TenantConflict,
    /// `tenant_forbidden`, 403.
    TenantForbidden,
    /// `tenant_misdirected`, 421.
    TenantMisdirected,
    /// `tenant_unavailable`, 503.
    TenantUnavailable,
    /// `tenant_read_only`, 403.
    TenantReadOnly,
    /// `unauthenticated`, 401.
    Unauthenticated,
    /// `auth_unavailable`, 503.
    AuthUnavailable,
    /// `policy_denied`, 403.
    PolicyDenied,
    /// `policy_unavailable`, 503.
    PolicyUnavailable,
    /// `quota_exceeded`, 429.
    QuotaExceeded,
    /// `quota_unavailable`, 503.
    QuotaUnavailable,
    /// `cost_invalid`, 400.
    CostInvalid,
    /// `invalid_request`, 400.
    InvalidRequest,
    /// `internal_error`, 500.
    Internal,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 16] = [
        Self::TenantMissing,
        Self::TenantInvalid,
        Self::TenantConflict,
        Self::TenantForbidden,
        Self::TenantMisdirected,
        Self::TenantUnavailable,
        Self::TenantReadOnly,
        Self::Unauthenticated,
        Self::AuthUnavailable,
        Self::PolicyDenied,
        Self::PolicyUnavailable,
        Self::QuotaExceeded,
        Self::QuotaUnavailable,
        Self::CostInvalid,
        Self::InvalidRequest,
        Self::Internal,
    ];

    /// The code as it appears in bodies, logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TenantMissing => "tenant_missing",
            Self::TenantInvalid => "tenant_invalid",
            Self::TenantConflict => "tenant_conflict",
            Self::TenantForbidden => "tenant_forbidden",
            Self::TenantMisdirected => "tenant_misdirected",
            Self::TenantUnavailable => "tenant_unavailable",
            Self::TenantReadOnly => "tenant_read_only",
            Self::Unauthenticated => "unauthenticated",
            Self::AuthUnavailable => "auth_unavailable",
            Self::PolicyDenied => "policy_denied",
            Self::PolicyUnavailable => "policy_unavailable",
            Self::QuotaExceeded => "quota_exceeded",
            Self::QuotaUnavailable => "quota_unavailable",
            Self::CostInvalid => "cost_invalid",
            Self::InvalidRequest => "invalid_request",
            Self::Internal => "internal_error",
        }
    }

    /// The gRPC status code a gRPC request is refused with: `INVALID_ARGUMENT` (3) for
    /// a `400`, `UNAUTHENTICATED` (16) for a `401`, `PERMISSION_DENIED` (7) for a
    /// `403`, `FAILED_PRECONDITION` (9) for a tenant served in another region,
    /// `RESOURCE_EXHAUSTED` (8) for a quota, `UNAVAILABLE` (14) for a backend that
    /// cannot answer, `INTERNAL` (13) otherwise.
    pub const fn grpc_code(self) -> u8 {
        match self.status() {
            400 => 3,
            401 => 16,
            403 => 7,
            421 => 9,
            429 => 8,
            503 => 14,
            _ => 13,
        }
    }

    /// The HTTP status, as a number every web framework reads
    /// (`StatusCode::from_u16`).
    pub const fn status(self) -> u16 {
        match self {
            Self::TenantMissing | Self::Unauthenticated => 401,
            Self::TenantInvalid | Self::CostInvalid | Self::InvalidRequest => 400,
            Self::TenantConflict
            | Self::TenantForbidden
            | Self::TenantReadOnly
            | Self::PolicyDenied => 403,
            Self::TenantMisdirected => 421,
            Self::TenantUnavailable
            | Self::AuthUnavailable
            | Self::PolicyUnavailable
            | Self::QuotaUnavailable => 503,
            Self::QuotaExceeded => 429,
            Self::Internal => 500,
        }
    }

    /// The standard phrase of the [status](Self::status) (`"Forbidden"`), the title
    /// RFC 9457 asks for where the problem's type is `about:blank`.
    pub const fn phrase(self) -> &'static str {
        match self.status() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            421 => "Misdirected Request",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        }
    }

    /// A short, fixed, human-readable title. It never contains request data.
    pub const fn title(self) -> &'static str {
        match self {
            Self::TenantMissing => "Tenant required",
            Self::TenantInvalid => "Invalid tenant identifier",
            Self::TenantConflict => "Conflicting tenant identifiers",
            Self::TenantForbidden => "Tenant not allowed",
            Self::TenantMisdirected => "Tenant served by another region",
            Self::TenantUnavailable => "Tenant temporarily unavailable",
            Self::TenantReadOnly => "Tenant is read-only",
            Self::Unauthenticated => "Authentication required",
            Self::AuthUnavailable => "Authentication temporarily unavailable",
            Self::PolicyDenied => "Denied by tenant policy",
            Self::PolicyUnavailable => "Policy temporarily unavailable",
            Self::QuotaExceeded => "Quota exceeded",
            Self::QuotaUnavailable => "Quota temporarily unavailable",
            Self::CostInvalid => "Invalid request cost",
            Self::InvalidRequest => "Invalid request",
            Self::Internal => "Internal server error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejection: one variant per failure, each with its [`ErrorCode`].
///
/// The fields are for logs, metrics and the audit sink; [`ProblemJson`] shows none of
/// them to the client except `Retry-After`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TenancyError {
    /// No source yielded a tenant, and missing is not allowed.
    TenantMissing,
    /// A source yielded an id that failed validation, or input it could not read.
    TenantInvalid {
        /// The source whose input was bad.
        source: SourceKind,
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// Two sources named different tenants.
    TenantConflict {
        /// The source that won the ranking.
        first: SourceKind,
        /// The source that disagreed.
        second: SourceKind,
    },
    /// The tenant is unknown, suspended or deleted. Deliberately one variant with one
    /// body: outsiders cannot tell which.
    TenantForbidden {
        /// Why, for logs (`unknown`, `suspended`, ...).
        reason: Cow<'static, str>,
    },
    /// The tenant's record names another region than this deployment's.
    TenantMisdirected,
    /// The registry could not answer, or the tenant is provisioning / in maintenance.
    TenantUnavailable {
        /// Sent as `Retry-After`, in whole seconds, when set.
        retry_after: Option<Duration>,
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// A write to a tenant whose status allows reads only.
    TenantReadOnly,
    /// The request carried no credential where one is required. Answered like
    /// [`Unauthenticated`](Self::Unauthenticated) (`401 unauthenticated`), with a
    /// challenge that names no error (RFC 6750, section 3.1).
    CredentialMissing,
    /// An invalid, expired or revoked credential.
    Unauthenticated {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The credential could not be checked (the revocation store failed): fail closed.
    AuthUnavailable {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The policy evaluator denied the request.
    PolicyDenied {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The policy refused a capability the request asked for by a header the policy
    /// stage was told to read: a `403 policy_denied` whose body names the kind of
    /// capability (`"capability": "model"`), never the value asked for or the rules.
    CapabilityDenied {
        /// The kind of capability refused, as the stage was configured (`model`).
        capability: &'static str,
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The policy evaluator failed, timed out or panicked.
    PolicyUnavailable {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The quota is used up.
    QuotaExceeded {
        /// Sent as `Retry-After`, in whole seconds rounded up, at least 1.
        retry_after: Option<Duration>,
        /// The limit that refused, by its name in the `RateLimit` fields (`rate`,
        /// `hour`, `day`, `month`): sent as the problem body's `limit` member, so a
        /// client knows whether to wait a second or a day.
        limit: Option<&'static str>,
    },
    /// The quota backend failed and the mode is fail-closed.
    QuotaUnavailable {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The request's declared cost is malformed (negative, not a number, too large).
    CostInvalid {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// A handler refused a malformed request (a body it cannot read): for
    /// applications that answer every rejection in the crate's shape.
    InvalidRequest {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
    /// The application is wired wrongly: a stage ran without its prerequisite.
    Misconfigured(&'static str),
    /// Application code the crate called panicked (a cost estimator, a custom
    /// source): `500`, never a reset connection. Names the callback, for logs.
    Panicked(&'static str),
    /// A backend the handler used failed in a way the client must not learn about (a
    /// query on the tenant's transaction: its message names tables and constraints):
    /// `500 internal_error`.
    Internal {
        /// Why, for logs.
        reason: Cow<'static, str>,
    },
}

impl TenancyError {
    /// The stable public code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TenantMissing => ErrorCode::TenantMissing,
            Self::TenantInvalid { .. } => ErrorCode::TenantInvalid,
            Self::TenantConflict { .. } => ErrorCode::TenantConflict,
            Self::TenantForbidden { .. } => ErrorCode::TenantForbidden,
            Self::TenantMisdirected => ErrorCode::TenantMisdirected,
            Self::TenantUnavailable { .. } => ErrorCode::TenantUnavailable,
            Self::TenantReadOnly => ErrorCode::TenantReadOnly,
            Self::CredentialMissing | Self::Unauthenticated { .. } => ErrorCode::Unauthenticated,
            Self::AuthUnavailable { .. } => ErrorCode::AuthUnavailable,
            Self::PolicyDenied { .. } | Self::CapabilityDenied { .. } => ErrorCode::PolicyDenied,
            Self::PolicyUnavailable { .. } => ErrorCode::PolicyUnavailable,
            Self::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            Self::QuotaUnavailable { .. } => ErrorCode::QuotaUnavailable,
            Self::CostInvalid { .. } => ErrorCode::CostInvalid,
            Self::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            Self::Misconfigured(_) | Self::Panicked(_) | Self::Internal { .. } => {
                ErrorCode::Internal
            }
        }
    }

    /// The HTTP status (see [`ErrorCode::status`]).
    pub fn status(&self) -> u16 {
        self.code().status()
    }

    /// The `WWW-Authenticate` challenge of an authentication rejection (RFC 6750):
    /// `Bearer` when no credential came, `Bearer error="invalid_token"` when one came
    /// and failed; `None` for any other rejection.
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            Self::CredentialMissing => Some("Bearer"),
            Self::Unauthenticated { .. } => Some("Bearer error=\"invalid_token\""),
            _ => None,
        }
    }

    /// How long the client should wait before retrying, when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TenantUnavailable { retry_after, .. }
            | Self::QuotaExceeded { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A fixed public explanation, for the few rejections where the title alone would
    /// mislead the client. Never contains request data.
    pub fn detail(&self) -> Option<&'static str> {
        match self {
            Self::QuotaExceeded {
                retry_after: None, ..
            } => Some("This request can never be admitted by the quota; retrying will not help."),
            _ => None,
        }
    }

    /// The quota limit that refused (`rate`, `hour`, `day`, `month`), for
    /// [`QuotaExceeded`](Self::QuotaExceeded). Public: it names the client's own limit,
    /// as the `RateLimit` fields do.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Self::QuotaExceeded { limit, .. } => *limit,
            _ => None,
        }
    }

    /// The kind of capability refused (`model`), for
    /// [`CapabilityDenied`](Self::CapabilityDenied). Public: it names what the client
    /// asked for, not the rules.
    pub fn capability(&self) -> Option<&'static str> {
        match self {
            Self::CapabilityDenied { capability, .. } => Some(capability),
            _ => None,
        }
    }

    /// The internal reason, for logs and audit. Never send it to clients.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            Self::TenantInvalid { source, reason } => {
                Cow::Owned(format!("{}: {reason}", source.as_str()))
            }
            Self::TenantConflict { first, second } => Cow::Owned(format!(
                "{} and {} name different tenants",
                first.as_str(),
                second.as_str()
            )),
            Self::TenantForbidden { reason }
            | Self::TenantUnavailable { reason, .. }
            | Self::Unauthenticated { reason }
            | Self::AuthUnavailable { reason }
            | Self::PolicyDenied { reason }
            | Self::CapabilityDenied { reason, .. }
            | Self::PolicyUnavailable { reason }
            | Self::QuotaUnavailable { reason }
            | Self::CostInvalid { reason }
            | Self::InvalidRequest { reason }
            | Self::Internal { reason } => reason.clone(),
            Self::Misconfigured(what) => Cow::Borrowed(what),
            Self::Panicked(what) => Cow::Borrowed(what),
            Self::CredentialMissing => Cow::Borrowed("no bearer token"),
            other => Cow::Borrowed(other.code().title()),
        }
    }
}

impl fmt::Display for TenancyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.reason())
    }
}

impl std::error::Error for TenancyError {}
