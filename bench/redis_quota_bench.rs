//! `RedisQuota` checks per second at a given concurrency, one round trip each, for
//! `bench/redis.sh`, which runs `redis-benchmark` on the same script beside it.
//!
//! ```sh
//! cargo run --release --example redis_quota_bench --features redis -- URL run CONCURRENCY SECONDS
//! cargo run --release --example redis_quota_bench --features redis -- URL invocation DIR
//! ```
//!
//! `URL` may be a comma-separated list of a Redis Cluster's nodes (feature
//! `redis-cluster`): the checks then go to the shard of each tenant.
//!
//! `run` spawns `CONCURRENCY` tasks on one connection (as the stage shares one), each
//! checking its own tenant in a loop, and prints `checks/s`. `invocation` writes the
//! script (`DIR/check.lua`) and the key and arguments of one check (`DIR/args`, one per
//! line), for `redis-benchmark` to send the very same `EVALSHA`. The plan is never
//! exhausted (a rate of 10⁹ per second and a daily budget of 2⁶²), so every check
//! does its whole work.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use actix_tenancy::Moment;
use actix_tenancy::{
    quota::{Period, QuotaManager, QuotaPlan, QuotaPlans, RedisQuota},
    registry::TenantRecord,
    resolve::SourceKind,
    TenantContext, TenantId,
};

fn tenant(i: usize) -> TenantContext {
    let id = TenantId::parse(&format!("bench{i}")).expect("valid id");
    TenantContext::new(
        id.clone(),
        SourceKind::Header,
        Arc::new(TenantRecord::new(id, "pro")),
        None,
    )
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: redis_quota_bench URL (run CONCURRENCY SECONDS | invocation DIR)";
    let (url, mode) = (args.first().ok_or(usage)?, args.get(1).ok_or(usage)?);
    let plans = QuotaPlans::builder()
        .tier(
            "pro",
            QuotaPlan::per_second(1_000_000_000).budget(1 << 62, Period::Day),
        )
        .build()?;
    let builder = if url.contains(',') {
        #[cfg(feature = "redis-cluster")]
        {
            RedisQuota::cluster(url.split(','), plans)
        }
        #[cfg(not(feature = "redis-cluster"))]
        return Err("a list of cluster nodes needs the feature redis-cluster".into());
    } else {
        RedisQuota::builder(url.as_str(), plans)
    };
    let quota = Arc::new(
        builder
            .prefix("tenancy-bench")
            .timeout(Duration::from_secs(5))
            .build()?,
    );
    match mode.as_str() {
        "invocation" => {
            let dir = std::path::Path::new(args.get(2).ok_or(usage)?);
            let (script, key, argv) = quota.check_invocation(&tenant(0), 1).ok_or("no plan")?;
            std::fs::write(dir.join("check.lua"), script)?;
            std::fs::write(dir.join("args"), format!("{key}\n{}\n", argv.join("\n")))?;
        }
        "run" => {
            let concurrency: usize = args.get(2).ok_or(usage)?.parse()?;
            let seconds: u64 = args.get(3).ok_or(usage)?.parse()?;
            // Warm: the script is loaded, the connection made.
            for i in 0..concurrency {
                assert!(
                    quota
                        .check(&tenant(i), 1, &mut Moment::now())
                        .await?
                        .allowed
                );
            }
            let done = Arc::new(AtomicU64::new(0));
            let until = Instant::now() + Duration::from_secs(seconds);
            let started = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|i| {
                    let (quota, done, t) = (Arc::clone(&quota), Arc::clone(&done), tenant(i));
                    actix_web::rt::spawn(async move {
                        while Instant::now() < until {
                            match quota.check(&t, 1, &mut Moment::now()).await {
                                Ok(d) if d.allowed => {
                                    done.fetch_add(1, Ordering::Relaxed);
                                }
                                other => panic!("a check failed: {other:?}"),
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await?;
            }
            let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
            println!("concurrency={concurrency} checks/s={rate:.0}");
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
