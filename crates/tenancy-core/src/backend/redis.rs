//! The connection the Redis backends talk through: one node, or a Redis Cluster.

use std::{fmt, time::Duration};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    Cmd, Pipeline, RedisFuture, Value,
};

use crate::error::ConfigError;

/// A connection to Redis that the Redis backends share (feature `redis`): one node
/// through the `redis` crate's [`ConnectionManager`], or, with feature
/// `redis-cluster`, a Redis Cluster through its async
/// [`ClusterConnection`](redis::cluster_async::ClusterConnection).
///
/// Both reconnect by themselves; the cluster client also follows `MOVED` and `ASK`
/// redirections and re-reads the slot map after a failover. Every key a backend
/// sends in one command carries one hash tag, so each call is one round trip to the
/// one shard that owns it.
///
/// Made from a URL ([`open`](Self::open), [`cluster`](Self::cluster)) or from the
/// application's own connection (`From`), so a service keeps one pool for all its
/// uses of Redis:
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tenancy_core::RedisConnection;
///
/// let manager = redis::aio::ConnectionManager::new(redis::Client::open("redis://127.0.0.1")?).await?;
/// let shared = RedisConnection::from(manager.clone());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisConnection(Inner);

#[derive(Clone)]
enum Inner {
    Node(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may hold a password.
        f.write_str(match self.0 {
            Inner::Node(_) => "RedisConnection::Node",
            #[cfg(feature = "redis-cluster")]
            Inner::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

/// The error of a URL that could not be used; never the URL itself (it may hold a
/// password), only the kind of failure.
fn invalid(e: redis::RedisError) -> ConfigError {
    ConfigError::InvalidBackendUrl {
        backend: "Redis",
        reason: format!("{:?}", e.kind()),
    }
}

/// A connect timeout that a slow TCP handshake can meet even when answers must be fast.
fn connect_timeout(timeout: Duration) -> Duration {
    timeout.max(Duration::from_millis(250))
}

impl RedisConnection {
    /// One Redis node at `url` (`redis://`, or `rediss://` with feature `redis-tls`),
    /// connected on first use, with `timeout` on every answer. Must be called within a
    /// Tokio runtime (as in `#[tokio::main]` or `#[actix_web::main]`): the client's task is spawned there.
    pub fn open(url: &str, timeout: Duration) -> Result<Self, ConfigError> {
        let client = redis::Client::open(url).map_err(invalid)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout(timeout)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        ConnectionManager::new_lazy_with_config(client, config)
            .map(Self::from)
            .map_err(invalid)
    }

    /// A Redis Cluster, found through any of `nodes` (feature `redis-cluster`),
    /// connected on first use, with `timeout` on every answer. Must be called within a
    /// Tokio runtime, as [`open`](Self::open).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tenancy_core::error::ConfigError> {
    /// use std::time::Duration;
    /// use tenancy_core::RedisConnection;
    ///
    /// let conn = RedisConnection::cluster(
    ///     ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"],
    ///     Duration::from_millis(50),
    /// )?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis-cluster")]
    pub fn cluster<I, S>(nodes: I, timeout: Duration) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = nodes
            .into_iter()
            .map(|n| redis::IntoConnectionInfo::into_connection_info(n.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        if nodes.is_empty() {
            return Err(ConfigError::InvalidBackendUrl {
                backend: "Redis",
                reason: "no cluster node was given".to_owned(),
            });
        }
        // The timeouts are the config's below: it overrides the builder's.
        let client = redis::cluster::ClusterClient::builder(nodes)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(invalid)?;
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(connect_timeout(timeout))
            .set_response_timeout(timeout);
        Ok(Self(Inner::Cluster(
            client.get_pending_async_connection_with_config(config),
        )))
    }

    /// Whether this is a Redis Cluster connection.
    pub fn is_cluster(&self) -> bool {
        match self.0 {
            Inner::Node(_) => false,
            #[cfg(feature = "redis-cluster")]
            Inner::Cluster(_) => true,
        }
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(conn: ConnectionManager) -> Self {
        Self(Inner::Node(conn))
    }
}

#[cfg(feature = "redis-cluster")]
impl From<redis::cluster_async::ClusterConnection> for RedisConnection {
    fn from(conn: redis::cluster_async::ClusterConnection) -> Self {
        Self(Inner::Cluster(conn))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Inner::Node(c) => c.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Inner::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Node(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Inner::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Node(c) => c.get_db(),
            #[cfg(feature = "redis-cluster")]
            Inner::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let err = RedisConnection::open("redis://:hunter2@[::1", Duration::from_millis(50))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Redis URL is invalid"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[cfg(feature = "redis-cluster")]
    #[test]
    fn a_cluster_needs_a_node_and_never_repeats_a_url() {
        let none: [&str; 0] = [];
        let err = RedisConnection::cluster(none, Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("no cluster node"), "{err}");
        let err = RedisConnection::cluster(
            ["redis://127.0.0.1:7000", "redis://:hunter2@[::1"],
            Duration::from_millis(50),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("Redis URL is invalid"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
