//! A revocation store in Redis, shared by every replica.

use std::{fmt, time::Duration};

use super::{now, Consumed, Revocation, RevocationError, RevocationStore, TokenFacts};
use crate::{error::ConfigError, Answer, RedisConnection};

/// Keeps revocations in Redis so that every replica sees a revocation at once (feature
/// `redis` with `jwt`).
///
/// Each entry is one key with an expiry, set to outlast the second `until`
/// (`EX until + 1 - now`, on this process's clock) and never shortened by a later
/// revocation of the same thing: the store never outgrows the tokens alive. A check is
/// one `MGET` round trip; a refresh token is marked used by one script that sets the
/// mark unless one is there and answers the one that is, atomically across replicas.
/// Every call is bounded by a timeout (default 100 ms); a failure answers
/// `503 auth_unavailable`, never a pass.
///
/// On a Redis Cluster ([`cluster`](Self::cluster), feature `redis-cluster`) every key
/// of the store carries one hash tag, the prefix (`{tenancy:rev:}jti:…`), so a check's
/// `MGET` over the token's, its family's, its tenant's and its subject's entries is one
/// round trip to one shard. A tag per tenant would spread the store over the shards,
/// but a token or a family is revoked by its id alone, with no tenant to tag it by;
/// the cost of the one tag is that one shard serves every revocation check (an `MGET`
/// of at most four small keys: tens of thousands per second per shard, see
/// BENCHMARKS.md). Give stores of different services different prefixes to place
/// them on different shards.
///
/// ```no_run
/// # async fn demo(sessions: tenancy_core::session::SessionManager) -> Result<(), tenancy_core::error::ConfigError> {
/// use tenancy_core::session::RedisRevocations;
///
/// let store = RedisRevocations::new("redis://127.0.0.1:6379")?;
/// let sessions = sessions.with_store(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRevocations {
    conn: RedisConnection,
    /// `{prefix}`: every key's hash tag and start.
    tag: String,
    timeout: Duration,
    /// Sets a key unless it holds a later cut-off, and never shortens its expiry;
    /// loaded once, run by its hash.
    revoke: redis::Script,
    /// Sets a refresh token's used mark unless one is there; answers the one there.
    consume: redis::Script,
}

impl fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRevocations")
            .field("tag", &self.tag)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The key prefix of `RedisRevocations::new` and `RedisRevocations::cluster`.
const DEFAULT_PREFIX: &str = "tenancy:rev:";
/// Their bound on every call.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

impl RedisRevocations {
    /// A store at `url`, keys prefixed `tenancy:rev:`; it connects on first use.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        Self::with_options(url, DEFAULT_PREFIX, DEFAULT_TIMEOUT)
    }

    /// A store with its own key prefix and per-call timeout.
    pub fn with_options(url: &str, prefix: &str, timeout: Duration) -> Result<Self, ConfigError> {
        let conn = RedisConnection::open(url, timeout)?;
        Ok(Self::with_connection(conn, prefix, timeout))
    }

    /// A store on a Redis Cluster found through any of `nodes` (feature
    /// `redis-cluster`), keys prefixed `tenancy:rev:`, timeout 100 ms. Must be called
    /// within a Tokio runtime: the cluster client spawns its task there.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tenancy_core::error::ConfigError> {
    /// use tenancy_core::session::RedisRevocations;
    ///
    /// let store = RedisRevocations::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis-cluster")]
    pub fn cluster<I, S>(nodes: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let conn = RedisConnection::cluster(nodes, DEFAULT_TIMEOUT)?;
        Ok(Self::with_connection(conn, DEFAULT_PREFIX, DEFAULT_TIMEOUT))
    }

    /// A store on a connection the application already has: the `redis` crate's
    /// [`ConnectionManager`](redis::aio::ConnectionManager) (1.x) or, with feature
    /// `redis-cluster`, its cluster connection, or a [`RedisConnection`]; shared with
    /// the application's other uses of Redis. `timeout` still bounds every call.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tenancy_core::session::RedisRevocations;
    ///
    /// let conn = redis::aio::ConnectionManager::new(redis::Client::open("redis://127.0.0.1")?).await?;
    /// let store = RedisRevocations::with_connection(conn, "tenancy:rev:", Duration::from_millis(100));
    /// # Ok(()) }
    /// ```
    pub fn with_connection(
        conn: impl Into<RedisConnection>,
        prefix: &str,
        timeout: Duration,
    ) -> Self {
        Self {
            conn: conn.into(),
            // An empty tag (`{}`) is none at all: Redis would hash the whole key.
            tag: format!(
                "{{{}}}",
                if prefix.is_empty() {
                    DEFAULT_PREFIX
                } else {
                    prefix
                }
            ),
            timeout,
            revoke: redis::Script::new(
                "local old = tonumber(redis.call('GET', KEYS[1]) or '-1') \
                 local new = tonumber(ARGV[1]) \
                 if new < old then new = old end \
                 local ttl = tonumber(ARGV[2]) * 1000 \
                 local left = redis.call('PTTL', KEYS[1]) \
                 if left > ttl then ttl = left end \
                 redis.call('SET', KEYS[1], new, 'PX', ttl) return 1",
            ),
            consume: redis::Script::new(
                "local old = redis.call('GET', KEYS[1]) \
                 if old then return old end \
                 redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return false",
            ),
        }
    }

    /// Key parts are length-prefixed, so no tenant or subject can forge another's key.
    /// The prefix is the hash tag: every key of the store is in one cluster slot.
    fn key(&self, kind: &str, parts: &[&str]) -> String {
        use std::fmt::Write as _;
        let mut key = format!("{}{kind}", self.tag);
        for p in parts {
            // Writing to a String cannot fail.
            let _ = write!(key, ":{}:{p}", p.len());
        }
        key
    }

    /// The expiry, in seconds from now, that keeps a key through the second `until`:
    /// a key set part-way into second `now` with `EX until + 1 - now` lasts past the
    /// end of second `until`.
    fn ttl(until: u64) -> u64 {
        until.saturating_add(1).saturating_sub(now()).max(1)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RevocationError> {
        let mut conn = self.conn.clone();
        self.bounded(cmd.query_async::<T>(&mut conn)).await
    }

    /// Waits for a Redis call at most the timeout; every failure is an error.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RevocationError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RevocationError::new(e.to_string())),
            Err(_) => Err(RevocationError::new("Redis did not answer in time")),
        }
    }
}

impl RevocationStore for RedisRevocations {
    fn revoke<'a>(
        &'a self,
        what: Revocation<'a>,
        until: u64,
    ) -> Answer<'a, Result<(), RevocationError>> {
        Answer::later(self.write(what, until))
    }

    fn is_revoked<'a>(
        &'a self,
        token: &'a TokenFacts<'_>,
    ) -> Answer<'a, Result<bool, RevocationError>> {
        Answer::later(self.read(token))
    }

    fn consume<'a>(
        &'a self,
        jti: &'a str,
        rotation: &'a str,
        until: u64,
    ) -> Answer<'a, Result<Consumed, RevocationError>> {
        Answer::later(self.mark_used(jti, rotation, until))
    }
}

impl RedisRevocations {
    async fn write(&self, what: Revocation<'_>, until: u64) -> Result<(), RevocationError> {
        let ttl = Self::ttl(until);
        let (key, value) = match what {
            Revocation::Token(jti) => (self.key("jti", &[jti]), 0),
            Revocation::Family(f) => (self.key("fam", &[f]), 0),
            Revocation::Subject {
                tenant,
                subject,
                before,
            } => (self.key("sub", &[tenant, subject]), before),
            Revocation::Tenant { tenant, before } => (self.key("ten", &[tenant]), before),
        };
        // A cut-off only moves forward, and an expiry only later: keep the later of
        // each if two revocations race.
        let mut invocation = self.revoke.key(key);
        invocation.arg(value).arg(ttl);
        let mut conn = self.conn.clone();
        self.bounded(invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
    }

    async fn read(&self, t: &TokenFacts<'_>) -> Result<bool, RevocationError> {
        let keys = [
            t.jti.map(|j| self.key("jti", &[j])),
            t.family.map(|f| self.key("fam", &[f])),
            t.tenant.map(|tenant| self.key("ten", &[tenant])),
            t.tenant.map(|tenant| self.key("sub", &[tenant, t.subject])),
        ];
        let present: Vec<&String> = keys.iter().flatten().collect();
        if present.is_empty() {
            return Ok(false);
        }
        let values: Vec<Option<i64>> = self.run(redis::cmd("MGET").arg(&present)).await?;
        if values.len() != present.len() {
            return Err(RevocationError::new("unexpected MGET reply"));
        }
        let mut values = values.into_iter();
        let mut next = |exists: bool| {
            if exists {
                values.next().flatten()
            } else {
                None
            }
        };
        let cut = |before: i64| t.issued_at.is_none_or(|iat| (iat as i64) <= before);
        let jti = next(keys[0].is_some());
        let fam = next(keys[1].is_some());
        let tenant = next(keys[2].is_some());
        let subject = next(keys[3].is_some());
        Ok(jti.is_some() || fam.is_some() || tenant.is_some_and(cut) || subject.is_some_and(cut))
    }

    async fn mark_used(
        &self,
        jti: &str,
        rotation: &str,
        until: u64,
    ) -> Result<Consumed, RevocationError> {
        let mut invocation = self.consume.key(self.key("used", &[jti]));
        invocation.arg(rotation).arg(Self::ttl(until));
        let mut conn = self.conn.clone();
        let before: Option<String> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(before.map_or(Consumed::First, Consumed::Already))
    }
}
