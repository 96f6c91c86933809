//! What the backends share: the Redis connection of the Redis backends (feature
//! `redis`).

mod redis;

pub use redis::RedisConnection;
