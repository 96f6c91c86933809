use std::{fmt, sync::Arc, time::SystemTime};

use crate::{Answer, TenantId};

/// A verified identity: who made the request and, when the credential says so, for
/// which tenant.
///
/// An authentication middleware (the JWT stage, or your own) verifies a credential and
/// then puts the `Principal` into the request extensions, its one home (in actix,
/// `Principal::attach`). The resolver's claim source reads it: a verified tenant claim
/// wins over every other source, and any source that names a different tenant is a
/// conflict.
///
/// Only insert a `Principal` after verifying the credential it came from: the resolver
/// trusts it.
///
/// Cloning is a reference-count increment.
///
/// ```
/// use tenancy_core::{Principal, TenantId};
///
/// let p = Principal::new("user-42")
///     .with_tenant(TenantId::parse("acme").unwrap())
///     .with_scopes(["reports:read"]);
/// assert_eq!(p.subject(), "user-42");
/// assert_eq!(p.tenant().unwrap().as_str(), "acme");
/// assert!(p.has_scope("reports:read"));
/// ```
#[derive(Clone)]
pub struct Principal(Arc<Inner>);

#[derive(Clone)]
struct Inner {
    subject: String,
    tenant: Option<TenantId>,
    scopes: Vec<String>,
    roles: Vec<String>,
    token_id: Option<String>,
    expires_at: Option<SystemTime>,
    claims: serde_json::Value,
}

impl Principal {
    /// A principal for `subject`, with no tenant, scopes or claims yet.
    pub fn new(subject: impl Into<String>) -> Self {
        Self(Arc::new(Inner {
            subject: subject.into(),
            tenant: None,
            scopes: Vec::new(),
            roles: Vec::new(),
            token_id: None,
            expires_at: None,
            claims: serde_json::Value::Null,
        }))
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.0));
        self
    }

    /// Sets the tenant the credential names.
    #[must_use]
    pub fn with_tenant(self, tenant: TenantId) -> Self {
        self.edit(|i| i.tenant = Some(tenant))
    }

    /// Sets the granted scopes.
    #[must_use]
    pub fn with_scopes<I, S>(self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes = scopes.into_iter().map(Into::into).collect();
        self.edit(|i| i.scopes = scopes)
    }

    /// Sets the roles (the JWT stage reads them from the claim
    /// `SessionConfig::roles_claim` names).
    #[must_use]
    pub fn with_roles<I, S>(self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let roles = roles.into_iter().map(Into::into).collect();
        self.edit(|i| i.roles = roles)
    }

    /// Sets the credential's unique id (a JWT's `jti`).
    #[must_use]
    pub fn with_token_id(self, jti: impl Into<String>) -> Self {
        let jti = jti.into();
        self.edit(|i| i.token_id = Some(jti))
    }

    /// Sets when the credential expires.
    #[must_use]
    pub fn with_expiry(self, at: SystemTime) -> Self {
        self.edit(|i| i.expires_at = Some(at))
    }

    /// Keeps the raw claims of the credential, for handlers that need more.
    #[must_use]
    pub fn with_claims(self, claims: serde_json::Value) -> Self {
        self.edit(|i| i.claims = claims)
    }

    /// The authenticated subject (a JWT's `sub`).
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// The tenant the credential names, if any.
    pub fn tenant(&self) -> Option<&TenantId> {
        self.0.tenant.as_ref()
    }

    /// The granted scopes.
    pub fn scopes(&self) -> &[String] {
        &self.0.scopes
    }

    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.iter().any(|s| s == scope)
    }

    /// The roles.
    pub fn roles(&self) -> &[String] {
        &self.0.roles
    }

    /// Whether `role` was granted.
    pub fn has_role(&self, role: &str) -> bool {
        self.0.roles.iter().any(|r| r == role)
    }

    /// The credential's unique id.
    pub fn token_id(&self) -> Option<&str> {
        self.0.token_id.as_deref()
    }

    /// When the credential expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.0.expires_at
    }

    /// The raw claims (`Null` when none were kept).
    pub fn claims(&self) -> &serde_json::Value {
        &self.0.claims
    }
}

impl fmt::Debug for Principal {
    // Claims may hold personal data; keep them out of debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.0.subject)
            .field("tenant", &self.0.tenant)
            .field("scopes", &self.0.scopes)
            .field("token_id", &self.0.token_id)
            .finish_non_exhaustive()
    }
}

/// Revokes every session issued to a tenant until now. The JWT stage's
/// `SessionManager` implements it (feature `jwt`); registry admin operations that end a
/// tenant's access (`PostgresRegistry::suspend_and_revoke`) call it, so the registry
/// needs no session types.
pub trait RevokeSessions: Send + Sync {
    /// Revokes every token issued to `tenant` until now.
    fn revoke_sessions<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> Answer<'a, Result<(), Box<dyn std::error::Error + Send + Sync>>>;
}
