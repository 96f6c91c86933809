//! What the backends share, beneath the stages and beside the pipeline: the SQL
//! helpers of the PostgreSQL ones (feature `postgres`). The Redis connection of the
//! Redis backends is the core's (`tenancy_core::RedisConnection`, re-exported at the
//! crate's root). It imports the core only; no stage and no pipeline.

#[cfg(feature = "postgres")]
pub(crate) mod sql;
