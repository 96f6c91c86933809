//! Which kind of source named a tenant.

use std::fmt;

/// Which kind of source named the tenant; recorded in the tenant's context, in audit
/// events and in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceKind {
    /// The tenant claim of a verified principal.
    Claim,
    /// A verified TLS client certificate.
    Certificate,
    /// A user function.
    Custom,
    /// A request header (`X-Tenant-ID` by default).
    Header,
    /// The host's subdomain.
    Host,
    /// A path prefix (`/t/{tenant}/...`).
    Path,
}

impl SourceKind {
    /// The kind as text (`claim`, `header`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Certificate => "certificate",
            Self::Custom => "custom",
            Self::Header => "header",
            Self::Host => "host",
            Self::Path => "path",
        }
    }

    /// Whether this source carries a verified identity. A verified source wins over
    /// the others, and they must agree with it.
    pub const fn is_verified(self) -> bool {
        matches!(self, Self::Claim | Self::Certificate)
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
