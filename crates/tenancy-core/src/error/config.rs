//! Configuration mistakes, reported when the middleware is built.
//!
//! The core names no stage: each stage (and each backend) builds its own error from these
//! few shapes, naming its setting and what the setting must be.

use std::{borrow::Cow, fmt};

/// A configuration mistake, reported when the middleware (or one of its backends) is
/// built, never at request time.
///
/// The variants are shapes, not a list of every setting: the stage at fault names its
/// setting (`setting`, `what`) and what it must be (`reason`), and the message says both.
///
/// ```
/// use tenancy_core::ConfigError;
///
/// // What a resolver answers for `Source::header_named("X Tenant")`:
/// let err = ConfigError::invalid("header name", "X Tenant", "not a valid HTTP header name");
/// assert!(matches!(err, ConfigError::Invalid { setting: "header name", .. }));
/// assert_eq!(err.to_string(), r#"invalid header name "X Tenant": not a valid HTTP header name"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting's value is not valid (a header name, a base domain, a path prefix, a rule,
    /// a plan, a duration, a PostgreSQL name).
    Invalid {
        /// The setting, e.g. `header name`, `path prefix`, `quota plan`.
        setting: &'static str,
        /// The value given (empty where it must not be shown, or there is none).
        value: String,
        /// What the value must be, or what is wrong with it.
        reason: Cow<'static, str>,
    },
    /// A required part was not configured (`a resolver`, `a tenant source`).
    Missing(&'static str),
    /// The same thing was given twice (a source, a tenant, a route's cost).
    Duplicate {
        /// What was given twice, e.g. `source`, `tenant`, `route`.
        what: &'static str,
        /// Which one.
        value: String,
    },
    /// Two settings that cannot go together; the message says which and why.
    Conflict(Cow<'static, str>),
    /// A JSON or TOML document (`of`: `registry`, `policy`) could not be parsed;
    /// `reason` is the parser's message, which names the line and column.
    InvalidDocument {
        /// What the document describes.
        of: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A file could not be read.
    UnreadableFile {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's message.
        reason: String,
    },
    /// A backend's URL could not be parsed, or its client could not be set up (the URL
    /// itself is not repeated: it may hold a password).
    InvalidBackendUrl {
        /// The backend (`Redis`).
        backend: &'static str,
        /// The client's message.
        reason: String,
    },
}

impl ConfigError {
    /// The setting's `value` is not valid: it must be (or is wrong because) `reason`.
    pub fn invalid(
        setting: &'static str,
        value: impl Into<String>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::Invalid {
            setting,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// A duration that must be longer than zero is zero (a timeout that would refuse
    /// every request).
    pub fn zero_duration(setting: &'static str) -> Self {
        Self::invalid(setting, "0s", "it must be longer than zero")
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid {
                setting,
                value,
                reason,
            } if value.is_empty() => write!(f, "invalid {setting}: {reason}"),
            Self::Invalid {
                setting,
                value,
                reason,
            } => write!(f, "invalid {setting} {value:?}: {reason}"),
            Self::Missing(what) => write!(f, "{what} is required"),
            Self::Duplicate { what, value } => write!(f, "the {what} {value} is given twice"),
            Self::Conflict(why) => f.write_str(why),
            Self::InvalidDocument { of, reason } => {
                write!(f, "the {of} document could not be read: {reason}")
            }
            Self::UnreadableFile { path, reason } => {
                write!(f, "the file {} could not be read: {reason}", path.display())
            }
            Self::InvalidBackendUrl { backend, reason } => {
                write!(f, "the {backend} URL is invalid: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}
