//! What a policy stage does with an evaluator's answer, and with the capabilities a
//! request asks for by header: the same in every adapter.

use super::{Decision, PolicyError};
use crate::error::{ConfigError, TenancyError};

/// The most capability headers a stage reads.
pub const MAX_CAPABILITY_HEADERS: usize = 8;

/// The longest capability value read from a header.
const MAX_CAPABILITY_LEN: usize = 128;

/// Judges an evaluator's answer: `Ok` lets the request go on; a denial is `403
/// policy_denied`, or `403 capability_denied` when the refused capability is of a kind
/// the stage reads from a header (`header_kinds`); an error, a timeout or a panic is
/// `503 policy_unavailable` (fail closed).
#[inline]
pub fn judge<'k>(
    answer: Result<&Decision, &PolicyError>,
    header_kinds: impl IntoIterator<Item = &'k &'static str>,
) -> Result<(), TenancyError> {
    match answer {
        Ok(d) if d.allowed => Ok(()),
        Ok(d) => {
            let kind = d
                .refused
                .as_deref()
                .and_then(|r| r.split_once(':'))
                .and_then(|(kind, _)| header_kinds.into_iter().find(|k| **k == kind));
            Err(match kind {
                Some(capability) => TenancyError::CapabilityDenied {
                    capability,
                    reason: d.reason.clone(),
                },
                None => TenancyError::PolicyDenied {
                    reason: d.reason.clone(),
                },
            })
        }
        Err(e) => Err(TenancyError::PolicyUnavailable {
            reason: e.to_string().into(),
        }),
    }
}

/// The refusal of a request that has no tenant (`allow_missing` let it through): no
/// tenant, no permission.
pub fn no_tenant() -> TenancyError {
    TenancyError::PolicyDenied {
        reason: "no tenant: policy denies by default".into(),
    }
}

/// The capability a request asks for in the header `name` (its `values`, as sent),
/// as `kind:value`; `None` without the header. Two values, a value that is not
/// visible ASCII, an empty one or one over 128 bytes are refused (`403
/// capability_denied`), never decided by one of them alone.
pub fn asked_capability<'v>(
    kind: &'static str,
    name: &str,
    mut values: impl Iterator<Item = &'v [u8]>,
) -> Result<Option<String>, TenancyError> {
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = || TenancyError::CapabilityDenied {
        capability: kind,
        reason: format!("malformed or repeated {name} header").into(),
    };
    if values.next().is_some()
        || value.is_empty()
        || value.len() > MAX_CAPABILITY_LEN
        || !value.iter().all(u8::is_ascii_graphic)
    {
        return Err(bad());
    }
    let value = std::str::from_utf8(value).map_err(|_| bad())?;
    Ok(Some(format!("{kind}:{value}")))
}

/// Checks a stage's capability headers: at most eight; a kind is 1 to 32 of `a-z`,
/// `0-9`, `-` and `_`; each kind and each header (`names`, lowercase) once.
pub fn check_capability_headers<'n>(
    list: impl IntoIterator<Item = (&'static str, &'n str)>,
) -> Result<(), ConfigError> {
    let list: Vec<_> = list.into_iter().collect();
    if list.len() > MAX_CAPABILITY_HEADERS {
        return Err(ConfigError::invalid(
            "capability headers",
            "",
            "at most eight",
        ));
    }
    for (i, (kind, name)) in list.iter().enumerate() {
        let well_formed = !kind.is_empty()
            && kind.len() <= 32
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(ConfigError::invalid(
                "capability kind",
                *kind,
                "1 to 32 of a-z, 0-9, '-' and '_'",
            ));
        }
        for (other, other_name) in &list[..i] {
            if other == kind {
                return Err(ConfigError::Duplicate {
                    what: "capability kind",
                    value: (*kind).to_owned(),
                });
            }
            if other_name == name {
                return Err(ConfigError::Conflict(
                    format!("the {other} header and the {kind} header are the same header").into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn a_denial_of_a_header_kind_is_a_capability_denial() {
        let d = Decision::deny("no such model").with_refused("model:gpt-9");
        assert!(matches!(
            judge(Ok(&d), &["model"]),
            Err(TenancyError::CapabilityDenied {
                capability: "model",
                ..
            })
        ));
        assert!(matches!(
            judge(Ok(&d), &["tool"]),
            Err(TenancyError::PolicyDenied { .. })
        ));
        assert!(judge(Ok(&Decision::allow("fine")), &[]).is_ok());
        let e = PolicyError::new("down");
        assert_eq!(
            judge(Err(&e), &[]).unwrap_err().code(),
            ErrorCode::PolicyUnavailable
        );
    }

    #[test]
    fn a_capability_header_is_one_visible_value() {
        let one = |v: &'static [u8]| asked_capability("model", "x-model", [v].into_iter());
        assert_eq!(one(b"gpt-4o").unwrap().as_deref(), Some("model:gpt-4o"));
        for bad in [&b""[..], b"gpt 4o", b"gpt\xff", &[b'a'; 129]] {
            assert!(one(bad).is_err(), "{bad:?}");
        }
        let two = asked_capability("model", "x-model", [&b"a"[..], b"b"].into_iter());
        assert!(two.is_err());
        assert!(matches!(
            asked_capability("model", "x-model", std::iter::empty()),
            Ok(None)
        ));
    }

    #[test]
    fn capability_headers_are_checked() {
        assert!(check_capability_headers([("model", "x-model"), ("tool", "x-tool")]).is_ok());
        assert!(check_capability_headers([("Model", "x-model")]).is_err());
        assert!(check_capability_headers([("model", "x-a"), ("model", "x-b")]).is_err());
        assert!(check_capability_headers([("model", "x-a"), ("tool", "x-a")]).is_err());
        let nine = (0..9).map(|_| ("k", "x"));
        assert!(check_capability_headers(nine).is_err());
    }
}
