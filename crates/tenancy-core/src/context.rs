//! The per-request [`TenantContext`]: what the resolver settled.

use std::sync::Arc;

use crate::{Principal, SourceKind, TenantId, TenantRecord};

/// Everything known about the tenant of one request, settled once by the resolver.
///
/// It sits in the request extensions as `Arc<TenantContext>`; handlers read it through
/// the adapter's `Tenant` extractor. Nothing downstream re-reads a header to learn the tenant.
#[derive(Debug)]
#[non_exhaustive]
pub struct TenantContext {
    id: TenantId,
    source: SourceKind,
    record: Arc<TenantRecord>,
    principal: Option<Principal>,
}

impl TenantContext {
    /// A context; the resolver builds these, tests and custom stages may too.
    pub fn new(
        id: TenantId,
        source: SourceKind,
        record: Arc<TenantRecord>,
        principal: Option<Principal>,
    ) -> Self {
        Self {
            id,
            source,
            record,
            principal,
        }
    }

    /// The tenant id.
    #[inline]
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// Which source named the tenant. When several agreed, the verified one (a token
    /// claim) or else the first in the configured order.
    #[inline]
    pub fn source(&self) -> SourceKind {
        self.source
    }

    /// The registry record the tenant was validated against.
    #[inline]
    pub fn record(&self) -> &TenantRecord {
        &self.record
    }

    /// The registry record, shared.
    #[inline]
    pub fn record_arc(&self) -> &Arc<TenantRecord> {
        &self.record
    }

    /// The tenant's tier, from its registry record.
    #[inline]
    pub fn tier(&self) -> &str {
        self.record.tier()
    }

    /// The verified principal of the request, when an authentication stage ran.
    #[inline]
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }
}
