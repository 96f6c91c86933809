//! The tenant identity: [`TenantId`] and its rule.

use std::{borrow::Borrow, fmt, ops::Deref, sync::Arc};

/// The longest id the default rule accepts, in bytes.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// The longest id any rule may accept, in bytes, custom validators included.
pub(crate) const HARD_MAX_TENANT_ID_LEN: usize = 255;

/// A validated tenant id.
///
/// The default rule ([`TenantId::parse`]) accepts 1 to 64 bytes of lowercase ASCII
/// letters, digits, `-` and `_`, starting with a letter or a digit. Everything else is
/// rejected, not normalised: `Acme`, ` acme`, `acme\0` and `ａｃｍｅ` are all invalid, so
/// two spellings of one tenant can never reach two limiters or two policy entries.
///
/// A [`TenantIdRule`] installs another rule; it can narrow or widen the default within
/// a hard floor that no rule can lift (1 to 255 bytes of printable ASCII, no spaces).
///
/// Cloning is a reference-count increment.
///
/// ```
/// use tenancy_core::TenantId;
///
/// let id = TenantId::parse("acme-eu_2").unwrap();
/// assert_eq!(id.as_str(), "acme-eu_2");
/// assert!(TenantId::parse("Acme").is_err());
/// assert!(TenantId::parse("../x").is_err());
/// assert!(TenantId::parse(&"a".repeat(65)).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validates `raw` with the default rule.
    pub fn parse(raw: &str) -> Result<Self, InvalidTenantId> {
        TenantIdRule::Default.parse(raw)
    }

    /// The id as a string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `raw` as an id if it is within the floor every rule keeps (1 to 255 bytes of
    /// printable ASCII, no spaces): for a string a rule has passed, whichever rule.
    pub(crate) fn within_floor(raw: &str) -> Option<Self> {
        floor(raw).ok().map(|()| TenantId(Arc::from(raw)))
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Deref for TenantId {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for TenantId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for TenantId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl std::str::FromStr for TenantId {
    type Err = InvalidTenantId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for TenantId {
    type Error = InvalidTenantId;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = InvalidTenantId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl serde::Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TenantId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Why a string is not a valid tenant id. The offending input is deliberately not kept:
/// it is attacker-controlled and must not end up in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidTenantId {
    /// The id is empty.
    Empty,
    /// The id is longer than the rule allows.
    TooLong,
    /// The id contains a byte the rule does not allow (or starts with one).
    BadCharacter,
    /// A custom rule refused the id.
    Rejected,
}

impl fmt::Display for InvalidTenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "tenant id is empty",
            Self::TooLong => "tenant id is too long",
            Self::BadCharacter => "tenant id contains a character that is not allowed",
            Self::Rejected => "tenant id was rejected by the validation rule",
        })
    }
}

impl std::error::Error for InvalidTenantId {}

/// The rule a resolver validates tenant ids with.
///
/// [`TenantIdRule::Default`] is the rule of [`TenantId::parse`]. A custom rule is a
/// function that accepts or refuses a candidate; it runs only after the hard floor
/// (1 to 255 bytes of printable ASCII without spaces) has passed, so no rule can let
/// control bytes, non-ASCII look-alikes or unbounded input through.
///
/// ```
/// use tenancy_core::TenantIdRule;
///
/// // Numeric tenant ids only, up to 12 digits.
/// let rule = TenantIdRule::custom(|s: &str| s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()));
/// assert!(rule.parse("004217").is_ok());
/// assert!(rule.parse("acme").is_err());
/// assert!(rule.parse("1 2").is_err()); // the hard floor
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum TenantIdRule {
    /// 1 to 64 bytes of `[a-z0-9_-]`, starting with `[a-z0-9]`.
    #[default]
    Default,
    /// A user rule, applied after the hard floor.
    Custom(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl fmt::Debug for TenantIdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("TenantIdRule::Default"),
            Self::Custom(_) => f.write_str("TenantIdRule::Custom(..)"),
        }
    }
}

impl TenantIdRule {
    /// A custom rule from a predicate.
    pub fn custom(rule: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(rule))
    }

    /// Checks `raw` without allocating.
    pub fn check(&self, raw: &str) -> Result<(), InvalidTenantId> {
        let bytes = raw.as_bytes();
        if bytes.is_empty() {
            return Err(InvalidTenantId::Empty);
        }
        match self {
            Self::Default => {
                if bytes.len() > MAX_TENANT_ID_LEN {
                    return Err(InvalidTenantId::TooLong);
                }
                let first_ok = bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit();
                let rest_ok = bytes.iter().all(|&b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
                if first_ok && rest_ok {
                    Ok(())
                } else {
                    Err(InvalidTenantId::BadCharacter)
                }
            }
            Self::Custom(rule) => {
                floor(raw)?;
                if rule(raw) {
                    Ok(())
                } else {
                    Err(InvalidTenantId::Rejected)
                }
            }
        }
    }

    /// Checks `raw` and makes a [`TenantId`] of it.
    pub fn parse(&self, raw: &str) -> Result<TenantId, InvalidTenantId> {
        self.check(raw)?;
        Ok(TenantId(Arc::from(raw)))
    }
}

/// The floor every rule keeps, custom ones included: 1 to 255 bytes of printable
/// ASCII, no spaces.
fn floor(raw: &str) -> Result<(), InvalidTenantId> {
    let bytes = raw.as_bytes();
    if bytes.is_empty() {
        Err(InvalidTenantId::Empty)
    } else if bytes.len() > HARD_MAX_TENANT_ID_LEN {
        Err(InvalidTenantId::TooLong)
    } else if !bytes.iter().all(u8::is_ascii_graphic) {
        Err(InvalidTenantId::BadCharacter)
    } else {
        Ok(())
    }
}
