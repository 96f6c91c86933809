//! What the backends share, beneath the stages and beside the pipeline: the Redis
//! connection of the Redis backends (feature `redis`) and the SQL helpers of the
//! PostgreSQL ones (feature `postgres`). It imports the core only; no stage and no
//! pipeline.

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "postgres")]
pub(crate) mod sql;

#[cfg(feature = "redis")]
pub use redis::RedisConnection;
