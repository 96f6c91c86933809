//! The built-in rule evaluator: [`RulePolicy`].

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use actix_web::http::Method;
use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Deserialize;

use super::{Decision, PolicyError, PolicyEvaluator, PolicyRequest};
use crate::core::{error::ConfigError, TenantContext};

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

/// A tier, tenant or feature name: non-empty printable ASCII, at most 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
struct Name(Box<str>);

impl Name {
    fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_NAME_LEN || !raw.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "invalid name {raw:?}: 1 to {MAX_NAME_LEN} printable ASCII characters"
            ));
        }
        Ok(Self(raw.into()))
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

/// A route rule: `[METHOD ]/seg/*/**`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct RouteRule {
    raw: Box<str>,
    method: Option<Method>,
    segments: Box<[Segment]>,
    /// Ends in `**`.
    rest: bool,
    /// Where the path starts in `raw` (after `METHOD `, if any).
    path_at: usize,
    /// The rule has no wildcard: its path is matched by one comparison.
    literal: bool,
}

#[derive(Debug, Clone)]
enum Segment {
    Any,
    Literal(Box<str>),
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl RouteRule {
    fn parse(raw: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("invalid route rule {raw:?}: {why}"));
        let (method, path) = match raw.split_once(' ') {
            Some((m, p)) => (Some(m), p),
            None => (None, raw),
        };
        let method = match method {
            None | Some("*") => None,
            // A named method that did not parse must never widen to "any method".
            Some(m) => match METHODS
                .contains(&m)
                .then(|| Method::from_bytes(m.as_bytes()))
            {
                Some(Ok(m)) => Some(m),
                _ => {
                    return bad(&format!(
                        "unknown method {m:?} (use one of {} or *)",
                        METHODS.join(", ")
                    ))
                }
            },
        };
        if !path.starts_with('/') {
            return bad("the path must start with '/'");
        }
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("the path must be printable ASCII without spaces");
        }
        let mut parts: Vec<&str> = path[1..].split('/').collect();
        let rest = parts.last() == Some(&"**");
        if rest {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for part in parts {
            segments.push(match part {
                "*" => Segment::Any,
                "**" => return bad("'**' may only end a path"),
                p if p.contains('*') => return bad("'*' must be a whole segment"),
                p => Segment::Literal(p.into()),
            });
        }
        let wild = rest || segments.iter().any(|s| matches!(s, Segment::Any));
        Ok(Self {
            raw: raw.into(),
            method,
            segments: segments.into(),
            rest,
            path_at: raw.len() - path.len(),
            literal: !wild,
        })
    }

    /// Whether `method` and the route pattern (or path) `target` match; allocates
    /// nothing.
    #[inline]
    fn matches(&self, method: &Method, target: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        if self.literal {
            // Segment by segment, literal segments match exactly when the whole
            // strings are equal.
            return self.raw[self.path_at..] == *target;
        }
        let Some(target) = target.strip_prefix('/') else {
            return false;
        };
        let mut parts = target.split('/');
        for segment in &*self.segments {
            match (segment, parts.next()) {
                (_, None) => return false,
                (Segment::Any, Some(p)) if !p.is_empty() => {}
                (Segment::Literal(l), Some(p)) if **l == *p => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

impl RouteRule {
    /// Whether `method` and a concrete `path` (as actix routes it) match. A segment
    /// written as a route parameter (`{id}`, `v{n}`) matches any one non-empty
    /// segment, and a last one with a pattern of its own (`{rest:.+}`, which may span
    /// segments) matches the rest: whatever a rule matches as a route pattern, it matches on every path
    /// that pattern routes. Allocates nothing.
    fn matches_path(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        if self.literal && !self.raw[self.path_at..].contains('{') {
            return self.raw[self.path_at..] == *path;
        }
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = path.split('/');
        let last = self.segments.len().saturating_sub(1);
        for (i, segment) in self.segments.iter().enumerate() {
            let Some(p) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Any if !p.is_empty() => {}
                Segment::Literal(l) if l.contains('{') => {
                    if i == last && l.contains(':') {
                        return true;
                    }
                    if p.is_empty() {
                        return false;
                    }
                }
                Segment::Literal(l) if **l == *p => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

impl TryFrom<String> for RouteRule {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

/// A capability rule: `kind:name`, `kind:*` or `*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct CapabilityRule {
    raw: Box<str>,
    matching: Matching,
}

/// How a [`CapabilityRule`] matches, as read from its text.
#[derive(Debug, Clone, Copy)]
enum Matching {
    /// `*`: everything.
    Any,
    /// `kind:*`: a name of the kind; the length of `kind:`.
    Kind(usize),
    /// `kind:name`: exactly the rule's text.
    Exact,
}

impl CapabilityRule {
    fn parse(raw: &str) -> Result<Self, String> {
        if raw == "*" {
            return Ok(Self {
                raw: raw.into(),
                matching: Matching::Any,
            });
        }
        let bad = || {
            Err(format!(
                "invalid capability {raw:?}: write kind:name (e.g. model:gpt-4o), kind:* or *"
            ))
        };
        let Some((kind, name)) = raw.split_once(':') else {
            return bad();
        };
        let kind_ok = !kind.is_empty()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        let name_ok = !name.is_empty()
            && raw.len() <= MAX_NAME_LEN
            && name.bytes().all(|b| b.is_ascii_graphic())
            && (name == "*" || !name.contains('*'));
        if !kind_ok || !name_ok {
            return bad();
        }
        Ok(Self {
            raw: raw.into(),
            matching: if name == "*" {
                Matching::Kind(kind.len() + 1)
            } else {
                Matching::Exact
            },
        })
    }

    fn matches(&self, capability: &str) -> bool {
        match self.matching {
            Matching::Exact => *self.raw == *capability,
            Matching::Kind(len) => {
                capability.len() > len && capability.starts_with(&self.raw[..len])
            }
            Matching::Any => true,
        }
    }
}

impl TryFrom<String> for CapabilityRule {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

/// One level, compiled: each rule with its id.
#[derive(Debug, Default)]
struct Level {
    route_deny: Vec<(RouteRule, Arc<str>)>,
    route_allow: Vec<(RouteRule, Arc<str>)>,
    cap_deny: Vec<(CapabilityRule, Arc<str>)>,
    cap_allow: Vec<(CapabilityRule, Arc<str>)>,
}

impl Level {
    fn compile(name: &str, rules: Rules) -> Result<Self, ConfigError> {
        if let Some(e) = rules.errors.into_iter().next() {
            return Err(ConfigError::InvalidRule {
                at: name.to_owned(),
                reason: e,
            });
        }
        let id = |list: &str, raw: &str| -> Arc<str> { format!("{name} {list} {raw}").into() };
        let mut level = Self {
            route_deny: named(rules.routes.deny, |r| id("deny", &r.raw)),
            route_allow: named(rules.routes.allow, |r| id("allow", &r.raw)),
            cap_deny: named(rules.capabilities.deny, |c| id("deny", &c.raw)),
            cap_allow: named(rules.capabilities.allow, |c| id("allow", &c.raw)),
        };
        for (feature, on) in rules.features {
            let raw = format!("feature:{}", feature.0);
            let rule = CapabilityRule::parse(&raw).map_err(|reason| ConfigError::InvalidRule {
                at: name.to_owned(),
                reason,
            })?;
            let id = id(if on { "feature-on" } else { "feature-off" }, &feature.0);
            if on {
                level.cap_allow.push((rule, id));
            } else {
                level.cap_deny.push((rule, id));
            }
        }
        Ok(level)
    }

    /// The first deny, else the first allow, among the route rules `hit` matches.
    fn routes(&self, hit: impl Fn(&RouteRule) -> bool) -> Option<(bool, &Arc<str>)> {
        if let Some((_, id)) = self.route_deny.iter().find(|(r, _)| hit(r)) {
            return Some((false, id));
        }
        self.route_allow
            .iter()
            .find(|(r, _)| hit(r))
            .map(|(_, id)| (true, id))
    }

    fn route(&self, method: &Method, target: &str) -> Option<(bool, &Arc<str>)> {
        self.routes(|r| r.matches(method, target))
    }

    /// As [`route`](Self::route), for a concrete path.
    fn path(&self, method: &Method, path: &str) -> Option<(bool, &Arc<str>)> {
        self.routes(|r| r.matches_path(method, path))
    }

    fn capability(&self, capability: &str) -> Option<(bool, &Arc<str>)> {
        if let Some((_, id)) = self.cap_deny.iter().find(|(c, _)| c.matches(capability)) {
            return Some((false, id));
        }
        self.cap_allow
            .iter()
            .find(|(c, _)| c.matches(capability))
            .map(|(_, id)| (true, id))
    }
}

/// Pairs each rule with its id.
fn named<T>(rules: Vec<T>, id: impl Fn(&T) -> Arc<str>) -> Vec<(T, Arc<str>)> {
    rules
        .into_iter()
        .map(|r| {
            let id = id(&r);
            (r, id)
        })
        .collect()
}

type Map = HashMap<Box<str>, Level, foldhash::fast::RandomState>;

/// The tiers' levels. Policies name a handful of tiers, and a request's tier is found
/// among a few by comparing names (lengths first), which costs less than hashing it;
/// past [`Tiers::FEW`] they are hashed.
#[derive(Debug)]
enum Tiers {
    Few(Box<[(Box<str>, Level)]>),
    Many(Map),
}

impl Tiers {
    const FEW: usize = 8;

    fn new(levels: Vec<(Box<str>, Level)>) -> Self {
        if levels.len() <= Self::FEW {
            Self::Few(levels.into())
        } else {
            Self::Many(levels.into_iter().collect())
        }
    }

    #[inline]
    fn get(&self, tier: &str) -> Option<&Level> {
        match self {
            Self::Few(levels) => levels.iter().find(|(n, _)| **n == *tier).map(|(_, l)| l),
            Self::Many(map) => map.get(tier),
        }
    }
}

/// A policy version, compiled.
#[derive(Debug)]
struct Compiled {
    version: u64,
    default_allow: bool,
    default_rule: Arc<str>,
    default: Level,
    tiers: Tiers,
    tenants: Map,
}

impl Compiled {
    fn compile(set: PolicySet, version: u64) -> Result<Self, ConfigError> {
        let mut tiers = Vec::with_capacity(set.tiers.len());
        for (tier, rules) in set.tiers {
            let level = Level::compile(&format!("tier:{}", tier.0), rules)?;
            tiers.push((tier.0, level));
        }
        // Names are unique: they were the keys of a map.
        let tiers = Tiers::new(tiers);
        let mut tenants = Map::default();
        for (tenant, rules) in set.tenants {
            let level = Level::compile(&format!("tenant:{}", tenant.0), rules)?;
            tenants.insert(tenant.0, level);
        }
        Ok(Self {
            version,
            default_allow: set.default_allow,
            default_rule: if set.default_allow {
                "default-allow".into()
            } else {
                "default-deny".into()
            },
            default: Level::compile("default", set.default)?,
            tiers,
            tenants,
        })
    }

    /// The levels that apply to `tenant`, most specific first.
    #[inline]
    fn levels<'a>(&'a self, tenant: &TenantContext) -> [Option<&'a Level>; 4] {
        let record = tenant.record();
        // Most policies have no per-tenant rules: no id is hashed for them.
        let tenant_level = |id: &str| {
            if self.tenants.is_empty() {
                None
            } else {
                self.tenants.get(id)
            }
        };
        [
            tenant_level(tenant.id().as_str()),
            record.parent().and_then(|p| tenant_level(p.as_str())),
            self.tiers.get(record.tier()),
            Some(&self.default),
        ]
    }

    fn first<'a>(
        &'a self,
        tenant: &TenantContext,
        mut ask: impl FnMut(&'a Level) -> Option<(bool, &'a Arc<str>)>,
    ) -> (bool, &'a Arc<str>) {
        self.levels(tenant)
            .into_iter()
            .flatten()
            .find_map(&mut ask)
            .unwrap_or((self.default_allow, &self.default_rule))
    }

    fn decide(&self, tenant: &TenantContext, req: &PolicyRequest) -> Decision {
        let target = req.route().unwrap_or(req.path());
        let (allowed, rule) = self.first(tenant, |l| l.route(req.method(), target));
        if !allowed {
            return self.decision(false, "no rule allows this route", rule);
        }
        // The route is the first pattern that matches the path; the router may run
        // another one, whose guards (a method guard of `#[post]`, say) pass where the
        // first's fail. The path itself is judged too, so no route a request can
        // reach escapes a deny that applies to it.
        if req.route().is_some_and(|r| r != req.path()) {
            let (allowed, path_rule) = self.first(tenant, |l| l.path(req.method(), req.path()));
            if !allowed {
                return self.decision(false, "no rule allows this path", path_rule);
            }
        }
        for capability in req.capabilities() {
            let (granted, cap_rule) = self.first(tenant, |l| l.capability(capability));
            if !granted {
                return self
                    .decision(false, "a capability asked for is not granted", cap_rule)
                    .with_refused(capability.as_str());
            }
        }
        self.decision(true, "allowed by rule", rule)
    }

    #[inline]
    fn decision(&self, allowed: bool, reason: &'static str, rule: &Arc<str>) -> Decision {
        Decision {
            allowed,
            reason: reason.into(),
            rule: Some(Arc::clone(rule)),
            version: self.version,
            refused: None,
        }
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
/// same versions: keep one to reload, give one to [`TenantPolicy`](super::TenantPolicy).
///
/// ```
/// use actix_tenancy::policy::{PolicySet, RulePolicy, Rules};
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

    /// A policy from a JSON document (see [`PolicySet`]).
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        Self::new(PolicySet::from_json(text)?)
    }

    /// A policy from a TOML document (feature `toml`).
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::new(PolicySet::from_toml(text)?)
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
    pub fn load(&self, set: PolicySet) -> Result<u64, ConfigError> {
        let mut h = self.history();
        let compiled = Arc::new(h.compile(set)?);
        let version = compiled.version;
        h.kept.push(Arc::clone(&compiled));
        self.activate(compiled);
        h.trim_around(version);
        Ok(version)
    }

    /// [`load`](Self::load) from JSON.
    pub fn load_json(&self, text: &str) -> Result<u64, ConfigError> {
        self.load(PolicySet::from_json(text)?)
    }

    /// [`load`](Self::load) from TOML (feature `toml`).
    #[cfg(feature = "toml")]
    pub fn load_toml(&self, text: &str) -> Result<u64, ConfigError> {
        self.load(PolicySet::from_toml(text)?)
    }

    /// Makes the version loaded before the active one active again; returns it.
    pub fn rollback(&self) -> Result<u64, ConfigError> {
        let h = self.history();
        let active = self.version();
        let pos = h.kept.iter().position(|c| c.version == active);
        match pos.and_then(|p| p.checked_sub(1)).map(|p| &h.kept[p]) {
            Some(previous) => {
                self.activate(Arc::clone(previous));
                Ok(previous.version)
            }
            None => Err(ConfigError::PolicyVersionNotKept(None)),
        }
    }

    /// Makes a kept `version` active again.
    pub fn rollback_to(&self, version: u64) -> Result<u64, ConfigError> {
        let h = self.history();
        match h.kept.iter().find(|c| c.version == version) {
            Some(kept) => {
                self.activate(Arc::clone(kept));
                Ok(version)
            }
            None => Err(ConfigError::PolicyVersionNotKept(Some(version))),
        }
    }

    /// Runs `set` in shadow beside the active version: its decisions are audited as
    /// would-allow / would-deny and change no response. Returns its version.
    pub fn load_shadow(&self, set: PolicySet) -> Result<u64, ConfigError> {
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
    pub fn promote_shadow(&self) -> Result<u64, ConfigError> {
        let mut h = self.history();
        let Some(shadow) = self.shared.shadow.swap(None) else {
            return Err(ConfigError::NoShadowPolicy);
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
    fn compile(&mut self, set: PolicySet) -> Result<Compiled, ConfigError> {
        let version = match set.version {
            Some(v) if v <= self.highest => {
                return Err(ConfigError::StalePolicyVersion {
                    version: v,
                    newest: self.highest,
                })
            }
            Some(v) => v,
            None => self
                .highest
                .checked_add(1)
                .ok_or(ConfigError::PolicyVersionsExhausted)?,
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

#[async_trait::async_trait]
impl PolicyEvaluator for RulePolicy {
    async fn evaluate(
        &self,
        tenant: &TenantContext,
        req: &PolicyRequest,
    ) -> Result<Decision, PolicyError> {
        Ok(self.decide(tenant, req))
    }

    #[inline]
    fn evaluate_now(
        &self,
        tenant: &TenantContext,
        req: &PolicyRequest,
    ) -> Option<Result<Decision, PolicyError>> {
        Some(Ok(self.decide(tenant, req)))
    }

    fn shadow_now(&self, tenant: &TenantContext, req: &PolicyRequest) -> Option<Decision> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_rules_match_by_segment() {
        let r = RouteRule::parse("GET /items/*").unwrap();
        assert!(r.matches(&Method::GET, "/items/{id}"));
        assert!(r.matches(&Method::GET, "/items/42"));
        assert!(!r.matches(&Method::POST, "/items/42"));
        assert!(!r.matches(&Method::GET, "/items"));
        assert!(!r.matches(&Method::GET, "/items/"));
        assert!(!r.matches(&Method::GET, "/items/42/parts"));
        assert!(!r.matches(&Method::GET, "items/42"));

        let r = RouteRule::parse("/admin/**").unwrap();
        for p in ["/admin", "/admin/", "/admin/users/{id}"] {
            assert!(r.matches(&Method::DELETE, p), "{p}");
        }
        assert!(!r.matches(&Method::GET, "/administrator"));

        let all = RouteRule::parse("* /**").unwrap();
        assert!(all.matches(&Method::PATCH, "/"));
        let root = RouteRule::parse("/").unwrap();
        assert!(root.matches(&Method::GET, "/"));
        assert!(!root.matches(&Method::GET, "/x"));
    }

    #[test]
    fn rules_match_concrete_paths_with_parameters_as_segments() {
        let r = RouteRule::parse("GET /items/{id}").unwrap();
        for p in ["/items/7", "/items/export", "/items/{id}"] {
            assert!(r.matches_path(&Method::GET, p), "{p}");
        }
        for p in ["/items", "/items/", "/items/7/parts", "items/7"] {
            assert!(!r.matches_path(&Method::GET, p), "{p}");
        }
        assert!(!r.matches_path(&Method::POST, "/items/7"));
        let tail = RouteRule::parse("/files/{rest:.+}").unwrap();
        assert!(tail.matches_path(&Method::GET, "/files/a/b/c"));
        assert!(!tail.matches_path(&Method::GET, "/other/a"));
        let literal = RouteRule::parse("POST /items/export").unwrap();
        assert!(literal.matches_path(&Method::POST, "/items/export"));
        assert!(!literal.matches_path(&Method::POST, "/items/exports"));
        let wild = RouteRule::parse("* /items/*").unwrap();
        assert!(wild.matches_path(&Method::PUT, "/items/export"));
        assert!(!wild.matches_path(&Method::PUT, "/items//"));
    }

    #[test]
    fn literal_rules_match_exactly_as_the_segment_walk_does() {
        let targets = [
            "",
            "/",
            "//",
            "/a",
            "/a/",
            "/a//",
            "/a/b",
            "/a/b/",
            "/ab",
            "/a/bc",
            "a/b",
            "/A/b",
            "/a/b/c",
            "/items/{id}",
        ];
        for raw in ["/", "/a", "/a/", "/a/b", "/a//", "GET /a/b", "/items/{id}"] {
            let fast = RouteRule::parse(raw).unwrap();
            assert!(fast.literal, "{raw}");
            let walk = RouteRule {
                literal: false,
                ..fast.clone()
            };
            for t in targets {
                for m in [Method::GET, Method::POST] {
                    assert_eq!(fast.matches(&m, t), walk.matches(&m, t), "{raw} vs {t}");
                }
            }
        }
        for wild in ["/a/*", "/a/**", "* /**"] {
            assert!(!RouteRule::parse(wild).unwrap().literal, "{wild}");
        }
    }

    #[test]
    fn bad_route_rules_are_rejected_with_the_reason() {
        for (raw, why) in [
            ("GETT /x", "unknown method"),
            ("get /x", "unknown method"),
            ("GET x", "start with '/'"),
            ("GET /a/**/b", "'**' may only end"),
            ("GET /a*", "whole segment"),
            ("GET /a b", "printable"),
            ("", "start with '/'"),
        ] {
            let err = RouteRule::parse(raw).unwrap_err();
            assert!(err.contains(why), "{raw:?}: {err}");
        }
    }

    #[test]
    fn tiers_are_found_by_name_among_few_and_many() {
        for n in [0, 1, Tiers::FEW, Tiers::FEW + 1, 40] {
            let mut set = PolicySet::new();
            for i in 0..n {
                set = set.tier(
                    &format!("tier{i}"),
                    Rules::new().allow(&format!("GET /t{i}")),
                );
            }
            let compiled = Compiled::compile(set, 1).unwrap();
            assert_eq!(
                matches!(compiled.tiers, Tiers::Many(_)),
                n > Tiers::FEW,
                "{n} tiers"
            );
            for i in 0..n {
                let level = compiled.tiers.get(&format!("tier{i}")).unwrap();
                assert!(level.route(&Method::GET, &format!("/t{i}")).is_some());
                assert!(level.route(&Method::GET, &format!("/t{}", i + 1)).is_none());
            }
            for absent in ["", "tier", "tier00", "Tier0", "tier0 "] {
                assert!(compiled.tiers.get(absent).is_none(), "{absent:?}");
            }
        }
    }

    #[test]
    fn capability_rules() {
        let exact = CapabilityRule::parse("model:gpt-4o").unwrap();
        assert!(exact.matches("model:gpt-4o"));
        assert!(!exact.matches("model:gpt-4o-mini"));
        let kind = CapabilityRule::parse("tool:*").unwrap();
        assert!(kind.matches("tool:web_search"));
        assert!(!kind.matches("tool:"));
        assert!(!kind.matches("toolbox:x"));
        assert!(!kind.matches("model:x"));
        assert!(CapabilityRule::parse("*").unwrap().matches("anything:x"));
        for bad in [
            "model",
            ":x",
            "model:",
            "Model:x",
            "model:gpt*",
            "model:a b",
            "m:*x",
        ] {
            assert!(CapabilityRule::parse(bad).is_err(), "{bad}");
        }
    }
}
