use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

use super::id::TenantId;

/// Where a tenant is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TenantStatus {
    /// Served normally.
    Active,
    /// Being set up; not served yet (503 with `Retry-After`).
    Provisioning,
    /// Temporarily out of service (503 with `Retry-After`).
    Maintenance,
    /// Reads only (403 `tenant_read_only` on writes).
    ReadOnly,
    /// Leaving: reads only, so data can be exported.
    Offboarding,
    /// Unpaid: reads only.
    InArrears,
    /// Not served; looks like an unknown tenant from outside.
    Suspended,
    /// Gone; looks like an unknown tenant from outside.
    Deleted,
}

impl TenantStatus {
    /// Every status.
    pub const ALL: [TenantStatus; 8] = [
        Self::Active,
        Self::Provisioning,
        Self::Maintenance,
        Self::ReadOnly,
        Self::Offboarding,
        Self::InArrears,
        Self::Suspended,
        Self::Deleted,
    ];

    /// The status as stored (`snake_case`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Provisioning => "provisioning",
            Self::Maintenance => "maintenance",
            Self::ReadOnly => "read_only",
            Self::Offboarding => "offboarding",
            Self::InArrears => "in_arrears",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    /// "tenant is {status}", for logs: a constant, so a refusal by status costs what
    /// a refusal of an unknown tenant costs (no formatting on that path).
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Active => "tenant is active",
            Self::Provisioning => "tenant is provisioning",
            Self::Maintenance => "tenant is maintenance",
            Self::ReadOnly => "tenant is read_only",
            Self::Offboarding => "tenant is offboarding",
            Self::InArrears => "tenant is in_arrears",
            Self::Suspended => "tenant is suspended",
            Self::Deleted => "tenant is deleted",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown tenant status {s:?}"))
    }
}

/// What the resolver does with a tenant in a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Serve every request.
    Allow,
    /// Serve safe methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`); `403 tenant_read_only`
    /// for the rest.
    ReadOnly,
    /// `503 tenant_unavailable` with `Retry-After`.
    Unavailable {
        /// The `Retry-After` to send.
        retry_after: Duration,
    },
    /// `403 tenant_forbidden`, the same bytes as an unknown tenant.
    Forbidden,
}

/// The answer for each [`TenantStatus`]; the defaults follow the table below, and each
/// can be changed.
///
/// | status | default |
/// | --- | --- |
/// | active | allow |
/// | provisioning, maintenance | 503 `tenant_unavailable`, `Retry-After: 30` |
/// | read_only, offboarding, in_arrears | safe methods pass, writes 403 `tenant_read_only` |
/// | suspended, deleted | 403 `tenant_forbidden` (same as unknown) |
///
/// ```
/// use tenancy_core::{Access, StatusRules, TenantStatus};
///
/// // Let tenants in arrears keep writing for now.
/// let rules = StatusRules::default().set(TenantStatus::InArrears, Access::Allow);
/// assert_eq!(rules.access(TenantStatus::InArrears), Access::Allow);
/// assert_eq!(rules.access(TenantStatus::Suspended), Access::Forbidden);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRules {
    table: [Access; 8],
}

impl Default for StatusRules {
    fn default() -> Self {
        let wait = Access::Unavailable {
            retry_after: Duration::from_secs(30),
        };
        let table = TenantStatus::ALL.map(|st| match st {
            TenantStatus::Active => Access::Allow,
            TenantStatus::Provisioning | TenantStatus::Maintenance => wait,
            TenantStatus::ReadOnly | TenantStatus::Offboarding | TenantStatus::InArrears => {
                Access::ReadOnly
            }
            TenantStatus::Suspended | TenantStatus::Deleted => Access::Forbidden,
        });
        Self { table }
    }
}

impl StatusRules {
    /// Changes the answer for one status.
    #[must_use]
    pub fn set(mut self, status: TenantStatus, access: Access) -> Self {
        self.table[status as usize] = access;
        self
    }

    /// The answer for `status`.
    #[inline]
    pub fn access(&self, status: TenantStatus) -> Access {
        self.table[status as usize]
    }
}

/// What the registry knows about one tenant.
///
/// ```
/// use tenancy_core::{TenantId, TenantRecord, TenantStatus};
///
/// let rec = TenantRecord::new(TenantId::parse("acme").unwrap(), "pro")
///     .with_region("eu")
///     .with_attribute("plan_started", "2026-01-01");
/// assert_eq!(rec.status(), TenantStatus::Active);
/// assert_eq!(rec.tier(), "pro");
/// assert_eq!(rec.region(), Some("eu"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRecord {
    id: TenantId,
    #[serde(default = "active")]
    status: TenantStatus,
    tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<TenantId>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    attributes: serde_json::Map<String, serde_json::Value>,
}

fn active() -> TenantStatus {
    TenantStatus::Active
}

impl TenantRecord {
    /// An active tenant on `tier`, with no region, parent or attributes.
    pub fn new(id: TenantId, tier: impl Into<String>) -> Self {
        Self {
            id,
            status: TenantStatus::Active,
            tier: tier.into(),
            region: None,
            parent: None,
            attributes: serde_json::Map::new(),
        }
    }

    /// Sets the status.
    #[must_use]
    pub fn with_status(mut self, status: TenantStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the region the tenant's data lives in.
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the parent tenant (for organisations and their sub-tenants).
    #[must_use]
    pub fn with_parent(mut self, parent: TenantId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Sets one free-form attribute.
    #[must_use]
    pub fn with_attribute(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// The tenant id.
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// The lifecycle status.
    pub fn status(&self) -> TenantStatus {
        self.status
    }

    /// The tier (`free`, `pro`, ...), as the registry names it.
    pub fn tier(&self) -> &str {
        &self.tier
    }

    /// The region, when the tenant is pinned to one.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The parent tenant, if any.
    pub fn parent(&self) -> Option<&TenantId> {
        self.parent.as_ref()
    }

    /// The free-form attributes.
    pub fn attributes(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.attributes
    }

    /// One attribute.
    pub fn attribute(&self, key: &str) -> Option<&serde_json::Value> {
        self.attributes.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_text() {
        for st in TenantStatus::ALL {
            assert_eq!(st.as_str().parse::<TenantStatus>().unwrap(), st);
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
        }
        assert!("Active".parse::<TenantStatus>().is_err());
    }

    #[test]
    fn default_rules_match_the_documented_table() {
        let r = StatusRules::default();
        assert_eq!(r.access(TenantStatus::Active), Access::Allow);
        assert!(matches!(
            r.access(TenantStatus::Provisioning),
            Access::Unavailable { .. }
        ));
        assert!(matches!(
            r.access(TenantStatus::Maintenance),
            Access::Unavailable { .. }
        ));
        for st in [
            TenantStatus::ReadOnly,
            TenantStatus::Offboarding,
            TenantStatus::InArrears,
        ] {
            assert_eq!(r.access(st), Access::ReadOnly);
        }
        assert_eq!(r.access(TenantStatus::Suspended), Access::Forbidden);
        assert_eq!(r.access(TenantStatus::Deleted), Access::Forbidden);
    }

    #[test]
    fn record_rejects_bad_ids_and_unknown_fields() {
        let bad = r#"{"id":"Acme","tier":"pro"}"#;
        assert!(serde_json::from_str::<TenantRecord>(bad).is_err());
        let extra = r#"{"id":"acme","tier":"pro","owner":"x"}"#;
        assert!(serde_json::from_str::<TenantRecord>(extra).is_err());
        let ok = r#"{"id":"acme","tier":"pro","status":"suspended"}"#;
        let rec: TenantRecord = serde_json::from_str(ok).unwrap();
        assert_eq!(rec.status(), TenantStatus::Suspended);
    }
}
