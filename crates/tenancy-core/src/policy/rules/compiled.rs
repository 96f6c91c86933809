//! A policy version, compiled: its levels, its tiers, and the decision they give.

use super::*;

/// One level, compiled: each rule with its id.
#[derive(Debug, Default)]
pub(super) struct Level {
    pub(super) route_deny: Vec<(RouteRule, Arc<str>)>,
    pub(super) route_allow: Vec<(RouteRule, Arc<str>)>,
    pub(super) cap_deny: Vec<(CapabilityRule, Arc<str>)>,
    pub(super) cap_allow: Vec<(CapabilityRule, Arc<str>)>,
}

impl Level {
    pub(super) fn compile(name: &str, rules: Rules) -> Result<Self, ConfigError> {
        if let Some(e) = rules.errors.into_iter().next() {
            return Err(ConfigError::invalid("policy rule of", name, e));
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
            let rule = CapabilityRule::parse(&raw)
                .map_err(|reason| ConfigError::invalid("policy rule of", name, reason))?;
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
    pub(super) fn routes(&self, hit: impl Fn(&RouteRule) -> bool) -> Option<(bool, &Arc<str>)> {
        if let Some((_, id)) = self.route_deny.iter().find(|(r, _)| hit(r)) {
            return Some((false, id));
        }
        self.route_allow
            .iter()
            .find(|(r, _)| hit(r))
            .map(|(_, id)| (true, id))
    }

    pub(super) fn route(&self, method: &Method, target: &str) -> Option<(bool, &Arc<str>)> {
        self.routes(|r| r.matches(method, target))
    }

    /// As [`route`](Self::route), for a concrete path.
    pub(super) fn path(&self, method: &Method, path: &str) -> Option<(bool, &Arc<str>)> {
        self.routes(|r| r.matches_path(method, path))
    }

    pub(super) fn capability(&self, capability: &str) -> Option<(bool, &Arc<str>)> {
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
pub(super) fn named<T>(rules: Vec<T>, id: impl Fn(&T) -> Arc<str>) -> Vec<(T, Arc<str>)> {
    rules
        .into_iter()
        .map(|r| {
            let id = id(&r);
            (r, id)
        })
        .collect()
}

pub(super) type Map = HashMap<Box<str>, Level, foldhash::fast::RandomState>;

/// The tiers' levels. Policies name a handful of tiers, and a request's tier is found
/// among a few by comparing names (lengths first), which costs less than hashing it;
/// past [`Tiers::FEW`] they are hashed.
#[derive(Debug)]
pub(super) enum Tiers {
    Few(Box<[(Box<str>, Level)]>),
    Many(Map),
}

impl Tiers {
    pub(super) const FEW: usize = 8;

    pub(super) fn new(levels: Vec<(Box<str>, Level)>) -> Self {
        if levels.len() <= Self::FEW {
            Self::Few(levels.into())
        } else {
            Self::Many(levels.into_iter().collect())
        }
    }

    #[inline]
    pub(super) fn get(&self, tier: &str) -> Option<&Level> {
        match self {
            Self::Few(levels) => levels.iter().find(|(n, _)| **n == *tier).map(|(_, l)| l),
            Self::Many(map) => map.get(tier),
        }
    }
}

/// A policy version, compiled.
#[derive(Debug)]
pub(super) struct Compiled {
    pub(super) version: u64,
    pub(super) default_allow: bool,
    pub(super) default_rule: Arc<str>,
    pub(super) default: Level,
    pub(super) tiers: Tiers,
    pub(super) tenants: Map,
}

impl Compiled {
    pub(super) fn compile(set: PolicySet, version: u64) -> Result<Self, ConfigError> {
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
    pub(super) fn levels<'a>(&'a self, tenant: &TenantContext) -> [Option<&'a Level>; 4] {
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

    pub(super) fn first<'a>(
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

    pub(super) fn decide(&self, tenant: &TenantContext, req: &PolicyRequest) -> Decision {
        let target = req.route().unwrap_or(req.path());
        let (allowed, rule) = self.first(tenant, |l| l.route(req.method(), target));
        if !allowed {
            return self.decision(false, "no rule allows this route", rule);
        }
        // The route is the first pattern that matches the path; the router may run
        // another one, whose guards (a method guard of `#[post]`, say) pass where the
        // first's fail. The path itself is judged too, so no route a request can
        // reach escapes a deny that applies to it: also when the first pattern is
        // the path itself (`/items/export` before `/items/{id}`), whose rules with a
        // parameter only the path walk matches.
        if req.route().is_some() {
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
    pub(super) fn decision(
        &self,
        allowed: bool,
        reason: &'static str,
        rule: &Arc<str>,
    ) -> Decision {
        Decision {
            allowed,
            reason: reason.into(),
            rule: Some(Arc::clone(rule)),
            version: self.version,
            refused: None,
        }
    }
}
