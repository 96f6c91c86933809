//! The quota fields of a response: `X-Quota-Remaining`, `RateLimit-Policy`,
//! `RateLimit`, `Retry-After` and `X-Quota-Shadow`, the core's
//! [`QuotaFields`] written into actix's header map.

use actix_web::{
    http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER},
    web::Bytes,
};

use super::{QuotaFields, QuotaPlan};
use crate::pipeline::Fields;

/// `X-Quota-Remaining`: units that could pass now (rate and budgets).
pub const QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");
/// `X-Quota-Shadow: would-deny`, on requests a shadow plan would have refused.
pub const QUOTA_SHADOW: HeaderName = HeaderName::from_static("x-quota-shadow");
/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The quota fields of one response: the core's text, written into actix's map.
pub(crate) struct QuotaHeaders(QuotaFields);

impl Fields for QuotaHeaders {
    fn write(self: Box<Self>, map: &mut HeaderMap) {
        let f = self.0;
        if let Some(remaining) = f.remaining {
            map.insert(QUOTA_REMAINING, HeaderValue::from(remaining));
        }
        if let Some(policy) = f.plan.as_deref().and_then(QuotaPlan::policy_header) {
            map.insert(RATELIMIT_POLICY, policy.clone());
        }
        if let Some(state) = f
            .state
            .and_then(|s| HeaderValue::from_maybe_shared(Bytes::from(s)).ok())
        {
            map.insert(RATELIMIT, state);
        }
        if let Some(secs) = f.retry_after {
            map.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if f.shadow {
            map.insert(QUOTA_SHADOW, HeaderValue::from_static("would-deny"));
        }
    }
}

/// The quota fields, to write on actix's response.
pub(super) fn headers(fields: QuotaFields) -> QuotaHeaders {
    QuotaHeaders(fields)
}
