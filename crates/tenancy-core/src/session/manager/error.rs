//! [`SessionError`]: why a session operation failed.

use std::{borrow::Cow, fmt};

use crate::session::{keys::KeyError, RevocationError};

/// Why a session operation failed. The `TenantAuth` stage (actix-tenancy's and tower-tenancy's) answers
/// `401 unauthenticated` for most, `503 auth_unavailable` for
/// [`Store`](Self::Store) and [`Unavailable`](Self::Unavailable), `403
/// tenant_forbidden` for [`Conflict`](Self::Conflict),
/// [`OtherAudience`](Self::OtherAudience) and [`Unbound`](Self::Unbound); the reason
/// is for logs only.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SessionError {
    /// The token is malformed, wrongly signed, expired, not yet valid, for another
    /// issuer or audience, of the wrong type, or too large.
    Invalid(Cow<'static, str>),
    /// The token was revoked.
    Revoked,
    /// A refresh token was presented twice: its family is now revoked.
    RefreshReused,
    /// The revocation store could not answer; fails closed (`503 auth_unavailable`).
    Store(RevocationError),
    /// A valid token (signature, audience, expiry, claims) from an identity provider
    /// trusted for some tenant names a tenant bound to another provider. Answered
    /// `403 tenant_forbidden`, as an unknown or suspended tenant is (a token holder
    /// must not learn which ids are tenants); audited with this reason.
    Conflict,
    /// A token from the identity provider of the tenant it names, valid for an
    /// audience of another tenant bound to that provider but not for the named
    /// tenant's. Answered `403 tenant_forbidden`, as an unknown or suspended tenant
    /// is; audited with this reason.
    OtherAudience,
    /// A valid token from an identity provider trusted for some tenant names a
    /// tenant bound to no provider: an id no tenant has, or a tenant without a
    /// binding. Answered `403 tenant_forbidden`, the same as an unknown or suspended
    /// tenant; audited with this reason.
    Unbound,
    /// No keys are held to verify with (the identity provider has not answered yet);
    /// fails closed (`503 auth_unavailable`).
    Unavailable(Cow<'static, str>),
    /// No key can sign, or signing failed.
    Key(KeyError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(why) => write!(f, "invalid token: {why}"),
            Self::Revoked => f.write_str("token revoked"),
            Self::RefreshReused => f.write_str("refresh token reused: its whole family is revoked"),
            Self::Store(e) => e.fmt(f),
            Self::Conflict => f.write_str(
                "the token's issuer is not the identity provider of the tenant it names",
            ),
            Self::OtherAudience => f.write_str(
                "the token is for an audience of its identity provider that the tenant it names does not accept",
            ),
            Self::Unbound => f.write_str(
                "the token names a tenant bound to no identity provider (unknown, or without a binding)",
            ),
            Self::Unavailable(why) => write!(f, "no keys to verify with: {why}"),
            Self::Key(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SessionError {}

pub(super) fn invalid(why: &'static str) -> SessionError {
    SessionError::Invalid(Cow::Borrowed(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_says_what_went_wrong_for_the_logs() {
        let cases = [
            (invalid("expired"), "invalid token: expired"),
            (SessionError::Revoked, "token revoked"),
            (
                SessionError::RefreshReused,
                "refresh token reused: its whole family is revoked",
            ),
            (
                SessionError::Store(RevocationError::new("timed out")),
                "revocation store unavailable: timed out",
            ),
            (
                SessionError::Unavailable(Cow::Borrowed("not fetched")),
                "no keys to verify with: not fetched",
            ),
            (
                SessionError::Key(KeyError::new("no signing key")),
                "key: no signing key",
            ),
        ];
        for (error, said) in cases {
            assert_eq!(error.to_string(), said);
        }
        for refusal in [
            SessionError::Conflict,
            SessionError::OtherAudience,
            SessionError::Unbound,
        ] {
            let said = refusal.to_string();
            assert!(said.starts_with("the token"), "{said}");
        }
        assert!(matches!(
            invalid("x"),
            SessionError::Invalid(Cow::Borrowed("x"))
        ));
    }
}
