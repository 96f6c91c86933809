//! The `LISTEN` side: one task per cache that evicts each tenant a `NOTIFY` names.

use std::{
    fmt,
    sync::{Arc, Weak},
    time::Duration,
};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::{sync::watch, task::JoinHandle};

use super::PostgresRegistry;
use crate::{
    error::ConfigError,
    registry::{CachedRegistry, TenantRegistry},
};

/// How long one connection attempt (connect and `LISTEN`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default)]
struct State {
    listening: bool,
    connections: u64,
}

/// The background task that keeps a [`CachedRegistry`] in step with the `tenants`
/// table across replicas.
///
/// It holds one dedicated connection (not one of the pool's) that `LISTEN`s on the
/// registry's channel, and calls [`CachedRegistry::invalidate`] with the id each
/// notification carries. When that connection drops it reconnects with exponential
/// backoff and jitter
/// (see [`reconnect_backoff`](super::PostgresRegistryBuilder::reconnect_backoff));
/// in the meantime the cache's TTL still bounds how stale an answer can be. Each time
/// it (re)starts listening it calls [`CachedRegistry::invalidate_all`], since changes
/// made while it was not listening were not announced to it.
///
/// A connection that dies silently (a network partition with no reset) is noticed only
/// when the operating system gives up on it; until then the TTL is the bound.
///
/// Dropping the handle, or calling [`stop`](Self::stop), ends the task. The task also
/// ends by itself, at once, when the cache is dropped. Start it with
/// [`PostgresRegistry::cached`] or [`PostgresRegistry::listen`].
#[must_use = "dropping the listener stops it: keep it for as long as the cache is used"]
pub struct InvalidationListener {
    task: JoinHandle<()>,
    state: watch::Receiver<State>,
}

impl fmt::Debug for InvalidationListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = *self.state.borrow();
        f.debug_struct("InvalidationListener")
            .field("listening", &state.listening)
            .field("connections", &state.connections)
            .finish_non_exhaustive()
    }
}

impl InvalidationListener {
    pub(super) fn spawn<R: TenantRegistry>(
        registry: &PostgresRegistry,
        cache: &Arc<CachedRegistry<R>>,
    ) -> Result<Self, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::Missing("a Tokio runtime to run the invalidation listener in")
        })?;
        let (tx, rx) = watch::channel(State::default());
        let worker = Worker {
            cache: Arc::downgrade(cache),
            options: (*registry.pool().connect_options()).clone(),
            channel: registry.channel().to_owned(),
            backoff: registry.shared.backoff,
            state: tx,
        };
        Ok(Self {
            task: runtime.spawn(worker.run()),
            state: rx,
        })
    }

    /// Whether the task is listening now.
    pub fn is_listening(&self) -> bool {
        self.state.borrow().listening
    }

    /// How many times the task has connected and started listening (reconnections
    /// included).
    pub fn connections(&self) -> u64 {
        self.state.borrow().connections
    }

    /// Waits until the task is listening. Wrap it in a timeout: while the database is
    /// unreachable this waits.
    pub async fn ready(&self) {
        let mut state = self.state.clone();
        // An error means the task has ended; nothing more will change.
        let _ = state.wait_for(|s| s.listening).await;
    }

    /// Whether the task has ended (it was stopped, or its cache was dropped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the task (as dropping the handle does).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for InvalidationListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Worker<R> {
    cache: Weak<CachedRegistry<R>>,
    options: PgConnectOptions,
    channel: String,
    backoff: (Duration, Duration),
    state: watch::Sender<State>,
}

impl<R: TenantRegistry> Worker<R> {
    async fn run(self) {
        let Some(mut gone) = self.cache.upgrade().map(|cache| cache.dropped()) else {
            return;
        };
        // Ends the task as soon as the cache is dropped, not at the next NOTIFY.
        let cache_dropped = async move { while gone.changed().await.is_ok() {} };
        let run = std::pin::pin!(self.listen());
        let cache_dropped = std::pin::pin!(cache_dropped);
        futures_util::future::select(run, cache_dropped).await;
    }

    async fn listen(&self) {
        let (min, max) = self.backoff;
        let mut delay = min;
        loop {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                Ok(Ok(mut listener)) => {
                    // Whatever changed while nobody listened is unknown: forget it all.
                    let Some(cache) = self.cache.upgrade() else {
                        return;
                    };
                    cache.invalidate_all();
                    drop(cache);
                    self.state.send_modify(|s| {
                        s.listening = true;
                        s.connections += 1;
                    });
                    tracing::debug!(
                        target: "tenancy::registry",
                        channel = %self.channel,
                        "listening for tenant changes"
                    );
                    delay = min;
                    let reason = loop {
                        match listener.try_recv().await {
                            Ok(Some(note)) => {
                                let Some(cache) = self.cache.upgrade() else {
                                    return;
                                };
                                cache.invalidate(note.payload());
                            }
                            Ok(None) => break "connection lost".to_owned(),
                            Err(e) => break e.to_string(),
                        }
                    };
                    self.state.send_modify(|s| s.listening = false);
                    tracing::warn!(
                        target: "tenancy::registry",
                        channel = %self.channel,
                        error = %reason,
                        "tenant change listener disconnected; the cache TTL bounds staleness until it reconnects"
                    );
                }
                Ok(Err(e)) => tracing::warn!(
                    target: "tenancy::registry",
                    channel = %self.channel,
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "tenant change listener cannot connect"
                ),
                Err(_) => tracing::warn!(
                    target: "tenancy::registry",
                    channel = %self.channel,
                    retry_in_ms = delay.as_millis() as u64,
                    "tenant change listener timed out connecting"
                ),
            }
            if self.cache.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(jitter(delay)).await;
            delay = (delay * 2).min(max);
        }
    }

    /// A fresh connection of its own, listening on the channel.
    async fn connect(&self) -> Result<PgListener, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(self.options.clone())
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        // A lost connection ends this listener; `run` reconnects (and clears the cache).
        listener.eager_reconnect(false);
        listener.listen(&self.channel).await?;
        Ok(listener)
    }
}

/// `delay` plus up to a quarter more, so replicas that lost the database together do
/// not all reconnect in the same instant.
fn jitter(delay: Duration) -> Duration {
    use std::hash::BuildHasher as _;
    // A fresh `RandomState` is keyed differently each time: a cheap random number.
    let r = std::collections::hash_map::RandomState::new().hash_one(0u8) % 1024;
    delay + delay.mul_f64(r as f64 / 4096.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        let base = Duration::from_millis(400);
        for _ in 0..100 {
            let d = jitter(base);
            assert!(d >= base && d <= base + base / 4, "{d:?}");
        }
    }
}
