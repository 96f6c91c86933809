//! One tenant's state: its slot (the rate's arrival time and the first budget's use) and its budgets' uses.

use super::*;

/// Units used in one period of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Used {
    pub(super) period: u32,
    pub(super) used: u64,
}

/// One tenant's whole state, inline in the map's slot (24 bytes): the rate's GCRA
/// theoretical arrival time, its plan, and its budgets' use. It is read and written
/// under the map shard's write lock, so a check admits the rate and the budgets
/// together or not at all, and exactly the burst passes under any concurrency.
#[derive(Debug)]
pub(super) struct Slot {
    /// Nanoseconds since the manager's origin: the GCRA theoretical arrival time (a
    /// full burst once it is at or before now); for a plan without a rate, the time
    /// of the last check. Either way the slot has been idle since at least `tat`.
    pub(super) tat: u64,
    /// The first budget's use in `period`.
    pub(super) used: u64,
    /// The plan's index in [`PlanIndex::params`]: a changed plan starts afresh.
    pub(super) plan: u32,
    /// The period of `used`.
    pub(super) period: u32,
}

// The slot is the per-tenant cost beside the key: keep it at 24 bytes (a plan's
// second and later budgets, which few plans have, live in a map of their own).
const _: () = assert!(std::mem::size_of::<Slot>() == 24);

impl Slot {
    pub(super) fn fresh(plan: u32, now: u64) -> Self {
        Self {
            tat: now,
            used: 0,
            plan,
            period: 0,
        }
    }
}

pub(super) type ExtraRef<'a> = dashmap::mapref::one::RefMut<'a, TenantId, Vec<Used>>;
pub(super) type SlotRef<'a> = dashmap::mapref::one::RefMut<'a, TenantId, Slot>;
/// The arrival times of the tenants on one rate-only plan.
pub(super) type Rated = DashMap<TenantId, u64, RandomState>;

/// A tenant's budgets: the first in its slot, the others (if its plan has more) in the
/// side map, locked after the slot (always in that order).
pub(super) struct Uses<'a> {
    pub(super) slot: &'a mut Slot,
    pub(super) extra: Option<ExtraRef<'a>>,
}

impl Uses<'_> {
    /// Budget `i`'s use.
    pub(super) fn get(&self, i: usize) -> Used {
        match i.checked_sub(1) {
            None => Used {
                period: self.slot.period,
                used: self.slot.used,
            },
            Some(j) => self
                .extra
                .as_ref()
                .and_then(|e| e.get(j).copied())
                .unwrap_or(Used { period: 0, used: 0 }),
        }
    }

    /// Sets budget `i`'s use.
    pub(super) fn set(&mut self, i: usize, u: Used) {
        match i.checked_sub(1) {
            None => (self.slot.period, self.slot.used) = (u.period, u.used),
            Some(j) => {
                if let Some(slot) = self.extra.as_mut().and_then(|e| e.get_mut(j)) {
                    *slot = u;
                }
            }
        }
    }
}
