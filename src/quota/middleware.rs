use std::{fmt, sync::Arc, time::Duration};

use actix_web::{
    dev::ServiceRequest,
    http::header::{HeaderMap, HeaderName, HeaderValue},
};

use super::{QuotaDecision, QuotaError, QuotaManager};
use crate::{
    error::{retry_after_secs, ConfigError, TenancyError},
    observe::{emit, AuditEvent, AuditSink, Outcome, Stage, Timer, TracingAudit},
    tenant::TenantContext,
};

/// `X-Quota-Remaining`: units that could pass now (rate and budgets).
pub const QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");
/// `X-Quota-Shadow: would-deny`, on requests a shadow plan would have refused.
pub const QUOTA_SHADOW: HeaderName = HeaderName::from_static("x-quota-shadow");
/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How many units a request costs.
///
/// A closure `Fn(&ServiceRequest) -> u32` is an estimator; [`HeaderCost`] reads a
/// header. Returning an error rejects the request (`400 cost_invalid`): a cost the
/// client sends is input like any other, and a bad one is never a credit.
pub trait CostEstimator: Send + Sync + 'static {
    /// The cost of `req`.
    fn estimate(&self, req: &ServiceRequest) -> Result<u32, TenancyError>;
}

impl<F> CostEstimator for F
where
    F: Fn(&ServiceRequest) -> u32 + Send + Sync + 'static,
{
    fn estimate(&self, req: &ServiceRequest) -> Result<u32, TenancyError> {
        Ok(self(req))
    }
}

/// A cost read from a header such as `X-Token-Count`: a decimal integer from 0 to
/// `max`. A missing header costs `default`; a negative, non-numeric, repeated or
/// larger-than-`max` value is a `400 cost_invalid`.
///
/// ```
/// use actix_tenancy::quota::HeaderCost;
///
/// let tokens = HeaderCost::new("x-token-count").unwrap().max(100_000).default_cost(1);
/// ```
#[derive(Debug, Clone)]
pub struct HeaderCost {
    name: HeaderName,
    max: u32,
    default: u32,
}

impl HeaderCost {
    /// Reads `name`; at most 1,000,000 units, 1 when absent.
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            name: HeaderName::try_from(name)
                .map_err(|_| ConfigError::InvalidHeaderName(name.to_owned()))?,
            max: 1_000_000,
            default: 1,
        })
    }

    /// The largest cost accepted.
    #[must_use]
    pub fn max(mut self, max: u32) -> Self {
        self.max = max;
        self
    }

    /// The cost of a request without the header.
    #[must_use]
    pub fn default_cost(mut self, cost: u32) -> Self {
        self.default = cost;
        self
    }
}

impl CostEstimator for HeaderCost {
    fn estimate(&self, req: &ServiceRequest) -> Result<u32, TenancyError> {
        let mut values = req.headers().get_all(&self.name);
        let Some(value) = values.next() else {
            return Ok(self.default);
        };
        if values.next().is_some() {
            return Err(bad_cost("the cost header is repeated"));
        }
        let text = value
            .to_str()
            .map_err(|_| bad_cost("the cost is not ASCII"))?;
        parse_cost(text, self.max)
    }
}

fn bad_cost(why: &'static str) -> TenancyError {
    TenancyError::CostInvalid { reason: why.into() }
}

/// A decimal integer from 0 to `max`, nothing else (no sign, no spaces, no exponent).
fn parse_cost(text: &str, max: u32) -> Result<u32, TenancyError> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_cost("the cost is not a non-negative integer"));
    }
    let cost: u64 = text
        .parse()
        .map_err(|_| bad_cost("the cost is not a number"))?;
    u32::try_from(cost)
        .ok()
        .filter(|c| *c <= max)
        .ok_or_else(|| bad_cost("the cost is larger than allowed"))
}

/// Whether the form-urlencoded `raw` decodes to `name`.
fn decodes_to(raw: &str, name: &str) -> bool {
    let hex = |b: u8| char::from(b).to_digit(16);
    let raw = raw.as_bytes();
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escaped = match raw[i..] {
            [b'%', hi, lo, ..] => hex(hi).zip(hex(lo)).map(|(hi, lo)| hi * 16 + lo),
            _ => None,
        };
        match (raw[i], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte as u8);
                i += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                i += 1;
            }
            (other, None) => {
                decoded.push(other);
                i += 1;
            }
        }
    }
    decoded == name.as_bytes()
}

/// A cost read from a query parameter such as `?max_tokens=500`: a decimal integer
/// from 0 to `max`. A missing parameter costs `default`; an empty, negative,
/// non-numeric, percent-encoded (value or name), repeated or larger-than-`max` value is a
/// `400 cost_invalid`.
///
/// ```
/// use actix_tenancy::quota::QueryCost;
///
/// let tokens = QueryCost::new("max_tokens").max(32_000).default_cost(1);
/// ```
#[derive(Debug, Clone)]
pub struct QueryCost {
    name: String,
    max: u32,
    default: u32,
}

impl QueryCost {
    /// Reads the query parameter `name`; at most 1,000,000 units, 1 when absent.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max: 1_000_000,
            default: 1,
        }
    }

    /// The largest cost accepted.
    #[must_use]
    pub fn max(mut self, max: u32) -> Self {
        self.max = max;
        self
    }

    /// The cost of a request without the parameter.
    #[must_use]
    pub fn default_cost(mut self, cost: u32) -> Self {
        self.default = cost;
        self
    }
}

impl CostEstimator for QueryCost {
    fn estimate(&self, req: &ServiceRequest) -> Result<u32, TenancyError> {
        let mut found = None;
        for pair in req.query_string().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key != self.name {
                // `max%5Ftokens` is `max_tokens` to the handler's `web::Query`: never let
                // an encoded name dodge the charge.
                if key.contains(['%', '+']) && decodes_to(key, &self.name) {
                    return Err(bad_cost("the cost parameter's name is encoded"));
                }
                continue;
            }
            if found.is_some() {
                return Err(bad_cost("the cost parameter is repeated"));
            }
            found = Some(value);
        }
        match found {
            None => Ok(self.default),
            Some(text) => parse_cost(text, self.max),
        }
    }
}

/// The quota stage. Give it to [`Tenancy::builder().quota(...)`](crate::TenancyBuilder::quota);
/// it runs after resolution (and policy), on every request that has a tenant.
///
/// A request with no tenant (an exempt path, or `allow_missing`) is not charged.
/// `TenantQuota` is also an actix `Transform` of its own: wrapped *inside* a
/// [`TenantResolver`](crate::TenantResolver) (registered before it with `.wrap()`), it
/// reads the tenant the resolver settled. Wrapped where no resolver ran, it answers
/// every request with `500 internal_error` and logs the misconfiguration: it never
/// lets a request through uncounted. Standalone, it answers rejections with
/// [`ProblemJson`](crate::ProblemJson); [`Tenancy`](crate::Tenancy) shares one
/// responder across stages.
#[derive(Clone)]
#[must_use]
pub struct TenantQuota {
    manager: Arc<dyn QuotaManager>,
    estimator: Arc<dyn CostEstimator>,
    headers_on_success: bool,
    refund_server_errors: bool,
    audit: Arc<dyn AuditSink>,
    per_tenant_metrics: bool,
}

impl fmt::Debug for TenantQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantQuota")
            .field("headers_on_success", &self.headers_on_success)
            .field("refund_server_errors", &self.refund_server_errors)
            .finish_non_exhaustive()
    }
}

impl TenantQuota {
    /// The stage for `manager`: one unit per request, quota headers on every response.
    pub fn new(manager: impl QuotaManager) -> Self {
        Self {
            manager: Arc::new(manager),
            estimator: Arc::new(|_: &ServiceRequest| 1),
            headers_on_success: true,
            refund_server_errors: false,
            audit: Arc::new(TracingAudit),
            per_tenant_metrics: false,
        }
    }

    /// How much a request costs (default: 1).
    pub fn cost(mut self, estimator: impl CostEstimator) -> Self {
        self.estimator = Arc::new(estimator);
        self
    }

    /// Whether allowed responses carry `X-Quota-Remaining` and the `RateLimit` fields
    /// (default: yes). Refusals always carry them.
    pub fn headers_on_success(mut self, on: bool) -> Self {
        self.headers_on_success = on;
        self
    }

    /// Refund the charged units when the handler answers with a 5xx, or when the
    /// client goes away before the response is ready (default: no). Budgets get the
    /// units back; a local rate limiter cannot un-admit a request.
    pub fn refund_server_errors(mut self, on: bool) -> Self {
        self.refund_server_errors = on;
        self
    }

    /// Where decisions are reported (default: [`TracingAudit`]).
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Arc::new(sink);
        self
    }

    /// Adds a `tenant` label to the decision counter (feature `metrics`).
    pub fn per_tenant_metrics(mut self, on: bool) -> Self {
        self.per_tenant_metrics = on;
        self
    }

    pub(crate) fn into_stage(self) -> Arc<QuotaStage> {
        Arc::new(QuotaStage(self))
    }
}

/// The actual cost of a request, known only once the handler ran (e.g. the tokens an
/// AI call used). Put it in the request extensions from the handler; the quota stage
/// corrects the charge after the response:
///
/// ```
/// use actix_tenancy::quota::ActualCost;
/// use actix_web::{HttpMessage, HttpRequest, HttpResponse};
///
/// async fn complete(req: HttpRequest) -> HttpResponse {
///     let used_tokens = 734; // from the model's answer
///     req.extensions_mut().insert(ActualCost(used_tokens));
///     HttpResponse::Ok().finish()
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActualCost(pub u32);

pub(crate) struct QuotaStage(TenantQuota);

/// What to do once the response is ready: the headers to add, and the charge to
/// correct. Small (the headers, when there are any, are boxed), so the response
/// future stays small to move and a pass allocates nothing. Dropped unapplied (the
/// client went away before the response), it refunds when refunds are on.
pub(crate) struct QuotaAfter(Option<After>);

impl Drop for QuotaAfter {
    fn drop(&mut self) {
        let Some(after) = self.0.take() else { return };
        if after.stage.0.refund_server_errors {
            tracing::debug!(target: "actix_tenancy::quota", "request abandoned: refunding");
            correct(after.stage, after.tenant, after.charged, 0);
        }
    }
}

struct After {
    stage: Arc<QuotaStage>,
    tenant: Arc<TenantContext>,
    charged: u32,
    headers: Option<Box<QuotaHeaders>>,
}

/// The quota fields of one response.
pub(crate) struct QuotaHeaders {
    remaining: Option<u64>,
    policy: Option<HeaderValue>,
    state: Option<HeaderValue>,
    retry_after: Option<u64>,
    shadow: bool,
}

impl QuotaHeaders {
    /// Writes the fields into `map`, replacing any the responder set.
    pub(crate) fn write(self, map: &mut HeaderMap) {
        if let Some(remaining) = self.remaining {
            map.insert(QUOTA_REMAINING, HeaderValue::from(remaining));
        }
        if let Some(policy) = self.policy {
            map.insert(RATELIMIT_POLICY, policy);
        }
        if let Some(state) = self.state {
            map.insert(RATELIMIT, state);
        }
        if let Some(secs) = self.retry_after {
            map.insert(
                actix_web::http::header::RETRY_AFTER,
                HeaderValue::from(secs),
            );
        }
        if self.shadow {
            map.insert(QUOTA_SHADOW, HeaderValue::from_static("would-deny"));
        }
    }
}

/// Whether the quota decided, or must wait for the manager.
pub(crate) enum QuotaStep {
    /// Go on, and apply this once the response is ready.
    Pass(Option<QuotaAfter>),
    /// Refuse, with these headers on the refusal.
    Refuse(TenancyError, Option<QuotaHeaders>),
    /// The manager must be awaited with this cost.
    Wait(u32),
}

impl QuotaStage {
    /// Estimates the cost and checks without waiting when the manager can.
    pub(crate) fn prepare(
        self: &Arc<Self>,
        req: &ServiceRequest,
        tenant: &Arc<TenantContext>,
    ) -> QuotaStep {
        let timer = Timer::start();
        let cost = match self.0.estimator.estimate(req) {
            Ok(cost) => cost,
            Err(err) => {
                self.report(req, tenant, Outcome::Rejected(err.code()), &err.reason());
                return QuotaStep::Refuse(err, None);
            }
        };
        match self.0.manager.check_now(tenant, cost) {
            Some(answer) => {
                let step = self.decided(req, tenant, cost, answer);
                timer.stop(Stage::Quota);
                step
            }
            None => QuotaStep::Wait(cost),
        }
    }

    /// Asks the manager, waiting.
    pub(crate) async fn check(
        self: &Arc<Self>,
        req: &ServiceRequest,
        tenant: &Arc<TenantContext>,
        cost: u32,
    ) -> QuotaStep {
        let timer = Timer::start();
        let answer = self.0.manager.check(tenant, cost).await;
        let step = self.decided(req, tenant, cost, answer);
        timer.stop(Stage::Quota);
        step
    }

    fn decided(
        self: &Arc<Self>,
        req: &ServiceRequest,
        tenant: &Arc<TenantContext>,
        cost: u32,
        answer: Result<QuotaDecision, QuotaError>,
    ) -> QuotaStep {
        let decision = match answer {
            Ok(decision) => decision,
            Err(err) => {
                let err = TenancyError::QuotaUnavailable {
                    reason: err.to_string().into(),
                };
                self.report(req, tenant, Outcome::Rejected(err.code()), &err.reason());
                return QuotaStep::Refuse(err, None);
            }
        };
        if !decision.allowed {
            let err = TenancyError::QuotaExceeded {
                retry_after: decision.retry_after,
            };
            let why = if decision.retry_after.is_some() {
                "over quota"
            } else {
                "the cost can never be admitted"
            };
            self.report(req, tenant, Outcome::Rejected(err.code()), why);
            return QuotaStep::Refuse(err, Some(headers(&decision, true)));
        }
        if decision.would_deny {
            let code = TenancyError::QuotaExceeded { retry_after: None }.code();
            self.report(req, tenant, Outcome::WouldDeny(code), "shadow: over quota");
        } else {
            self.report(req, tenant, Outcome::Allowed, "within quota");
        }
        let headers = (self.0.headers_on_success || decision.would_deny)
            .then(|| Box::new(headers(&decision, false)));
        QuotaStep::Pass(Some(QuotaAfter(Some(After {
            stage: Arc::clone(self),
            tenant: Arc::clone(tenant),
            charged: cost,
            headers,
        }))))
    }

    fn report(&self, req: &ServiceRequest, tenant: &TenantContext, outcome: Outcome, why: &str) {
        emit(
            &*self.0.audit,
            self.0.per_tenant_metrics,
            &AuditEvent {
                stage: Stage::Quota,
                outcome,
                tenant: Some(tenant.id()),
                tier: Some(tenant.tier()),
                source: Some(tenant.source()),
                method: req.method(),
                path: req.match_info().as_str(),
                reason: why,
                rule: None,
                policy_version: None,
            },
        );
    }
}

impl QuotaAfter {
    /// Adds the headers and corrects the charge: to the handler's [`ActualCost`], or
    /// to zero for a 5xx when refunds are on.
    pub(crate) fn apply(
        mut self,
        res: &mut actix_web::HttpResponse<impl Sized>,
        actual: Option<u32>,
    ) {
        let Some(after) = self.0.take() else { return };
        let After {
            stage,
            tenant,
            charged,
            headers,
        } = after;
        if let Some(headers) = headers {
            headers.write(res.headers_mut());
        }
        let actual = if stage.0.refund_server_errors && res.status().is_server_error() {
            Some(0)
        } else {
            actual
        };
        if let Some(actual) = actual.filter(|a| *a != charged) {
            correct(stage, tenant, charged, actual);
        }
    }
}

/// Corrects a charge, without waiting when the manager can.
fn correct(stage: Arc<QuotaStage>, tenant: Arc<TenantContext>, charged: u32, actual: u32) {
    if stage
        .0
        .manager
        .settle_now(&tenant, charged, actual)
        .is_some()
    {
        return;
    }
    actix_web::rt::spawn(async move {
        if let Err(err) = stage.0.manager.settle(&tenant, charged, actual).await {
            tracing::warn!(target: "actix_tenancy::quota", error = %err, "quota correction failed");
        }
    });
}

fn secs(d: Duration) -> u64 {
    if d.is_zero() {
        0
    } else {
        retry_after_secs(d)
    }
}

/// Appends `n` in decimal.
fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

fn push_item(buf: &mut Vec<u8>, name: &str, remaining: u64, reset: Duration) {
    if !buf.is_empty() {
        buf.extend_from_slice(b", ");
    }
    buf.push(b'"');
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\";r=");
    push_u64(buf, remaining);
    buf.extend_from_slice(b";t=");
    push_u64(buf, secs(reset));
}

/// The quota fields for a decision: `RateLimit-Policy` comes precomputed with the
/// plan; `RateLimit` is written without the formatting machinery.
fn headers(d: &QuotaDecision, refused: bool) -> QuotaHeaders {
    let mut state = Vec::with_capacity(64);
    if let Some(r) = &d.rate {
        push_item(&mut state, "rate", u64::from(r.remaining), r.reset);
    }
    if let Some(b) = &d.budget {
        push_item(&mut state, b.period.as_str(), b.remaining, b.reset);
    }
    let state = (!state.is_empty())
        .then(|| HeaderValue::from_maybe_shared(actix_web::web::Bytes::from(state)).ok())
        .flatten();
    QuotaHeaders {
        remaining: if refused { Some(0) } else { d.remaining() },
        policy: d.plan.as_ref().and_then(|p| p.policy_header().cloned()),
        state,
        // On the refusal whatever the responder: a custom body must not lose it.
        retry_after: d.retry_after.filter(|_| refused).map(retry_after_secs),
        shadow: d.would_deny,
    }
}

crate::pipeline::transform!(
    TenantQuota => |stage| Arc::new(crate::pipeline::Pipeline {
        quota: Some(stage.clone().into_stage()),
        ..crate::pipeline::Pipeline::standalone()
    })
);
