//! What a quota stage does with a manager's answer, the same in every adapter.

use std::borrow::Cow;

use super::{Charge, QuotaDecision, QuotaError, QuotaFields, QuotaLimit};
use crate::{
    error::{ErrorCode, TenancyError},
    observe::Outcome,
};

/// A quota stage's verdict on a manager's answer: [`judge`] makes it, each adapter
/// carries it out (its framework's response, its audit event). Not
/// `#[non_exhaustive]`: an adapter matches every verdict, and has no arm that could
/// let a new one through by default.
#[derive(Debug)]
pub enum Judgement {
    /// The request goes on: `charge` is settled once it has ended, and `fields` (when
    /// the response carries them) are written on its response. `outcome` and `why` are
    /// the audit event: a pass, or in shadow mode a would-deny.
    Admit {
        /// What the check charged, to settle.
        charge: Charge,
        /// The quota fields of the response, when it carries them.
        fields: Option<QuotaFields>,
        /// [`Outcome::Allowed`], or [`Outcome::WouldDeny`] in shadow mode.
        outcome: Outcome,
        /// The audit event's reason.
        why: &'static str,
    },
    /// The request is refused with `err` (`429 quota_exceeded`, or `503
    /// quota_unavailable`); its response carries `fields`.
    Refuse {
        /// The rejection.
        err: TenancyError,
        /// The quota fields of the refusal (none when the manager could not answer).
        fields: Option<QuotaFields>,
        /// The audit event's reason.
        why: Cow<'static, str>,
    },
}

/// Judges a manager's answer to a check of `cost` units: a refusal when it refused or
/// could not answer (fail closed), an admission otherwise; `headers_on_success` is
/// whether an admitted response carries the quota fields (a shadow would-deny always
/// does).
#[inline]
pub fn judge(
    answer: Result<QuotaDecision, QuotaError>,
    cost: u32,
    headers_on_success: bool,
) -> Judgement {
    let mut decision = match answer {
        Ok(decision) => decision,
        Err(err) => {
            let err = TenancyError::QuotaUnavailable {
                reason: err.to_string().into(),
            };
            let why = err.reason().into_owned().into();
            return Judgement::Refuse {
                err,
                fields: None,
                why,
            };
        }
    };
    if !decision.allowed {
        let why = if decision.retry_after.is_some() {
            "over quota"
        } else {
            "the cost can never be admitted"
        };
        return Judgement::Refuse {
            err: TenancyError::QuotaExceeded {
                retry_after: decision.retry_after,
                limit: decision.refused_by.map(QuotaLimit::as_str),
            },
            fields: Some(QuotaFields::taken(&mut decision, true)),
            why: why.into(),
        };
    }
    let (outcome, why) = if decision.would_deny {
        (
            Outcome::WouldDeny(ErrorCode::QuotaExceeded),
            "shadow: over quota",
        )
    } else {
        (Outcome::Allowed, "within quota")
    };
    let charge = decision.charge(cost);
    Judgement::Admit {
        charge,
        fields: (headers_on_success || decision.would_deny)
            .then(|| QuotaFields::taken(&mut decision, false)),
        outcome,
        why,
    }
}

/// The units a charge is corrected to once its request has ended, or `None` to leave
/// it: `0` when refunds are on and the request was not served (a `5xx`, a failure, a
/// client gone before the end of the body), otherwise the actual cost reported, when
/// it differs from the charge.
#[inline]
pub fn correction(charge: Charge, refund: bool, served: bool, actual: Option<u32>) -> Option<u32> {
    let units = if refund && !served { Some(0) } else { actual };
    units.filter(|u| *u != charge.units())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_manager_that_cannot_answer_is_a_refusal() {
        let j = judge(Err(QuotaError::new("down")), 1, true);
        assert!(matches!(
            j,
            Judgement::Refuse {
                err: TenancyError::QuotaUnavailable { .. },
                fields: None,
                ..
            }
        ));
    }

    #[test]
    fn a_refusal_says_whether_waiting_helps() {
        let wait = QuotaDecision::refuse(QuotaLimit::Rate, Some(Duration::from_secs(1)));
        let Judgement::Refuse { why, fields, .. } = judge(Ok(wait), 1, false) else {
            panic!("refused")
        };
        assert_eq!(
            (why.as_ref(), fields.unwrap().retry_after),
            ("over quota", Some(1))
        );
        let never = QuotaDecision::refuse(QuotaLimit::Rate, None);
        let Judgement::Refuse { why, .. } = judge(Ok(never), 9, false) else {
            panic!("refused")
        };
        assert_eq!(why, "the cost can never be admitted");
    }

    #[test]
    fn an_admission_carries_fields_when_asked_and_always_in_shadow() {
        let Judgement::Admit {
            fields, outcome, ..
        } = judge(Ok(QuotaDecision::allow()), 1, false)
        else {
            panic!("admitted")
        };
        assert_eq!((fields, outcome), (None, Outcome::Allowed));
        let mut shadow = QuotaDecision::allow();
        shadow.would_deny = true;
        let Judgement::Admit {
            fields,
            outcome,
            why,
            ..
        } = judge(Ok(shadow), 1, false)
        else {
            panic!("admitted")
        };
        assert!(fields.unwrap().shadow);
        assert_eq!(
            (outcome, why),
            (
                Outcome::WouldDeny(ErrorCode::QuotaExceeded),
                "shadow: over quota"
            )
        );
    }

    #[test]
    fn a_correction_refunds_what_was_not_served_and_else_the_actual_cost() {
        let c = Charge::new(3);
        assert_eq!(correction(c, true, false, Some(7)), Some(0));
        assert_eq!(correction(c, false, false, Some(7)), Some(7));
        assert_eq!(correction(c, true, true, Some(7)), Some(7));
        assert_eq!(correction(c, true, true, Some(3)), None);
        assert_eq!(correction(c, true, true, None), None);
    }
}
