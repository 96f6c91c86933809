//! Per-tenant quotas, whatever serves the request: a rate with a burst, and budgets
//! per calendar period.
//!
//! - [`QuotaPlan`] says what one tenant may consume; [`QuotaPlans`] maps tiers to plans,
//!   with per-tenant overrides, tuned in code.
//! - A [`QuotaManager`] checks and consumes units; [`LocalQuota`] keeps each tenant's
//!   rate (GCRA, `governor`'s algorithm) and budgets in one slot of a sharded map, and
//!   reclaims idle tenants itself. `RedisQuota` (feature `redis`) shares them between
//!   replicas, with a degraded mode when Redis does not answer.
//! - [`QuotaFields`]: the fields a response carries for a decision
//!   (`X-Quota-Remaining`, the IETF `RateLimit-Policy` / `RateLimit` fields of
//!   draft-ietf-httpapi-ratelimit-headers-10, `Retry-After`, `X-Quota-Shadow`), as
//!   text each adapter writes into its framework's header map.
//!
//! Rate and budgets are admitted together or not at all: a request refused by a budget
//! consumes no rate, and a request refused by the rate consumes no budget.
//!
//! The stages that charge requests are the adapters': actix-tenancy's `TenantQuota`,
//! tower-tenancy's `TenancyLayer::builder().quota(..)`.
//!
//! ```
//! use tenancy_core::quota::{LocalQuota, Period, QuotaManager, QuotaPlan, QuotaPlans};
//! use tenancy_core::{Moment, SourceKind, TenantContext, TenantId, TenantRecord};
//! use std::sync::Arc;
//!
//! let plans = QuotaPlans::builder()
//!     .tier("free", QuotaPlan::per_second(2).budget(1_000, Period::Day))
//!     .build()
//!     .unwrap();
//! let quota = LocalQuota::new(plans);
//! let id = TenantId::parse("globex").unwrap();
//! let tenant = TenantContext::new(
//!     id.clone(),
//!     SourceKind::Header,
//!     Arc::new(TenantRecord::new(id, "free")),
//!     None,
//! );
//! let check = |cost| quota.check(&tenant, cost, &mut Moment::now()).now().unwrap().unwrap();
//! assert!(check(1).allowed);
//! assert!(check(1).allowed);
//! assert!(!check(1).allowed);
//! ```

mod cost;
#[cfg(feature = "redis")]
mod fallback;
mod fields;
mod judge;
mod local;
mod plan;
#[cfg(feature = "redis")]
mod redis;

pub use cost::{check_routes, HeaderCost, QueryCost};
pub use fields::QuotaFields;
pub use judge::{correction, judge, Judgement};
pub use local::LocalQuota;
pub use plan::{Budget, Period, QuotaPlan, QuotaPlans, QuotaPlansBuilder, Rate, UnknownTier};
#[cfg(feature = "redis")]
pub use redis::{FailureMode, RedisQuota, RedisQuotaBuilder};

use std::{borrow::Cow, fmt, time::Duration};

pub use crate::Charge;
use crate::{Answer, Moment, TenantContext};

/// The state of the rate limit after a check, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// The burst: how many units can pass at once.
    pub limit: u32,
    /// Units that could pass right now.
    pub remaining: u32,
    /// Time to replenish a full burst.
    pub window: Duration,
    /// Time until the burst is full again.
    pub reset: Duration,
}

/// The state of the tightest budget after a check, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetState {
    /// The budget's units per period.
    pub limit: u64,
    /// Units left in this period.
    pub remaining: u64,
    /// The period.
    pub period: Period,
    /// Time until the period ends.
    pub reset: Duration,
}

/// Which limit of a plan refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaLimit {
    /// The rate (and its burst): waiting a moment helps.
    Rate,
    /// The budget of this period: waiting helps only when the period ends.
    Budget(Period),
}

impl QuotaLimit {
    /// The limit's name, as in the `RateLimit` header fields and the problem body's
    /// `limit` member: `rate`, `hour`, `day` or `month`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Budget(period) => period.as_str(),
        }
    }
}

/// The answer to a quota check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaDecision {
    /// Whether the request may go on. In shadow mode this is `true` even when
    /// [`would_deny`](Self::would_deny) is set.
    pub allowed: bool,
    /// Shadow mode: the quota would have refused the request.
    pub would_deny: bool,
    /// When the client may retry. `None` on a refusal means never: the cost exceeds
    /// what the plan can ever admit.
    pub retry_after: Option<Duration>,
    /// The rate limit's state, when the plan has one.
    pub rate: Option<RateState>,
    /// The tightest budget's state, when the plan has budgets.
    pub budget: Option<BudgetState>,
    /// The plan that decided, when there is one (its `RateLimit-Policy` is sent).
    pub plan: Option<std::sync::Arc<QuotaPlan>>,
    /// The limit that refused (or, in shadow mode, would have), when one did.
    pub refused_by: Option<QuotaLimit>,
    /// The Unix second the units were charged at (the manager's wall clock), when the
    /// manager says: [`settle`](QuotaManager::settle) then corrects the budget
    /// period the charge was made in.
    pub charged_at: Option<u64>,
}

impl QuotaDecision {
    /// An admission, with no state to report yet: for your own [`QuotaManager`]. Add
    /// the state the response headers show with [`with_rate`](Self::with_rate),
    /// [`with_budget`](Self::with_budget) and [`with_plan`](Self::with_plan).
    pub fn allow() -> Self {
        Self {
            allowed: true,
            ..refuse(None, None, None, None, None)
        }
    }

    /// A refusal by `by`, to be retried after `retry_after` (`None`: never, the cost
    /// exceeds what the plan can ever admit): for your own [`QuotaManager`].
    pub fn refuse(by: QuotaLimit, retry_after: Option<Duration>) -> Self {
        refuse(Some(by), retry_after, None, None, None)
    }

    /// With the rate's state.
    #[must_use]
    pub fn with_rate(mut self, rate: RateState) -> Self {
        self.rate = Some(rate);
        self
    }

    /// With the tightest budget's state.
    #[must_use]
    pub fn with_budget(mut self, budget: BudgetState) -> Self {
        self.budget = Some(budget);
        self
    }

    /// With the plan that decided (its `RateLimit-Policy` is sent).
    #[must_use]
    pub fn with_plan(mut self, plan: std::sync::Arc<QuotaPlan>) -> Self {
        self.plan = Some(plan);
        self
    }

    /// Charged at `unix_secs` (the manager's wall clock): see
    /// [`charged_at`](Self::charged_at).
    #[must_use]
    pub fn with_charged_at(mut self, unix_secs: u64) -> Self {
        self.charged_at = Some(unix_secs);
        self
    }

    /// What this decision charged, for `units`: the [`Charge`] to settle.
    #[inline]
    pub fn charge(&self, units: u32) -> Charge {
        match self.charged_at {
            Some(at) => Charge::new(units).at(at),
            None => Charge::new(units),
        }
    }

    /// The units that could pass now: the smaller of the rate's and the budget's.
    #[inline]
    pub fn remaining(&self) -> Option<u64> {
        let rate = self.rate.map(|r| u64::from(r.remaining));
        let budget = self.budget.map(|b| b.remaining);
        match (rate, budget) {
            (Some(r), Some(b)) => Some(r.min(b)),
            (r, b) => r.or(b),
        }
    }
}

/// A refusal by `by`; `retry_after: None` means the request can never pass.
pub(crate) fn refuse(
    by: Option<QuotaLimit>,
    retry_after: Option<Duration>,
    rate: Option<RateState>,
    budget: Option<BudgetState>,
    plan: Option<&std::sync::Arc<QuotaPlan>>,
) -> QuotaDecision {
    QuotaDecision {
        allowed: false,
        would_deny: false,
        retry_after,
        rate,
        budget,
        plan: plan.cloned(),
        refused_by: by,
        charged_at: None,
    }
}

/// The actual cost of a request, known only once the handler ran (e.g. the tokens an
/// AI call used). The quota stage corrects the charge to it once the response's body
/// has been sent to its end, in the budget period the charge was made in.
///
/// - actix-tenancy: put it in the request extensions, from the handler or from a
///   streamed body before its end (keep a clone of the `HttpRequest` in the stream).
/// - tower-tenancy: put it in the response extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActualCost(pub u32);

/// The quota backend could not answer. The message is for logs only.
#[derive(Debug, Clone)]
pub struct QuotaError(Cow<'static, str>);

impl QuotaError {
    /// A failure with a message for the logs.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quota backend unavailable: {}", self.0)
    }
}

impl std::error::Error for QuotaError {}

/// Checks and consumes quota for tenants.
///
/// [`check`](Self::check) consumes `cost` units when it allows the request;
/// [`settle`](Self::settle) corrects the charge once the real cost is known (AI
/// endpoints learn the token count at the end: the estimate is charged up front and
/// corrected afterwards). A manager that decides without waiting (a local limiter)
/// answers [`Answer::Now`], and the stage creates no future; one that asks a server
/// answers [`Answer::later`] (do the work inside it: see [`Answer`]).
pub trait QuotaManager: Send + Sync + 'static {
    /// Checks `cost` units for `tenant` at the request's moment `at`, consuming them
    /// if allowed. A manager on the system's monotonic clock may read the time from
    /// `at` rather than read the clock again.
    fn check<'a>(
        &'a self,
        tenant: &'a TenantContext,
        cost: u32,
        at: &mut Moment,
    ) -> Answer<'a, Result<QuotaDecision, QuotaError>>;

    /// Corrects `charge` (what a check admitted, [`QuotaDecision::charge`]) to
    /// `actual` units (a refund when fewer), in the budget period the charge was made
    /// in: a period that has ended since is not the current one's to correct.
    fn settle<'a>(
        &'a self,
        tenant: &'a TenantContext,
        charge: Charge,
        actual: u32,
    ) -> Answer<'a, Result<(), QuotaError>>;
}

impl<Q: QuotaManager + ?Sized> QuotaManager for std::sync::Arc<Q> {
    #[inline]
    fn check<'a>(
        &'a self,
        tenant: &'a TenantContext,
        cost: u32,
        at: &mut Moment,
    ) -> Answer<'a, Result<QuotaDecision, QuotaError>> {
        (**self).check(tenant, cost, at)
    }

    #[inline]
    fn settle<'a>(
        &'a self,
        tenant: &'a TenantContext,
        charge: Charge,
        actual: u32,
    ) -> Answer<'a, Result<(), QuotaError>> {
        (**self).settle(tenant, charge, actual)
    }
}
