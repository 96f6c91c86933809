//! The built-in evaluator, [`RulePolicy`]: policies as written (`PolicySet`, `Rules`),
//! the rules parsed and matched (`rule`), a version compiled (`compiled`), and the
//! versions kept for rollback and shadowing.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Deserialize;

use super::{Decision, Method, PolicyError, PolicyEvaluator, PolicyRequest};
use crate::{error::ConfigError, Answer, TenantContext};

mod rule;
use rule::*;
mod compiled;
mod versions;

use compiled::*;
pub use versions::VersionError;
#[cfg(test)]
mod tests;

/// How many versions a [`RulePolicy`] keeps for [`rollback`](RulePolicy::rollback) by
/// default (the active one included).
pub const DEFAULT_KEEP_VERSIONS: usize = 10;

/// The longest capability, feature, tier or tenant name a policy accepts.
const MAX_NAME_LEN: usize = 128;

/// A whole policy, as written in code or loaded from JSON or TOML: the rules of the
/// default level, of each tier and of each tenant.
///
/// ```json
/// {
///   "version": 7,
///   "default_allow": false,
///   "default": { "routes": { "allow": ["GET /health"] } },
///   "tiers": {
///     "free": {
///       "routes": { "allow": ["GET /items/**"], "deny": ["* /reports/**"] },
///       "capabilities": { "allow": ["model:gpt-4o-mini"] }
///     },
///     "pro": {
///       "routes": { "allow": ["* /**"] },
///       "capabilities": { "allow": ["model:*", "tool:web_search"] },
///       "features": { "beta": true }
///     }
///   },
///   "tenants": {
///     "acme": { "capabilities": { "deny": ["tool:web_search"] } }
///   }
/// }
/// ```
///
/// Every field is optional. `version` must be larger than every version the
/// [`RulePolicy`] has loaded; without it the next number is taken.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct PolicySet {
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    default_allow: bool,
    #[serde(default)]
    default: Rules,
    #[serde(default)]
    tiers: BTreeMap<Name, Rules>,
    #[serde(default)]
    tenants: BTreeMap<Name, Rules>,
}

impl PolicySet {
    /// An empty policy: everything denied.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a policy from JSON. Errors name the line and column.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::InvalidDocument {
            of: "policy",
            reason: e.to_string(),
        })
    }

    /// Parses a policy from TOML (feature `toml`). Errors name the line and column.
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::InvalidDocument {
            of: "policy",
            reason: e.to_string(),
        })
    }

    /// Sets the version this policy will carry.
    pub fn version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }

    /// What happens when no level has a rule for a route or capability: deny (the
    /// default) or allow.
    pub fn default_allow(mut self, allow: bool) -> Self {
        self.default_allow = allow;
        self
    }

    /// The rules every tenant falls back to.
    pub fn default_rules(mut self, rules: Rules) -> Self {
        self.default = rules;
        self
    }

    /// The rules of tenants on `tier`.
    pub fn tier(mut self, tier: &str, rules: Rules) -> Self {
        self.tiers.insert(Name(tier.into()), rules);
        self
    }

    /// The rules of one tenant; they also apply to its child tenants (those whose
    /// record names it as parent) unless the child's own rules decide.
    pub fn tenant(mut self, tenant: &str, rules: Rules) -> Self {
        self.tenants.insert(Name(tenant.into()), rules);
        self
    }
}

/// The rules of one level (the default, a tier or a tenant).
///
/// Routes are written `METHOD /path`, where the method is one of the standard HTTP
/// methods or `*` (any; also what a path alone means), and the path is matched segment
/// by segment against the route pattern actix matched (`/items/{id}`): a `*` segment
/// matches any one segment, and a trailing `**` matches the rest, zero segments or
/// more. A request is judged twice: by the route pattern actix matches first, and by
/// the path itself, where a segment written as a route parameter (`{id}`) matches any
/// one segment; it is allowed only when both are. So a request that actix's guards
/// send to another handler than the first matching pattern (`#[get("/items/{id}")]`
/// registered before `#[post("/items/export")]`) cannot escape a deny written for the
/// route it really runs. Capabilities are `kind:name` (`model:gpt-4o`, `tool:web_search`), `kind:*`,
/// or `*`; a feature flag `beta` is the capability `feature:beta`.
///
/// Within a level, a deny beats an allow.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct Rules {
    #[serde(default)]
    routes: Lists<RouteRule>,
    #[serde(default)]
    capabilities: Lists<CapabilityRule>,
    #[serde(default)]
    features: BTreeMap<Name, bool>,
    /// Rules given in code that did not parse, reported when the policy is built.
    #[serde(skip)]
    errors: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
struct Lists<T> {
    #[serde(default)]
    allow: Vec<T>,
    #[serde(default)]
    deny: Vec<T>,
}

impl<T> Default for Lists<T> {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

impl Rules {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows a route (`"GET /items/*"`).
    pub fn allow(mut self, route: &str) -> Self {
        keep(
            RouteRule::parse(route),
            &mut self.routes.allow,
            &mut self.errors,
        );
        self
    }

    /// Denies a route (`"DELETE /items/*"`).
    pub fn deny(mut self, route: &str) -> Self {
        keep(
            RouteRule::parse(route),
            &mut self.routes.deny,
            &mut self.errors,
        );
        self
    }

    /// Grants a capability (`"model:gpt-4o"`, `"tool:*"`).
    pub fn allow_capability(mut self, capability: &str) -> Self {
        keep(
            CapabilityRule::parse(capability),
            &mut self.capabilities.allow,
            &mut self.errors,
        );
        self
    }

    /// Withholds a capability.
    pub fn deny_capability(mut self, capability: &str) -> Self {
        keep(
            CapabilityRule::parse(capability),
            &mut self.capabilities.deny,
            &mut self.errors,
        );
        self
    }

    /// Turns a feature flag on or off at this level.
    pub fn feature(mut self, name: &str, on: bool) -> Self {
        match Name::parse(name) {
            Ok(n) => {
                self.features.insert(n, on);
            }
            Err(e) => self.errors.push(e),
        }
        self
    }
}

/// Adds a parsed rule to `list`, or its error to `errors` (reported when the policy is
/// built).
fn keep<T>(rule: Result<T, String>, list: &mut Vec<T>, errors: &mut Vec<String>) {
    match rule {
        Ok(r) => list.push(r),
        Err(e) => errors.push(e),
    }
}

/// The built-in evaluator: routes, capabilities and feature flags per tier and per
/// tenant, with inheritance, versions, rollback and a shadow version.
///
/// For a request, the levels are asked in order, most specific first: the tenant, its
/// parent tenant, its tier, the default. The first level with a rule that matches
/// decides, and within a level a deny beats an allow. When no level has a matching
/// rule, the policy's `default_allow` decides (deny unless configured otherwise). The
/// route (matched as the pattern actix routed, so an id in the path cannot escape a
/// rule) and every capability asked for must be allowed.
///
/// Evaluation is synchronous and allocates nothing: rules are compiled when loaded.
/// Loading validates the whole policy first, so a bad file changes nothing; a valid one
/// replaces the active version atomically, without blocking requests. Clones share the
/// same versions: keep one to reload, give one to a policy stage.
///
/// ```
/// use tenancy_core::policy::{PolicySet, RulePolicy, Rules};
///
/// let policy = RulePolicy::new(
///     PolicySet::new()
///         .default_rules(Rules::new().allow("GET /health"))
///         .tier("free", Rules::new().allow("GET /items/**").allow_capability("model:gpt-4o-mini"))
///         .tier("pro", Rules::new().allow("* /**").allow_capability("model:*").feature("beta", true)),
/// )
/// .unwrap();
/// assert_eq!(policy.version(), 1);
/// let v2 = policy.load(PolicySet::new().default_allow(true)).unwrap();
/// assert_eq!((v2, policy.version()), (2, 2));
/// assert_eq!(policy.rollback().unwrap(), 1);
/// ```
#[derive(Clone)]
pub struct RulePolicy {
    shared: Arc<Shared>,
}

struct Shared {
    active: ArcSwap<Compiled>,
    shadow: ArcSwapOption<Compiled>,
    /// Whether `shadow` holds a version: one `Acquire` load on the request path instead
    /// of an `ArcSwap` load when none runs. Written (`Release`) only under the
    /// `history` lock, after `shadow`, so a reader that sees `true` sees the version.
    has_shadow: AtomicBool,
    /// Moves (`Release`, under the `history` lock) after every change of `active`, so
    /// a reader that sees a new epoch sees the new version: the stage's remembered
    /// decisions are kept per epoch ([`PolicyEvaluator::memo_epoch`]).
    epoch: AtomicU64,
    history: Mutex<History>,
}

struct History {
    /// The versions kept, oldest first; the active one is among them.
    kept: Vec<Arc<Compiled>>,
    keep: usize,
    /// The highest version ever given out.
    highest: u64,
}

impl fmt::Debug for RulePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RulePolicy")
            .field("version", &self.version())
            .field("shadow", &self.shadow_version())
            .finish_non_exhaustive()
    }
}

impl RulePolicy {
    /// A policy whose first version is `set` (version 1 unless `set` names one).
    pub fn new(set: PolicySet) -> Result<Self, ConfigError> {
        let version = set.version.unwrap_or(1);
        let compiled = Arc::new(Compiled::compile(set, version)?);
        Ok(Self {
            shared: Arc::new(Shared {
                active: ArcSwap::new(Arc::clone(&compiled)),
                shadow: ArcSwapOption::empty(),
                has_shadow: AtomicBool::new(false),
                epoch: AtomicU64::new(0),
                history: Mutex::new(History {
                    kept: vec![compiled],
                    keep: DEFAULT_KEEP_VERSIONS,
                    highest: version,
                }),
            }),
        })
    }

    /// How many versions to keep for rollback, the active one included (default
    /// [`DEFAULT_KEEP_VERSIONS`], at least 1).
    #[must_use]
    pub fn keep_versions(self, keep: usize) -> Self {
        let active = self.version();
        let mut h = self.history();
        h.keep = keep.max(1);
        h.trim_around(active);
        drop(h);
        self
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        // The lock guards plain data that every path leaves consistent.
        self.shared
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `compiled` the active version, then moves the epoch. Called with the
    /// `history` lock held.
    fn activate(&self, compiled: Arc<Compiled>) {
        self.shared.active.store(compiled);
        self.shared.epoch.fetch_add(1, Ordering::Release);
    }

    /// The active version.
    pub fn version(&self) -> u64 {
        self.shared.active.load().version
    }

    /// The versions kept for rollback, oldest first (the active one included).
    pub fn versions(&self) -> Vec<u64> {
        self.history().kept.iter().map(|c| c.version).collect()
    }

    /// Validates and compiles `set`, then makes it the active version; returns its
    /// version. On error nothing changes.
    pub fn load(&self, set: PolicySet) -> Result<u64, VersionError> {
        let mut h = self.history();
        let compiled = Arc::new(h.compile(set)?);
        let version = compiled.version;
        h.kept.push(Arc::clone(&compiled));
        self.activate(compiled);
        h.trim_around(version);
        Ok(version)
    }

    /// Makes the version loaded before the active one active again; returns it.
    pub fn rollback(&self) -> Result<u64, VersionError> {
        let h = self.history();
        let active = self.version();
        let pos = h.kept.iter().position(|c| c.version == active);
        match pos.and_then(|p| p.checked_sub(1)).map(|p| &h.kept[p]) {
            Some(previous) => {
                self.activate(Arc::clone(previous));
                Ok(previous.version)
            }
            None => Err(VersionError::NotKept(None)),
        }
    }

    /// Makes a kept `version` active again.
    pub fn rollback_to(&self, version: u64) -> Result<u64, VersionError> {
        let h = self.history();
        match h.kept.iter().find(|c| c.version == version) {
            Some(kept) => {
                self.activate(Arc::clone(kept));
                Ok(version)
            }
            None => Err(VersionError::NotKept(Some(version))),
        }
    }

    /// Runs `set` in shadow beside the active version: its decisions are audited as
    /// would-allow / would-deny and change no response. Returns its version.
    pub fn load_shadow(&self, set: PolicySet) -> Result<u64, VersionError> {
        let mut h = self.history();
        let compiled = Arc::new(h.compile(set)?);
        let version = compiled.version;
        self.shared.shadow.store(Some(compiled));
        self.shared.has_shadow.store(true, Ordering::Release);
        Ok(version)
    }

    /// The shadow version, if one runs.
    pub fn shadow_version(&self) -> Option<u64> {
        self.shared.shadow.load().as_ref().map(|c| c.version)
    }

    /// Makes the shadow version the active one; returns its version.
    pub fn promote_shadow(&self) -> Result<u64, VersionError> {
        let mut h = self.history();
        let Some(shadow) = self.shared.shadow.swap(None) else {
            return Err(VersionError::NoShadow);
        };
        self.shared.has_shadow.store(false, Ordering::Release);
        let version = shadow.version;
        h.kept.push(Arc::clone(&shadow));
        self.activate(shadow);
        h.trim_around(version);
        Ok(version)
    }

    /// Stops the shadow version.
    pub fn clear_shadow(&self) {
        let _h = self.history();
        self.shared.shadow.store(None);
        self.shared.has_shadow.store(false, Ordering::Release);
    }

    /// Decides `req` for `tenant` with the active version.
    pub fn decide(&self, tenant: &TenantContext, req: &PolicyRequest) -> Decision {
        self.shared.active.load().decide(tenant, req)
    }

    /// Whether `tenant` has `capability` (`"tool:web_search"`, `"feature:beta"`) under
    /// the active version, by the same levels and defaults as requests.
    pub fn can(&self, tenant: &TenantContext, capability: &str) -> bool {
        let active = self.shared.active.load();
        active.first(tenant, |l| l.capability(capability)).0
    }
}

impl History {
    fn compile(&mut self, set: PolicySet) -> Result<Compiled, VersionError> {
        let version = match set.version {
            Some(v) if v <= self.highest => {
                return Err(VersionError::Stale {
                    version: v,
                    newest: self.highest,
                })
            }
            Some(v) => v,
            None => self.highest.checked_add(1).ok_or(VersionError::Exhausted)?,
        };
        let compiled = Compiled::compile(set, version)?;
        self.highest = version;
        Ok(compiled)
    }

    /// Trims, never dropping the active version.
    fn trim_around(&mut self, active: u64) {
        while self.kept.len() > self.keep {
            let Some(pos) = self.kept.iter().position(|c| c.version != active) else {
                break;
            };
            self.kept.remove(pos);
        }
    }
}

impl PolicyEvaluator for RulePolicy {
    #[inline]
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        Answer::Now(Ok(self.decide(tenant, req)))
    }

    fn shadow(&self, tenant: &TenantContext, req: &PolicyRequest) -> Option<Decision> {
        if !self.shared.has_shadow.load(Ordering::Acquire) {
            return None;
        }
        let shadow = self.shared.shadow.load();
        shadow.as_ref().map(|s| s.decide(tenant, req))
    }

    /// Decisions depend on the tenant record (id, parent, tier), the method, the
    /// routed path and the capabilities only: remembered per epoch, never while a
    /// shadow version runs (each request must reach it).
    #[inline]
    fn memo_epoch(&self) -> Option<u64> {
        if self.shared.has_shadow.load(Ordering::Acquire) {
            return None;
        }
        Some(self.shared.epoch.load(Ordering::Acquire))
    }

    fn can(&self, tenant: &TenantContext, capability: &str) -> bool {
        RulePolicy::can(self, tenant, capability)
    }

    fn version(&self) -> Option<u64> {
        Some(RulePolicy::version(self))
    }
}
