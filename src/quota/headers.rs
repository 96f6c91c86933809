//! The quota fields of a response: `X-Quota-Remaining`, `RateLimit-Policy`,
//! `RateLimit`, `Retry-After` and `X-Quota-Shadow`, written without the formatting
//! machinery.

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use tenancy_core::error::retry_after_secs;

use super::QuotaDecision;
use crate::pipeline::Fields;

/// `X-Quota-Remaining`: units that could pass now (rate and budgets).
pub const QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");
/// `X-Quota-Shadow: would-deny`, on requests a shadow plan would have refused.
pub const QUOTA_SHADOW: HeaderName = HeaderName::from_static("x-quota-shadow");
/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The quota fields of one response.
pub(crate) struct QuotaHeaders {
    remaining: Option<u64>,
    policy: Option<HeaderValue>,
    state: Option<HeaderValue>,
    retry_after: Option<u64>,
    shadow: bool,
}

impl Fields for QuotaHeaders {
    fn write(self: Box<Self>, map: &mut HeaderMap) {
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
pub(super) fn headers(d: &QuotaDecision, refused: bool) -> QuotaHeaders {
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
