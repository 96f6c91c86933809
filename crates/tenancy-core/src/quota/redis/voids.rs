//! Checks a manager gave up on (their answer came too late, or the request went
//! away), voided by one task per manager, one at a time, so that a request not served
//! leaves no charge.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use redis::Script;

use crate::backend::RedisConnection;

/// The checks a manager gave up on, waiting to be voided, and whether a task voids
/// them now.
#[derive(Default)]
pub(super) struct Voids {
    pub(super) pending: Mutex<VecDeque<Void>>,
    pub(super) running: AtomicBool,
}

impl Voids {
    pub(super) fn lock(&self) -> MutexGuard<'_, VecDeque<Void>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One check to void: its key, its charge id, and how often voiding it failed.
pub(super) struct Void {
    pub(super) key: String,
    pub(super) id: String,
    pub(super) tries: u32,
}

/// The voiding task.
pub(super) struct Voider {
    /// Clears `running` if the task ends before its queue is empty (its runtime shut
    /// down, polled or not).
    pub(super) running: Running,
    pub(super) voids: Arc<Voids>,
    pub(super) script: Arc<Script>,
    pub(super) conn: RedisConnection,
    pub(super) timeout: Duration,
}

impl Voider {
    pub(super) async fn run(mut self) {
        loop {
            let next = {
                let mut pending = self.voids.lock();
                let next = pending.pop_front();
                if next.is_none() {
                    // Stopped under the lock a sender pushes under: none is lost.
                    self.voids.running.store(false, Ordering::Release);
                    self.running.0 = None;
                }
                next
            };
            let Some(mut void) = next else {
                return;
            };
            let mut call = self.script.key(&void.key);
            call.arg(&void.id);
            let voided =
                tokio::time::timeout(self.timeout, call.invoke_async::<i64>(&mut self.conn));
            if let Ok(Ok(_)) = voided.await {
                continue;
            }
            void.tries += 1;
            if void.tries >= 8 {
                tracing::warn!(target: "tenancy::quota", charge = %void.id,
                    "a check given up on could not be voided: its charge may stand");
                continue;
            }
            // 100 ms, doubling: about half a minute over eight tries.
            let pause = Duration::from_millis(100).saturating_mul(1 << (void.tries - 1));
            self.voids.lock().push_back(void);
            tokio::time::sleep(pause).await;
        }
    }
}

/// Clears a manager's voiding flag when its task ends early (`None` once it has
/// stopped by itself).
pub(super) struct Running(pub(super) Option<Arc<Voids>>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(voids) = self.0.take() {
            voids.running.store(false, Ordering::Release);
        }
    }
}
