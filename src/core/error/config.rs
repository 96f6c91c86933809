//! Configuration mistakes, reported when the middleware is built.

use super::*;

/// A configuration mistake, reported when the middleware is built, never at request
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The resolver has no source to read a tenant from.
    NoSources,
    /// A header name is not a valid HTTP header name.
    InvalidHeaderName(String),
    /// A base domain for the host source is empty or not a plain DNS name.
    InvalidBaseDomain(String),
    /// A path prefix must start and end with `/`, e.g. `/t/`.
    InvalidPathPrefix(String),
    /// A certificate rule's SAN URI prefix must be visible ASCII, contain `:` and end
    /// with `/`, e.g. `spiffe://example.org/tenant/`.
    InvalidCertificateRule(String),
    /// An exempt path must start with `/`.
    InvalidExemptPath(String),
    /// Two sources of the same kind and configuration were added.
    DuplicateSource(&'static str),
    /// A required part was not configured.
    Missing(&'static str),
    /// An authentication stage was composed with a resolver that does not read the
    /// token's tenant ([`Source::claim`](crate::Source::claim)).
    AuthWithoutClaim,
    /// A duration that must be longer than zero is zero (a timeout that would refuse
    /// every request).
    ZeroDuration(&'static str),
    /// Two settings name the same header, so one request value would answer both.
    SameHeader {
        /// The first setting.
        first: &'static str,
        /// The second setting.
        second: &'static str,
    },
    /// A JSON or TOML document (`of`: `registry` or `policy`) could not be parsed;
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
    /// One document names the same tenant twice.
    DuplicateTenant(String),
    /// A policy rule is malformed; `at` names the level at fault (`tier:free`,
    /// `tenant:acme`, `default`).
    InvalidRule {
        /// The level.
        at: String,
        /// What is wrong with the rule.
        reason: String,
    },
    /// A policy set's version is not newer than the newest already loaded.
    StalePolicyVersion {
        /// The version given.
        version: u64,
        /// The newest version loaded.
        newest: u64,
    },
    /// Every policy version number has been given out.
    PolicyVersionsExhausted,
    /// A rollback names a version that is not kept (`None`: no version is kept
    /// before the active one).
    PolicyVersionNotKept(Option<u64>),
    /// `promote_shadow` with no shadow version loaded.
    NoShadowPolicy,
    /// A quota plan is invalid; `plan` says which (`for tier "pro"`).
    InvalidPlan {
        /// Which plan.
        plan: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A backend's URL could not be parsed, or its client could not be set up.
    InvalidBackendUrl {
        /// The backend (`Redis`).
        backend: &'static str,
        /// The client's message.
        reason: String,
    },
    /// A PostgreSQL name (a role, a `NOTIFY` channel) is not 1 to 63 bytes of
    /// `[a-z0-9_]` starting with a letter or `_`.
    InvalidSqlName {
        /// What the name is for.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A reconnect backoff whose minimum is zero or above its maximum.
    InvalidBackoff,
    /// A route pattern for a cost estimator does not start with `/`.
    InvalidRoutePattern(String),
    /// The policy stage's capability headers: a kind that is not 1 to 32 of `a-z`,
    /// `0-9`, `-` and `_`, a kind read from two headers, or more than eight headers.
    InvalidCapability(String),
    /// The same method and route pattern was given two cost estimators.
    DuplicateRoute(String),
    /// An issuer pattern must hold `{tenant}` once, e.g.
    /// `https://sso.example.com/realms/{tenant}`.
    InvalidIssuerPattern(String),
    /// A remote key set found by discovery belongs to another issuer than the one
    /// tokens are checked for.
    IssuerMismatch {
        /// The configuration's issuer.
        configured: String,
        /// The key set's issuer.
        keys: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSources => f.write_str("the resolver has no tenant source"),
            Self::InvalidHeaderName(h) => write!(f, "invalid header name {h:?}"),
            Self::InvalidBaseDomain(d) => write!(f, "invalid base domain {d:?}"),
            Self::InvalidPathPrefix(p) => {
                write!(
                    f,
                    "invalid path prefix {p:?}: it must start and end with '/'"
                )
            }
            Self::InvalidCertificateRule(p) => write!(
                f,
                "invalid SAN URI prefix {p:?}: it must contain ':' and end with '/'"
            ),
            Self::InvalidExemptPath(p) => {
                write!(f, "invalid exempt path {p:?}: it must start with '/'")
            }
            Self::DuplicateSource(s) => write!(f, "the source {s} was added twice"),
            Self::Missing(what) => write!(f, "{what} is required"),
            Self::ZeroDuration(what) => write!(f, "{what} must be longer than zero"),
            Self::SameHeader { first, second } => write!(
                f,
                "the {first} header and the {second} header are the same header"
            ),
            Self::AuthWithoutClaim => f.write_str(
                "an authentication stage needs Source::claim() in the resolver, so that the \
                 token's tenant wins over every other source",
            ),
            Self::IssuerMismatch { configured, keys } => write!(
                f,
                "the key set is the issuer {keys:?}'s, but tokens are checked for {configured:?}"
            ),
            Self::InvalidIssuerPattern(p) => write!(
                f,
                "invalid issuer pattern {p:?}: it must hold {{tenant}} exactly once"
            ),
            Self::InvalidDocument { of, reason } => {
                write!(f, "the {of} document could not be read: {reason}")
            }
            Self::UnreadableFile { path, reason } => {
                write!(f, "the file {} could not be read: {reason}", path.display())
            }
            Self::DuplicateTenant(id) => write!(f, "the tenant {id:?} is listed twice"),
            Self::InvalidRule { at, reason } => write!(f, "a rule of {at} is invalid: {reason}"),
            Self::StalePolicyVersion { version, newest } => write!(
                f,
                "policy version {version} is not newer than version {newest}, already loaded"
            ),
            Self::PolicyVersionsExhausted => f.write_str("no policy version number is left"),
            Self::PolicyVersionNotKept(Some(v)) => {
                write!(f, "policy version {v} is not kept, so it cannot be made active")
            }
            Self::PolicyVersionNotKept(None) => {
                f.write_str("no policy version before the active one is kept to roll back to")
            }
            Self::NoShadowPolicy => f.write_str("no shadow policy version is loaded to promote"),
            Self::InvalidPlan { plan, reason } => write!(f, "the quota plan {plan} is invalid: {reason}"),
            Self::InvalidBackendUrl { backend, reason } => {
                write!(f, "the {backend} URL is invalid: {reason}")
            }
            Self::InvalidSqlName { what, name } => write!(
                f,
                "the {what} {name:?} is not 1 to 63 bytes of [a-z0-9_] starting with a letter or '_'"
            ),
            Self::InvalidCapability(why) => write!(f, "capability headers: {why}"),
            Self::InvalidRoutePattern(p) => {
                write!(f, "the route pattern {p:?} must start with '/'")
            }
            Self::DuplicateRoute(r) => write!(f, "the route {r} is given two cost estimators"),
            Self::InvalidBackoff => f.write_str(
                "the reconnect backoff's minimum must be longer than zero and at most its maximum",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
