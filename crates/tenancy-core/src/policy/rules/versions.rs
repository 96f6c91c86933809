//! What [`RulePolicy`](super::RulePolicy)'s version calls refuse.

use std::fmt;

use crate::error::ConfigError;

/// Why [`RulePolicy`](super::RulePolicy) would not load a policy set, or make a version
/// active; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionError {
    /// The set's rules are invalid.
    Invalid(ConfigError),
    /// The set's version is not newer than the newest already loaded.
    Stale {
        /// The version given.
        version: u64,
        /// The newest version loaded.
        newest: u64,
    },
    /// Every version number has been given out.
    Exhausted,
    /// A rollback names a version that is not kept (`None`: no version is kept before
    /// the active one).
    NotKept(Option<u64>),
    /// `promote_shadow` with no shadow version loaded.
    NoShadow,
}

impl From<ConfigError> for VersionError {
    fn from(e: ConfigError) -> Self {
        Self::Invalid(e)
    }
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(e) => e.fmt(f),
            Self::Stale { version, newest } => write!(
                f,
                "policy version {version} is not newer than version {newest}, already loaded"
            ),
            Self::Exhausted => f.write_str("no policy version number is left"),
            Self::NotKept(Some(v)) => {
                write!(
                    f,
                    "policy version {v} is not kept, so it cannot be made active"
                )
            }
            Self::NotKept(None) => {
                f.write_str("no policy version before the active one is kept to roll back to")
            }
            Self::NoShadow => f.write_str("no shadow policy version is loaded to promote"),
        }
    }
}

impl std::error::Error for VersionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Invalid(e) => Some(e),
            _ => None,
        }
    }
}
