//! Per-tenant quotas: a rate with a burst, and budgets per calendar period.
//!
//! - [`QuotaPlan`] says what one tenant may consume; [`QuotaPlans`] maps tiers to plans,
//!   with per-tenant overrides, tuned in code.
//! - A [`QuotaManager`] checks and consumes units; [`LocalQuota`] keeps each tenant's
//!   rate (GCRA, `governor`'s algorithm) and budgets in one slot of a sharded map, and
//!   reclaims idle tenants itself.
//! - [`TenantQuota`] is the middleware stage: after resolution, it charges the
//!   request's cost (a [`CostEstimator`], one unit by default) and answers
//!   `429 quota_exceeded` with `Retry-After`, `X-Quota-Remaining: 0` and the IETF
//!   `RateLimit-Policy` / `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-10)
//!   when the tenant is over. Allowed responses carry the same fields.
//!
//! Rate and budgets are admitted together or not at all: a request refused by a budget
//! consumes no rate, and a request refused by the rate consumes no budget.
//!
//! ```
//! use actix_tenancy::prelude::*;
//! use actix_tenancy::quota::{LocalQuota, Period, QuotaPlan, QuotaPlans, TenantQuota};
//! use actix_web::{test, web, App};
//!
//! # actix_web::rt::System::new().block_on(async {
//! let plans = QuotaPlans::builder()
//!     .tier("free", QuotaPlan::per_second(2).budget(1_000, Period::Day))
//!     .tier("pro", QuotaPlan::per_second(50).budget(100_000, Period::Day))
//!     .build()
//!     .unwrap();
//! let registry = InMemoryRegistry::new()
//!     .with(TenantRecord::new(TenantId::parse("globex").unwrap(), "free"));
//! let tenancy = Tenancy::builder()
//!     .resolver(TenantResolver::builder(registry).source(Source::header()).build().unwrap())
//!     .quota(TenantQuota::new(LocalQuota::new(plans)))
//!     .build()
//!     .unwrap();
//! let app = test::init_service(
//!     App::new().wrap(tenancy).route("/", web::get().to(|| async { "ok" })),
//! )
//! .await;
//!
//! let get = || test::TestRequest::get().uri("/").insert_header(("x-tenant-id", "globex")).to_request();
//! assert_eq!(test::call_service(&app, get()).await.status(), 200);
//! assert_eq!(test::call_service(&app, get()).await.status(), 200);
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(res.status(), 429);
//! assert_eq!(res.headers().get("x-quota-remaining").unwrap(), "0");
//! assert!(res.headers().contains_key("retry-after"));
//! # });
//! ```

mod cost;
mod headers;
mod stage;

pub use cost::{CostEstimator, CostRequest, RouteCost, RouteCostBuilder};
pub use headers::{QUOTA_REMAINING, QUOTA_SHADOW, RATELIMIT, RATELIMIT_POLICY};
pub use stage::{TenantQuota, TenantQuotaBuilder};
pub use tenancy_core::quota::{
    ActualCost, Budget, BudgetState, Charge, HeaderCost, LocalQuota, Period, QueryCost,
    QuotaDecision, QuotaError, QuotaFields, QuotaLimit, QuotaManager, QuotaPlan, QuotaPlans,
    QuotaPlansBuilder, Rate, RateState, UnknownTier,
};
#[cfg(feature = "redis")]
pub use tenancy_core::quota::{FailureMode, RedisQuota, RedisQuotaBuilder};
