//! When a key set is fetched: the refresh loop (after the answer's `max-age`, or the
//! refresh interval), its backoff after failures, and the refetch a token naming an
//! unknown `kid` may cause, at most once per cooldown.

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use futures_util::FutureExt as _;

use super::{fetch::ClearInFlight, runtime, InFlight, OidcError, Remote, State};

impl Remote {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn spawn_refresher(me: &Arc<Self>) -> Result<(), OidcError> {
        let weak = Arc::downgrade(me);
        let task = runtime()?.spawn(Self::refresher(weak));
        *me.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        Ok(())
    }

    /// The refresh loop; it holds the key set only while it fetches, and ends when
    /// the key set is dropped.
    async fn refresher(weak: Weak<Self>) {
        loop {
            let wait = match weak.upgrade() {
                Some(me) => me.next_refresh_in(),
                None => return,
            };
            tokio::time::sleep(wait.max(Duration::from_millis(20))).await;
            let fetch = match weak.upgrade() {
                Some(me) => Self::refetch(&me, true),
                None => return,
            };
            if let Some(fetch) = fetch {
                fetch.await;
            }
        }
    }

    fn next_refresh_in(&self) -> Duration {
        let s = self.state();
        let o = &self.options;
        match (s.fetched_at, s.failures) {
            (Some(at), 0) => s.fresh_for.saturating_sub(at.elapsed()),
            (None, 0) => Duration::ZERO,
            (_, n) => {
                let backoff = o.cooldown.saturating_mul(1 << (n - 1).min(16));
                let since = s.attempted_at.map_or(Duration::MAX, |t| t.elapsed());
                backoff.min(o.refresh).saturating_sub(since)
            }
        }
    }

    /// A fetch to wait for: the one running, or a new one unless `!force` and the last
    /// began within the cooldown.
    pub(super) fn refetch(me: &Arc<Self>, force: bool) -> Option<InFlight> {
        let mut s = me.state();
        if let Some(running) = &s.inflight {
            return Some(running.clone());
        }
        if !force
            && s.token_fetch_at
                .is_some_and(|t| t.elapsed() < me.options.cooldown)
        {
            return None;
        }
        let runtime = runtime().ok()?;
        let now = Instant::now();
        s.attempted_at = Some(now);
        if !force {
            s.token_fetch_at = Some(now);
        }
        s.generation += 1;
        let clear = ClearInFlight {
            remote: Arc::clone(me),
            generation: s.generation,
        };
        let task = runtime.spawn(Self::fetch_once(clear));
        // Waiters may go away; the spawned fetch finishes anyway and clears itself.
        let running: InFlight = async move {
            let _ = task.await;
        }
        .boxed()
        .shared();
        s.inflight = Some(running.clone());
        Some(running)
    }
}

#[cfg(test)]
mod tests {
    use super::{super::RemoteKeys, *};

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A key set that is never fetched (no refresh task): its schedule read by hand.
    fn unstarted() -> RemoteKeys {
        RemoteKeys::jwks("https://keys.test/jwks")
            .cooldown(secs(10))
            .refresh(secs(100))
            .assemble()
            .unwrap()
    }

    /// The wait `next_refresh_in` gives for a set fetched `fetched` ago (fresh for
    /// 60 s), after `failures` failed fetches, the last attempt `attempted` ago.
    fn wait(
        keys: &RemoteKeys,
        fetched: Option<Duration>,
        failures: u32,
        attempted: Option<Duration>,
    ) -> Duration {
        let ago = |d: Duration| Instant::now().checked_sub(d).unwrap();
        {
            let mut s = keys.inner.state();
            s.fresh_for = secs(60);
            s.fetched_at = fetched.map(ago);
            s.failures = failures;
            s.attempted_at = attempted.map(ago);
        }
        keys.inner.next_refresh_in()
    }

    /// Whether `wait` is `expected`, less the little time the test itself took.
    fn about(wait: Duration, expected: Duration) -> bool {
        wait <= expected && wait + secs(1) > expected
    }

    #[test]
    fn a_set_never_fetched_is_fetched_at_once() {
        let keys = unstarted();
        assert_eq!(keys.inner.next_refresh_in(), Duration::ZERO);
        assert_eq!(wait(&keys, None, 0, Some(secs(0))), Duration::ZERO);
    }

    #[test]
    fn a_good_set_is_refetched_when_it_stops_being_fresh() {
        let keys = unstarted();
        assert!(about(wait(&keys, Some(secs(0)), 0, None), secs(60)));
        assert!(about(wait(&keys, Some(secs(45)), 0, None), secs(15)));
        assert_eq!(wait(&keys, Some(secs(61)), 0, None), Duration::ZERO);
    }

    #[test]
    fn after_failures_the_wait_doubles_from_the_cooldown_up_to_the_refresh_interval() {
        let keys = unstarted();
        for (failures, backoff) in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (40, 100)] {
            let waited = wait(&keys, Some(secs(0)), failures, Some(secs(0)));
            assert!(about(waited, secs(backoff)), "{failures}: {waited:?}");
        }
        let later = wait(&keys, None, 2, Some(secs(15)));
        assert!(
            about(later, secs(5)),
            "counted from the last attempt: {later:?}"
        );
        assert_eq!(wait(&keys, None, 2, Some(secs(21))), Duration::ZERO);
        assert_eq!(
            wait(&keys, None, 3, None),
            Duration::ZERO,
            "never attempted"
        );
    }
}
