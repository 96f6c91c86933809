//! The sweep of idle tenants, and the thread that runs it.

use super::*;

impl<C: Clock> Shared<C> {
    /// Drops the idle slots that equal fresh ones; returns how many. Gives the map's
    /// spare memory back when it shrank to under a quarter of its capacity.
    pub(super) fn sweep(&self) -> usize {
        let now = self.now_nanos();
        let idle = self.idle_after.load(Ordering::Relaxed);
        let now_secs = self.unix_secs();
        let before = self.entries.len();
        self.entries.retain(|id, slot| {
            // The burst is full again (or, with no rate, the last check is that old):
            // `tat` is at least `idle` in the past.
            if now.saturating_sub(slot.tat) < idle.max(1) {
                return true;
            }
            let budgets = self.index.params[slot.plan as usize].plan.budgets();
            // The slot's lock is held: the side map is locked after it, as in a check.
            let uses = self.uses(id.as_str(), slot, budgets.len());
            let unspent = budgets.iter().enumerate().all(|(i, b)| {
                let u = uses.get(i);
                // Spent in a period that has ended; one later than the clock's (it
                // stepped back) is still the current one.
                u.used == 0 || u64::from(u.period) < b.period.locate(now_secs).0
            });
            drop(uses);
            if unspent && budgets.len() > 1 {
                self.extra.remove(id.as_str());
            }
            !unspent
        });
        // Side entries whose slot went another way (evicted with a plan of one budget,
        // or moved to one): each decided under its slot's lock, then removed, in the
        // order a check takes them (slot, then side map), never the other.
        if !self.extra.is_empty() {
            let keys: Vec<TenantId> = self.extra.iter().map(|e| e.key().clone()).collect();
            for id in keys {
                match self.entries.entry(id.clone()) {
                    dashmap::Entry::Occupied(slot) => {
                        let plan = slot.get().plan as usize;
                        let several = self.index.params[plan].plan.budgets().len() > 1;
                        if !several {
                            self.extra.remove(id.as_str());
                        }
                    }
                    // Held: the slot's shard stays locked while the side entry goes.
                    dashmap::Entry::Vacant(_held) => {
                        self.extra.remove(id.as_str());
                    }
                }
            }
        }
        let mut swept = shrunk(&self.entries, before);
        for rated in self.rated.iter().flatten() {
            let before = rated.len();
            // A rate-only tenant equals a fresh one once its burst is full again.
            rated.retain(|_, tat| now.saturating_sub(*tat) < idle.max(1));
            swept += shrunk(rated, before);
        }
        swept
    }
}
/// How many entries a sweep took from `map`, which had `before`; gives the map's
/// spare memory back when it shrank to under a quarter of its capacity.
pub(super) fn shrunk<V>(map: &DashMap<TenantId, V, RandomState>, before: usize) -> usize {
    let after = map.len();
    if after < map.capacity() / 4 {
        map.shrink_to_fit();
    }
    before.saturating_sub(after)
}

/// The manager's sweeper: a thread that holds only a weak reference, so it ends when
/// the manager is dropped (which also wakes it). `None` if no thread could be made:
/// the manager then works as before, and `evict_idle` still sweeps.
pub(super) fn spawn_sweeper<C>(
    shared: Weak<Shared<C>>,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>>
where
    C: Clock + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    let spawned = std::thread::Builder::new()
        .name("tenancy-quota-sweep".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let every = match shared.upgrade() {
                Some(s) => {
                    let idle = Duration::from_nanos(s.idle_after.load(Ordering::Relaxed));
                    (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
                }
                None => return,
            };
            std::thread::park_timeout(every);
            if stop.load(Ordering::Acquire) {
                return;
            }
            match shared.upgrade() {
                Some(s) => {
                    s.sweep();
                }
                None => return,
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(
                target: "tenancy::quota",
                error = %e,
                "no sweeper thread; idle tenants are reclaimed only by evict_idle"
            );
            None
        }
    }
}
