//! [`TenantIssuers`]: each tenant may bring its own identity provider.

use std::{
    collections::HashMap,
    fmt,
    future::IntoFuture,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::FutureExt as _;

use serde_json::Value;

use super::{OidcError, RemoteKeys};
use crate::{
    registry::TenantRegistry,
    session::{oidc::RemoteKeysBuilder, SessionError},
    Moment, TenantId,
};

/// The most tenants whose bindings are remembered per held issuer (registry
/// bindings), for the audiences a token from that issuer may be for.
const MAX_SEEN: usize = 64;

/// The identity provider one tenant trusts: its issuer and, optionally, the audiences
/// its tokens must be for (else the [`SessionConfig`](crate::session::SessionConfig)'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    issuer: String,
    audiences: Vec<String>,
}

impl Binding {
    /// Tokens from `issuer`, for the configuration's audiences.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: Vec::new(),
        }
    }

    /// Also accepts tokens for `audience` (the first call replaces the configuration's
    /// audiences for this tenant).
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences (empty: the configuration's).
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// A binding from a registry attribute: `"https://issuer"` or
    /// `{"issuer": "https://issuer", "audience": "api" | ["api", "admin"]}`.
    fn from_attribute(value: &Value) -> Option<Self> {
        match value {
            Value::String(issuer) => Some(Self::new(issuer.as_str())),
            Value::Object(o) => {
                let mut binding = Self::new(o.get("issuer")?.as_str()?);
                match o.get("audience") {
                    None => {}
                    Some(Value::String(a)) => binding = binding.audience(a.as_str()),
                    Some(Value::Array(list)) => {
                        for a in list {
                            binding = binding.audience(a.as_str()?);
                        }
                    }
                    Some(_) => return None,
                }
                Some(binding)
            }
            _ => None,
        }
    }
}

enum Bindings {
    Map(HashMap<TenantId, Binding>),
    Registry {
        registry: Arc<dyn TenantRegistry>,
        attribute: String,
    },
}

type Template = dyn Fn(&str) -> RemoteKeysBuilder + Send + Sync;

struct Held {
    keys: RemoteKeys,
    /// When a token last verified with these keys; when they were made, until one
    /// does (a new provider has one idle period to see its first token through).
    /// Looking the provider up does not count: a token that does not verify must
    /// not keep a slot.
    used: Instant,
    /// The tenants seen bound to this issuer (registry bindings; at most
    /// [`MAX_SEEN`]), with their bindings' audiences as last seen (empty: the
    /// configuration's).
    seen: HashMap<TenantId, Vec<String>>,
}

impl Held {
    /// Remembers `tenant`'s binding to this issuer; `true` when the tenant is new here.
    fn learn(&mut self, tenant: &TenantId, binding: &Binding) -> bool {
        if let Some(known) = self.seen.get_mut(tenant) {
            if *known != binding.audiences {
                known.clone_from(&binding.audiences);
            }
            return false;
        }
        if self.seen.len() >= MAX_SEEN {
            return false;
        }
        self.seen.insert(tenant.clone(), binding.audiences.clone());
        true
    }
}

/// An issuer trusted for some tenant, as the conflict check needs it: its keys and
/// the audiences a token from it may be for.
pub(crate) struct Trusted {
    pub(crate) keys: RemoteKeys,
    /// The audiences its bindings name.
    pub(crate) audiences: Vec<String>,
    /// Whether one of its bindings takes the configuration's audiences.
    pub(crate) configured: bool,
}

impl Trusted {
    fn of<'a>(keys: RemoteKeys, bindings: impl Iterator<Item = &'a Vec<String>>) -> Self {
        let (mut audiences, mut configured) = (Vec::new(), false);
        for named in bindings {
            configured |= named.is_empty();
            for a in named {
                if !audiences.contains(a) {
                    audiences.push(a.clone());
                }
            }
        }
        Self {
            keys,
            audiences,
            configured,
        }
    }
}

#[derive(Default)]
struct Providers {
    by_issuer: HashMap<String, Held>,
}

/// Per-tenant identity providers: the issuer (and audience) each tenant trusts comes
/// from a map in code ([`TenantIssuers::map`]) or from an attribute of its registry
/// record ([`TenantIssuers::registry`]); give it to
/// [`SessionManager::tenant_issuers`](crate::session::SessionManager::tenant_issuers).
///
/// A token is accepted only when its `iss` is the issuer bound to the tenant it names
/// (read as [`SessionConfig::tenant_from`](crate::session::SessionConfig::tenant_from)
/// or `tenant_claim` say), and it verifies with that issuer's keys, for the binding's
/// audiences (signature, `exp`, every claim).
///
/// A token that is valid for an issuer trusted for some tenant (its signature, an
/// audience of one of the issuer's bindings, expiry and claims all check out) but
/// names a tenant it may not be used for (another provider's tenant, a tenant without
/// a provider, an id no tenant has, or a tenant of the same issuer whose binding
/// takes other audiences) is `403 tenant_forbidden`: byte for byte what an unknown
/// or a suspended tenant gets, so that a token holder cannot learn which ids are
/// tenants, or suspended ones. Operators tell them apart in the audit line (stage
/// `Authentication`): a "cross-tenant token" (another provider's tenant, or another
/// audience), or "the token names a tenant bound to no identity provider". Any other
/// mismatch (a token not valid for its issuer, an issuer no tenant trusts) is `401`. With registry bindings an issuer counts as
/// trusted while its keys are held, and a token from it is valid for the audiences of
/// the bindings last seen naming it (of at most 64 tenants).
///
/// Each issuer's keys are a [`RemoteKeys`] found by discovery, made when a tenant
/// that uses it is first seen (its first request waits for the fetch). Map bindings
/// hold one per bound issuer. Registry bindings hold at most
/// [`max_providers`](Self::max_providers) (default 100): a new one replaces the
/// least recently used only if that one has been idle for
/// [`idle_after`](Self::idle_after) (default 10 min), else the new tenant's tokens are
/// `503 auth_unavailable`, so that a flood of tokens naming many tenants cannot evict
/// the providers in use. A provider is in use when a token verified with its keys
/// (a new one, since it was made): tokens that do not verify never keep a slot. A
/// registry lookup is bounded by [`registry_timeout`](Self::registry_timeout)
/// (default 2 s); a registry that fails, hangs or panics is `503 auth_unavailable`.
/// After a provider rotates its keys or withdraws a leaked one,
/// [`refresh_all_now`](Self::refresh_all_now) refetches every held provider's keys at
/// once.
///
/// ```
/// use tenancy_core::session::oidc::{Binding, TenantIssuers};
/// use tenancy_core::TenantId;
///
/// let issuers = TenantIssuers::map()
///     .bind(TenantId::parse("acme").unwrap(), Binding::new("https://acme.eu.auth0.com/"))
///     .bind(
///         TenantId::parse("globex").unwrap(),
///         Binding::new("https://login.microsoftonline.com/0b7c.../v2.0").audience("api://globex"),
///     );
/// # let _ = issuers;
/// ```
pub struct TenantIssuers {
    bindings: Bindings,
    template: Arc<Template>,
    providers: Mutex<Providers>,
    max_providers: usize,
    idle_after: Duration,
    registry_timeout: Duration,
}

impl fmt::Debug for TenantIssuers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.lock().by_issuer.len();
        f.debug_struct("TenantIssuers")
            .field("held_providers", &held)
            .field("max_providers", &self.max_providers)
            .finish_non_exhaustive()
    }
}

impl TenantIssuers {
    fn with(bindings: Bindings) -> Self {
        Self {
            bindings,
            template: Arc::new(|issuer: &str| RemoteKeys::issuer(issuer)),
            providers: Mutex::new(Providers::default()),
            max_providers: 100,
            idle_after: Duration::from_secs(600),
            registry_timeout: Duration::from_secs(2),
        }
    }

    /// Bindings given in code, with [`bind`](Self::bind).
    pub fn map() -> Self {
        Self::with(Bindings::Map(HashMap::new()))
    }

    /// Binds `tenant` to a provider (map bindings; on registry bindings it is
    /// ignored).
    #[must_use]
    pub fn bind(mut self, tenant: TenantId, binding: Binding) -> Self {
        if let Bindings::Map(map) = &mut self.bindings {
            map.insert(tenant, binding);
        }
        self
    }

    /// Bindings read from each tenant's registry record, from the attribute
    /// `attribute`: `"https://issuer"` or `{"issuer": .., "audience": ..}`. A tenant
    /// without it has no provider (`401`); a registry that cannot answer is `503
    /// auth_unavailable`.
    pub fn registry(registry: Arc<dyn TenantRegistry>, attribute: impl Into<String>) -> Self {
        Self::with(Bindings::Registry {
            registry,
            attribute: attribute.into(),
        })
    }

    /// How each issuer's key source is built (default `RemoteKeys::issuer(issuer)`
    /// with its defaults), e.g. to shorten the cooldown or trust a private CA.
    #[must_use]
    pub fn keys(
        mut self,
        template: impl Fn(&str) -> RemoteKeysBuilder + Send + Sync + 'static,
    ) -> Self {
        self.template = Arc::new(template);
        self
    }

    /// The most providers whose keys are held at once, for registry bindings
    /// (default 100).
    #[must_use]
    pub fn max_providers(mut self, max: usize) -> Self {
        self.max_providers = max.max(1);
        self
    }

    /// How long a held provider must go unused (no token verified with its keys; for
    /// a new one, since it was made) before a new one may replace it (default 10 min).
    #[must_use]
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = idle;
        self
    }

    /// How long a registry lookup may take (default 2 s).
    #[must_use]
    pub fn registry_timeout(mut self, timeout: Duration) -> Self {
        self.registry_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many providers' keys are held now.
    pub fn held(&self) -> usize {
        self.lock().by_issuer.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Providers> {
        self.providers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The binding of `tenant`, without waiting when the answer is at hand;
    /// `Ok(None)` when the registry must be asked.
    pub(crate) fn binding_ready(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Option<Binding>>, SessionError> {
        match &self.bindings {
            Bindings::Map(map) => Ok(Some(map.get(tenant).cloned())),
            Bindings::Registry {
                registry,
                attribute,
            } => {
                let ready = catch_unwind(AssertUnwindSafe(|| {
                    // A registry that must wait is asked again by `binding`.
                    registry.lookup(tenant.as_str(), &mut Moment::now()).now()
                }))
                .map_err(|_| unavailable("the registry panicked"))?;
                match ready {
                    Some(Ok(found)) => Ok(Some(self.binding_in(found, attribute))),
                    Some(Err(_)) => Err(unavailable("the registry did not answer")),
                    None => Ok(None),
                }
            }
        }
    }

    /// Whether `tenant` is still bound to `binding`, without waiting (`None`: the
    /// registry must be asked). Map bindings compare in place: this runs on every
    /// cached token's request.
    pub(crate) fn still_bound(&self, tenant: &TenantId, binding: &Binding) -> Option<bool> {
        match &self.bindings {
            Bindings::Map(map) => Some(map.get(tenant) == Some(binding)),
            Bindings::Registry { .. } => {
                let now = self.binding_ready(tenant).ok()??;
                Some(now.as_ref() == Some(binding))
            }
        }
    }

    fn binding_in(
        &self,
        found: Option<Arc<crate::TenantRecord>>,
        attribute: &str,
    ) -> Option<Binding> {
        let record = found?;
        let binding = record
            .attributes()
            .get(attribute)
            .and_then(Binding::from_attribute);
        if binding.is_none() && record.attributes().contains_key(attribute) {
            tracing::warn!(
                target: "tenancy::oidc",
                tenant = record.id().as_str(),
                attribute,
                "the tenant's identity provider attribute is malformed"
            );
        }
        binding
    }

    /// The binding of `tenant`.
    pub(crate) async fn binding(&self, tenant: &TenantId) -> Result<Option<Binding>, SessionError> {
        if let Some(ready) = self.binding_ready(tenant)? {
            return Ok(ready);
        }
        let Bindings::Registry {
            registry,
            attribute,
        } = &self.bindings
        else {
            return Ok(None);
        };
        let asked = catch_unwind(AssertUnwindSafe(|| {
            registry.lookup(tenant.as_str(), &mut Moment::now())
        }))
        .map_err(|_| unavailable("the registry panicked"))?;
        let lookup = AssertUnwindSafe(asked.into_future()).catch_unwind();
        let found = match tokio::time::timeout(self.registry_timeout, lookup).await {
            Ok(Ok(Ok(found))) => found,
            Ok(Ok(Err(_))) => return Err(unavailable("the registry did not answer")),
            Ok(Err(_panic)) => return Err(unavailable("the registry panicked")),
            Err(_) => return Err(unavailable("the registry did not answer in time")),
        };
        Ok(self.binding_in(found, attribute))
    }

    /// The key source of `binding`'s issuer (`tenant`'s), made (and its first fetch
    /// started) on first use. Looking it up does not mark it used: only a token that
    /// verifies does ([`verified`](Self::verified)), so tokens that do not verify
    /// cannot keep a slot "in use".
    pub(crate) fn provider(
        &self,
        tenant: &TenantId,
        binding: &Binding,
    ) -> Result<RemoteKeys, SessionError> {
        let issuer = binding.issuer();
        let mut p = self.lock();
        let now = Instant::now();
        if let Some(held) = p.by_issuer.get_mut(issuer) {
            let keys = held.keys.clone();
            if held.learn(tenant, binding) {
                forget_elsewhere(&mut p, tenant, issuer);
            }
            return Ok(keys);
        }
        // Map bindings are bounded by the map; registry bindings by `max_providers`,
        // replacing only an idle provider.
        if matches!(self.bindings, Bindings::Registry { .. })
            && p.by_issuer.len() >= self.max_providers
        {
            let idle = p
                .by_issuer
                .iter()
                .min_by_key(|(_, h)| h.used)
                .filter(|(_, h)| now.duration_since(h.used) >= self.idle_after)
                .map(|(k, _)| k.clone());
            match idle {
                Some(idle) => {
                    p.by_issuer.remove(&idle);
                }
                None => return Err(unavailable("every identity provider slot is in use")),
            }
        }
        // The template is the application's code: a panic in it is a `503` for this
        // tenant, never a crashed worker (nor a poisoned lock).
        let Some(builder) = crate::caught("TenantIssuers template", || (self.template)(issuer))
        else {
            return Err(unavailable("the tenant's identity provider cannot be used"));
        };
        let keys = builder.start().map_err(|e| {
            tracing::error!(target: "tenancy::oidc", issuer, "cannot use the issuer: {e}");
            unavailable("the tenant's identity provider cannot be used")
        })?;
        let mut held = Held {
            keys: keys.clone(),
            used: now,
            seen: HashMap::new(),
        };
        held.learn(tenant, binding);
        forget_elsewhere(&mut p, tenant, issuer);
        p.by_issuer.insert(issuer.to_owned(), held);
        Ok(keys)
    }

    /// A token verified with `issuer`'s keys: its provider is in use now.
    pub(crate) fn verified(&self, issuer: &str) {
        if let Some(held) = self.lock().by_issuer.get_mut(issuer) {
            held.used = Instant::now();
        }
    }

    /// `issuer`, if it is trusted for some tenant: for map bindings any bound issuer,
    /// for registry bindings one whose keys are held. Used to tell a valid token
    /// naming a tenant its issuer is not bound to from an invalid one.
    pub(crate) fn trusted(&self, issuer: &str) -> Option<Trusted> {
        match &self.bindings {
            Bindings::Map(map) => {
                let mut bound = map.iter().filter(|(_, b)| b.issuer == issuer).peekable();
                let (tenant, binding) = bound.peek().copied()?;
                let keys = self.provider(tenant, binding).ok()?;
                Some(Trusted::of(keys, bound.map(|(_, b)| &b.audiences)))
            }
            Bindings::Registry { .. } => {
                let p = self.lock();
                let held = p.by_issuer.get(issuer)?;
                Some(Trusted::of(held.keys.clone(), held.seen.values()))
            }
        }
    }

    /// Refetches every held provider's keys now, whatever their refresh schedule and
    /// cooldown, and waits for all of them (each joins a fetch of its own already
    /// running): after a provider rotated its keys, or withdrew one that leaked, its
    /// new keys verify, and tokens signed with a withdrawn key stop verifying, as
    /// soon as this returns, without waiting for the refresh interval. An operator's
    /// "refresh now", like [`RemoteKeys::refresh_now`] for one key set.
    ///
    /// Only providers whose keys are held are fetched (one not held yet is fetched
    /// when its first token comes). `Ok` with how many were refreshed; `Err` with each
    /// issuer whose fetch failed, and why: the others were refreshed, and a provider
    /// whose fetch failed keeps its last good keys, as after any failed refresh.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use tenancy_core::session::oidc::TenantIssuers;
    /// use tenancy_core::session::{SessionConfig, SessionManager};
    ///
    /// # async fn run(registry: Arc<tenancy_core::registry::InMemoryRegistry>) {
    /// let issuers = Arc::new(TenantIssuers::registry(registry, "oidc"));
    /// let sessions =
    ///     SessionManager::tenant_issuers(SessionConfig::new("unused", "api"), Arc::clone(&issuers));
    /// // Later, told that a provider's key leaked and was withdrawn:
    /// if let Err(failed) = issuers.refresh_all_now().await {
    ///     for (issuer, why) in failed {
    ///         eprintln!("{issuer}: {why}");
    ///     }
    /// }
    /// # let _ = sessions; }
    /// ```
    pub async fn refresh_all_now(&self) -> Result<usize, Vec<(String, OidcError)>> {
        let held: Vec<(String, RemoteKeys)> = self
            .lock()
            .by_issuer
            .iter()
            .map(|(issuer, h)| (issuer.clone(), h.keys.clone()))
            .collect();
        let count = held.len();
        let fetches = held.into_iter().map(|(issuer, keys)| async move {
            let done = keys.refresh_now().await;
            done.err().map(|e| (issuer, e))
        });
        let failed: Vec<(String, OidcError)> = futures_util::future::join_all(fetches)
            .await
            .into_iter()
            .flatten()
            .collect();
        if failed.is_empty() {
            Ok(count)
        } else {
            Err(failed)
        }
    }
}

/// `tenant` is now seen bound to `issuer`: no other held issuer counts its binding's
/// audiences any more.
fn forget_elsewhere(p: &mut Providers, tenant: &TenantId, issuer: &str) {
    for (other, held) in &mut p.by_issuer {
        if other != issuer {
            held.seen.remove(tenant);
        }
    }
}

fn unavailable(why: &'static str) -> SessionError {
    SessionError::Unavailable(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_that_panics_is_an_unavailable_provider_and_poisons_nothing() {
        let tenant = TenantId::parse("acme").unwrap();
        let binding = Binding::new("https://idp.example");
        let issuers = TenantIssuers::map()
            .bind(tenant.clone(), binding.clone())
            .keys(|_| panic!("injected template panic"));
        for _ in 0..2 {
            let answer = issuers.provider(&tenant, &binding);
            assert!(
                matches!(answer, Err(SessionError::Unavailable(_))),
                "{:?}",
                answer.map(|_| ())
            );
        }
        assert_eq!(issuers.held(), 0);
    }
}
