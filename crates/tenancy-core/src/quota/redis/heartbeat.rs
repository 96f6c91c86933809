//! The heartbeat of [`FailureMode::FallbackLocal`](super::FailureMode): each replica
//! counts the live ones (for its local share while Redis is away) and, once Redis
//! answers again, pays what it admitted on its own.

use std::{sync::Weak, time::Duration};

use redis::Script;

use super::{
    super::fallback::{Fallback, Owed},
    scripts::{reconcile_args, tenant_key},
};
use crate::{backend::RedisConnection, TenantId};

/// An id for this replica's heartbeat: the process and a moment of its life, hashed
/// with a per-process random seed.
pub(super) fn replica_id() -> String {
    use std::hash::BuildHasher as _;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = foldhash::fast::RandomState::default();
    format!(
        "{:016x}{:016x}",
        seed.hash_one((std::process::id(), nanos)),
        seed.hash_one(nanos)
    )
}

/// The heartbeat task of [`FailureMode::FallbackLocal`]: it ends when the manager is
/// dropped (it holds the fallback weakly).
pub(super) struct Heartbeat {
    /// Clears the running flag when the heartbeat's future is dropped.
    pub(super) _stopped: Stopped,
    pub(super) fallback: Weak<Fallback>,
    pub(super) conn: RedisConnection,
    pub(super) key: String,
    pub(super) prefix: String,
    pub(super) id: String,
    pub(super) every: Duration,
    pub(super) timeout: Duration,
    pub(super) beat: Script,
    pub(super) reconcile: Script,
}

impl Heartbeat {
    /// Beats until the manager is gone. However the task ends (the manager dropped,
    /// or the runtime it was spawned on shut down, before or after its first poll),
    /// `_stopped` is dropped with it: checks go to Redis again, and the next one
    /// within a runtime starts a new heartbeat.
    pub(super) async fn run(mut self) {
        let ttl_ms = u64::try_from(self.every.as_millis().saturating_mul(3)).unwrap_or(u64::MAX);
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(f) = self.fallback.upgrade() else {
                return;
            };
            let mut call = self.beat.key(&self.key);
            call.arg(&self.id).arg(ttl_ms);
            let beat = call.invoke_async::<u32>(&mut self.conn);
            let Ok(Ok(alive)) = tokio::time::timeout(self.timeout, beat).await else {
                continue;
            };
            if self.pay(&f).await {
                f.beat(alive, self.every.saturating_mul(2));
            }
        }
    }

    /// Charges Redis with every debt of this replica; `false` if one could not be paid
    /// (it is kept, with the rest, for the next beat). A payment cut short (the
    /// runtime shutting down mid-pay) keeps what it had not paid too.
    pub(super) async fn pay(&mut self, f: &Fallback) -> bool {
        let mut unpaid = Unpaid {
            f,
            debts: f.take_owed().into(),
        };
        while let Some((id, owed, rate)) = unpaid.debts.front() {
            let mut call = self.reconcile.key(tenant_key(&self.prefix, id.as_str()));
            reconcile_args(owed, *rate, |a| {
                call.arg(a);
            });
            let paid = tokio::time::timeout(self.timeout, call.invoke_async::<i64>(&mut self.conn));
            match paid.await {
                Ok(Ok(_)) => {
                    unpaid.debts.pop_front();
                }
                // Redis ran the script and refused it (a key of another type, say):
                // trying again would block every later payment, and the replica with
                // them, so this one is given up, loudly.
                Ok(Err(err))
                    if matches!(
                        err.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                            | redis::ErrorKind::Extension
                    ) =>
                {
                    tracing::warn!(target: "tenancy::quota", tenant = %id, error = %err,
                        "Redis refused what a replica admitted while it was away; not charged");
                    unpaid.debts.pop_front();
                }
                // Kept, with the rest, when `unpaid` is dropped.
                _ => return false,
            }
        }
        true
    }
}

/// The debts a payment has yet to pay: given back to the fallback when the payment
/// ends, whether it failed or its future was dropped mid-way. One whose answer never
/// came is given back too: paid twice at worst, never admitted twice.
pub(super) struct Unpaid<'a> {
    pub(super) f: &'a Fallback,
    pub(super) debts: std::collections::VecDeque<(TenantId, Owed, u32)>,
}

impl Drop for Unpaid<'_> {
    fn drop(&mut self) {
        for (id, owed, _) in self.debts.drain(..) {
            self.f.restore(id, owed);
        }
    }
}

/// Ends the heartbeat's hold on the manager when the task ends.
pub(super) struct Stopped(pub(super) Weak<Fallback>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(f) = self.0.upgrade() {
            f.heartbeat_stopped();
        }
    }
}
