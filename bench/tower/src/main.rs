//! The axum server that `bench/callgrind.sh` measures beside the actix one.
//!
//! ```sh
//! cargo run --release -p tenancy-bench-tower -- MODE [ADDR]   # one thread
//! ```
//!
//! Modes, each serving `GET /hello` → `ok` on one current-thread runtime:
//! - `axum-bare`: axum with no middleware;
//! - `axum-governor`: tower-governor's layer keyed on `X-Tenant-ID` (a rate far above
//!   the load), the anchor: what one layer of a peer crate costs per tenant;
//! - `axum-resolve`: tower-tenancy's `TenancyLayer` on `X-Tenant-ID`, an in-memory
//!   registry of 10,000 tenants;
//! - `axum-cached`: the same registry behind `CachedRegistry`, as a remote store would
//!   be (warm: every request is a cache hit);
//! - `axum-full`: `axum-cached` with tower-tenancy's `TenantPolicy` (the actix server's
//!   `RulePolicy`) and `TenantQuota` on a `LocalQuota` (a rate and a daily budget far
//!   above the load, no quota fields on success): the actix server's `full`.
//!
//! The client is actix-tenancy's `bench_server client`, the same for every mode.

use std::sync::Arc;

use axum::{routing::get, Router};
use tenancy_core::{
    policy::{PolicySet, RulePolicy, Rules},
    quota::{LocalQuota, Period, QuotaPlan, QuotaPlans},
    registry::{CacheConfig, CachedRegistry},
};
use tower_tenancy::{Source, TenancyLayer, TenantPolicy, TenantQuota};

// The tenants the actix bench server serves too (its `TENANTS` unused here).
#[path = "../../registry.rs"]
#[allow(dead_code)]
mod registry;

use registry::{registry, Remote};

/// tower-governor's key: the tenant header, as the anchor limits per tenant.
#[derive(Clone, Copy)]
struct TenantHeader;

impl tower_governor::key_extractor::KeyExtractor for TenantHeader {
    type Key = String;

    fn extract<T>(
        &self,
        req: &axum::http::Request<T>,
    ) -> Result<String, tower_governor::GovernorError> {
        req.headers()
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)
    }
}

fn app(mode: &str) -> Router {
    let hello = Router::new().route("/hello", get(|| async { "ok" }));
    match mode {
        "axum-bare" => hello,
        "axum-governor" => {
            let config = tower_governor::governor::GovernorConfigBuilder::default()
                .key_extractor(TenantHeader)
                .per_nanosecond(1)
                .burst_size(1_000_000)
                .finish()
                .expect("a valid governor configuration");
            hello.layer(tower_governor::GovernorLayer::new(Arc::new(config)))
        }
        "axum-resolve" => hello.layer(
            TenancyLayer::builder(registry())
                .source(Source::header())
                .build()
                .expect("a valid layer"),
        ),
        "axum-cached" => hello.layer(
            TenancyLayer::builder(CachedRegistry::new(
                Remote(registry()),
                CacheConfig::default(),
            ))
            .source(Source::header())
            .build()
            .expect("a valid layer"),
        ),
        "axum-full" => {
            let plan = || QuotaPlan::per_second(1_000_000).budget(1_000_000_000, Period::Day);
            let plans = QuotaPlans::builder()
                .tier("pro", plan())
                .tier("free", plan())
                .build()
                .expect("valid plans");
            let quota = TenantQuota::builder(LocalQuota::new(plans))
                .headers_on_success(false)
                .build()
                .expect("a valid quota stage");
            let rules = RulePolicy::new(
                PolicySet::new()
                    .default_rules(Rules::new().deny("* /admin/**"))
                    .tier(
                        "pro",
                        Rules::new().allow("GET /hello").allow_capability("model:*"),
                    )
                    .tier("free", Rules::new().allow("GET /hello")),
            )
            .expect("valid policy");
            hello.layer(
                TenancyLayer::builder(CachedRegistry::new(
                    Remote(registry()),
                    CacheConfig::default(),
                ))
                .source(Source::header())
                .policy(TenantPolicy::new(rules))
                .quota(quota)
                .build()
                .expect("a valid layer"),
            )
        }
        other => panic!(
            "unknown mode {other:?}; modes: axum-bare axum-governor axum-resolve axum-cached axum-full"
        ),
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("axum-bare", String::as_str).to_owned();
    let addr = args
        .get(1)
        .map_or("127.0.0.1:8089", String::as_str)
        .to_owned();
    eprintln!("bench_axum: {mode} on {addr}");
    let app = app(&mode);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
        })
}
