//! The tenant contexts a worker keeps: one per tenant, shared by its requests while
//! the record stays the same, and held under the registry's lease.

use std::{cell::RefCell, collections::HashMap, sync::Arc};

use crate::{
    core::{SourceKind, TenantContext, TenantId, TenantRecord},
    registry::Lease,
};

/// The contexts of tenants without a principal, per worker: a request for a tenant
/// whose current record was seen before, from the same source, shares that context
/// instead of allocating one. One entry per tenant, replaced when the registry hands
/// out another record (a refresh, a tier change) or the source differs; at most
/// [`ContextCache::MAX_ENTRIES`] tenants, and a full cache starts over. Only tenants
/// the registry accepted get here, so clients cannot fill it with made-up ids.
///
/// An entry also keeps the registry's [`Lease`] on its record, when the registry gave
/// one: while the lease holds, the resolver takes the record from here and does not
/// ask the registry.
#[derive(Default)]
pub(crate) struct ContextCache {
    entries: RefCell<HashMap<TenantId, Held, foldhash::fast::RandomState>>,
}

/// A context, and the registry's lease on its record.
struct Held {
    ctx: Arc<TenantContext>,
    lease: Option<Lease>,
}

/// What the resolver knows of a tenant's record besides the registry's answer.
pub(super) enum Known {
    /// This worker's context for the tenant, under a lease that holds.
    Held(Arc<TenantContext>, Lease),
    /// The registry's lease on the record it just gave.
    Lease(Lease),
}

impl ContextCache {
    const MAX_ENTRIES: usize = 1024;

    /// The context held for `id` and its lease, if it has one (whether the lease still
    /// holds is the registry's to say).
    pub(super) fn leased(&self, id: &str) -> Option<(Arc<TenantContext>, Lease)> {
        let entries = self.entries.borrow();
        let held = entries.get(id)?;
        let lease = held.lease?;
        Some((Arc::clone(&held.ctx), lease))
    }

    #[cfg(test)]
    pub(super) fn get(
        &self,
        id: TenantId,
        kind: SourceKind,
        record: Arc<TenantRecord>,
    ) -> Arc<TenantContext> {
        self.get_leased(id, kind, &record, None)
    }

    /// The context of `id` from `kind` with `record`, shared when this worker has it;
    /// the entry keeps `lease` from now on.
    pub(super) fn get_leased(
        &self,
        id: TenantId,
        kind: SourceKind,
        record: &Arc<TenantRecord>,
        lease: Option<Lease>,
    ) -> Arc<TenantContext> {
        let mut entries = self.entries.borrow_mut();
        if let Some(held) = entries.get_mut(id.as_str()) {
            if held.ctx.source() == kind && Arc::ptr_eq(held.ctx.record_arc(), record) {
                held.lease = lease;
                return Arc::clone(&held.ctx);
            }
        } else if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        let ctx = Arc::new(TenantContext::new(
            id.clone(),
            kind,
            Arc::clone(record),
            None,
        ));
        entries.insert(
            id,
            Held {
                ctx: Arc::clone(&ctx),
                lease,
            },
        );
        ctx
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_shared_per_record_and_source_within_bounds() {
        let cache = ContextCache::default();
        let id = TenantId::parse("acme").unwrap();
        let record = Arc::new(TenantRecord::new(id.clone(), "pro"));
        let a = cache.get(id.clone(), SourceKind::Header, Arc::clone(&record));
        let b = cache.get(id.clone(), SourceKind::Header, Arc::clone(&record));
        assert!(Arc::ptr_eq(&a, &b));
        let by_host = cache.get(id.clone(), SourceKind::Host, Arc::clone(&record));
        assert_eq!(by_host.source(), SourceKind::Host, "the source must match");
        assert_eq!(cache.len(), 1, "one entry per tenant");

        // The registry replaced the record (a tier change): a new context.
        let moved = Arc::new(TenantRecord::new(id.clone(), "enterprise"));
        let c = cache.get(id.clone(), SourceKind::Header, moved);
        assert_eq!((c.tier(), a.tier()), ("enterprise", "pro"));
        assert_eq!(cache.len(), 1, "the old record is let go");

        for i in 0..ContextCache::MAX_ENTRIES + 5 {
            let id = TenantId::parse(&format!("t{i}")).unwrap();
            let record = Arc::new(TenantRecord::new(id.clone(), "free"));
            let ctx = cache.get(id.clone(), SourceKind::Header, record);
            assert_eq!(ctx.id(), &id);
            assert!(cache.len() <= ContextCache::MAX_ENTRIES);
        }
    }
}
