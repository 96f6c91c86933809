//! The quota fields of a response, as text: written without the formatting machinery,
//! into whichever header map the adapter's framework has.

use std::{sync::Arc, time::Duration};

use super::{QuotaDecision, QuotaPlan};
use crate::error::retry_after_secs;

/// The quota fields of one response, for an adapter to write:
///
/// | field | header |
/// |---|---|
/// | [`remaining`](Self::remaining) | `X-Quota-Remaining` |
/// | [`plan`](Self::plan) | `RateLimit-Policy` ([`QuotaPlan::policy`]) |
/// | [`state`](Self::state) | `RateLimit` |
/// | [`retry_after`](Self::retry_after) | `Retry-After` (seconds) |
/// | [`shadow`](Self::shadow) | `X-Quota-Shadow: would-deny` |
///
/// The `RateLimit` fields are those of draft-ietf-httpapi-ratelimit-headers-10.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaFields {
    /// Units that could pass now (`0` on a refusal).
    pub remaining: Option<u64>,
    /// The plan that decided: its precomputed `RateLimit-Policy`.
    pub plan: Option<Arc<QuotaPlan>>,
    /// The `RateLimit` field: `"rate";r=<remaining>;t=<seconds to reset>`, then the
    /// tightest budget's item. ASCII, kept as bytes: the header value each adapter
    /// makes of it checks them once.
    pub state: Option<Vec<u8>>,
    /// Seconds to wait, on a refusal that waiting can cure.
    pub retry_after: Option<u64>,
    /// The plan is in shadow mode and would have refused.
    pub shadow: bool,
}

impl QuotaFields {
    /// The fields for `decision`; `refused` when the request is answered with the
    /// refusal (its `Retry-After` is sent, and `X-Quota-Remaining: 0`).
    pub fn of(decision: &QuotaDecision, refused: bool) -> Self {
        let mut fields = Self::without_plan(decision, refused);
        fields.plan = decision.plan.clone();
        fields
    }

    /// [`of`](Self::of), taking the decision's plan rather than sharing it.
    #[inline]
    pub(crate) fn taken(decision: &mut QuotaDecision, refused: bool) -> Self {
        let mut fields = Self::without_plan(decision, refused);
        fields.plan = decision.plan.take();
        fields
    }

    #[inline]
    fn without_plan(decision: &QuotaDecision, refused: bool) -> Self {
        let mut state = Vec::new();
        if decision.rate.is_some() || decision.budget.is_some() {
            state.reserve(64);
        }
        if let Some(r) = &decision.rate {
            push_item(&mut state, "rate", u64::from(r.remaining), r.reset);
        }
        if let Some(b) = &decision.budget {
            push_item(&mut state, b.period.as_str(), b.remaining, b.reset);
        }
        Self {
            remaining: if refused {
                Some(0)
            } else {
                decision.remaining()
            },
            plan: None,
            state: (!state.is_empty()).then_some(state),
            // On the refusal whatever the responder: a custom body must not lose it.
            retry_after: decision
                .retry_after
                .filter(|_| refused)
                .map(retry_after_secs),
            shadow: decision.would_deny,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{BudgetState, Period, QuotaLimit, RateState};

    #[test]
    fn a_refusal_says_zero_remaining_and_when_to_retry() {
        let d = QuotaDecision::refuse(QuotaLimit::Rate, Some(Duration::from_millis(1_200)))
            .with_rate(RateState {
                limit: 5,
                remaining: 0,
                window: Duration::from_secs(1),
                reset: Duration::from_millis(200),
            })
            .with_budget(BudgetState {
                limit: 100,
                remaining: 1_234_567,
                period: Period::Day,
                reset: Duration::from_secs(3_600),
            });
        let f = QuotaFields::of(&d, true);
        assert_eq!(f.remaining, Some(0));
        assert_eq!(f.retry_after, Some(2));
        assert_eq!(
            f.state.as_deref(),
            Some(&b"\"rate\";r=0;t=1, \"day\";r=1234567;t=3600"[..])
        );
        assert!(!f.shadow);
        // Admitted: no Retry-After, the smaller remainder.
        let f = QuotaFields::of(&d, false);
        assert_eq!((f.remaining, f.retry_after), (Some(0), None));
    }

    #[test]
    fn an_unlimited_answer_has_no_state() {
        let f = QuotaFields::of(&QuotaDecision::allow(), false);
        assert_eq!(
            f,
            QuotaFields {
                remaining: None,
                plan: None,
                state: None,
                retry_after: None,
                shadow: false,
            }
        );
    }
}
