//! What the backends share: the Redis connection of the Redis backends (feature
//! `redis`) and the SQL helpers of the PostgreSQL ones (feature `postgres`).

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "postgres")]
pub(crate) mod sql;

#[cfg(feature = "redis")]
pub use redis::RedisConnection;
