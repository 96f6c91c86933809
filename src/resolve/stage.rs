//! The resolution stage: [`TenantResolver`], its builder, and the stage it runs.

use std::{
    borrow::Cow,
    cell::RefCell,
    collections::HashMap,
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use futures_util::FutureExt as _;

use actix_web::{dev::ServiceRequest, http::Method};

use super::source::{self, AsyncFn, Imp, Source};
use crate::{
    core::caught::caught_async,
    core::{
        error::{ConfigError, TenancyError},
        observe::{AuditEvent, Outcome, Stage as StageName},
        Access, Answer, Moment, Principal, SourceKind, StatusRules, TenantContext, TenantId,
        TenantIdRule, TenantRecord,
    },
    pipeline::{
        common_setters, wait, Built, Common, Decision, Exempt, Flow, Settings, Stage, Step, Worker,
        WorkerCx,
    },
    registry::{Lease, Lookup, RegistryError, TenantRegistry},
};

/// The resolution middleware. Build it with [`TenantResolver::builder`], once per
/// process, and `.wrap()` clones of it; or hand it to [`Tenancy`](crate::Tenancy) to
/// compose it with the other stages.
#[derive(Clone)]
pub struct TenantResolver(Built<ResolveStage>);

impl TenantResolver {
    /// A builder validating tenants against `registry`. Wrap the registry in a
    /// [`CachedRegistry`](crate::registry::CachedRegistry) unless it answers from
    /// memory already. Pass an `Arc` to keep a handle, e.g. to invalidate the cache
    /// when a tenant changes:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use actix_tenancy::{registry::{CacheConfig, CachedRegistry, InMemoryRegistry}, Source, TenantResolver};
    ///
    /// let cache = Arc::new(CachedRegistry::new(InMemoryRegistry::new(), CacheConfig::default()));
    /// let resolver = TenantResolver::builder(Arc::clone(&cache))
    ///     .source(Source::header())
    ///     .build()
    ///     .unwrap();
    /// // later, when tenant "acme" changes:
    /// cache.invalidate("acme");
    /// ```
    pub fn builder(registry: impl TenantRegistry) -> TenantResolverBuilder {
        TenantResolverBuilder {
            registry: Arc::new(registry),
            sources: Vec::new(),
            rule: TenantIdRule::Default,
            allow_missing: false,
            exempt: Vec::new(),
            exempt_prefixes: Vec::new(),
            status_rules: StatusRules::default(),
            region: None,
            registry_timeout: Duration::from_secs(2),
            common: Common::default(),
        }
    }
}

/// Builds a [`TenantResolver`]. Defaults are the safe ones: no tenant is a `401`, ids
/// follow the default rule, suspended tenants look unknown.
#[must_use]
pub struct TenantResolverBuilder {
    registry: Arc<dyn TenantRegistry>,
    sources: Vec<Source>,
    rule: TenantIdRule,
    allow_missing: bool,
    exempt: Vec<String>,
    exempt_prefixes: Vec<String>,
    status_rules: StatusRules,
    region: Option<String>,
    registry_timeout: Duration,
    common: Common,
}

impl fmt::Debug for TenantResolverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantResolverBuilder")
            .field("sources", &self.sources)
            .field("allow_missing", &self.allow_missing)
            .finish_non_exhaustive()
    }
}

impl TenantResolverBuilder {
    /// Adds a source; sources are consulted in the order added.
    pub fn source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    /// Lets requests with no tenant through (default `false`: `401 tenant_missing`).
    /// Handlers then see no tenant: take `Option<Tenant>`. Malformed and conflicting
    /// ids are still rejected.
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }

    /// A path that needs no tenant, matched exactly against the routed path
    /// (e.g. `/health`). Sources are not read there.
    pub fn exempt(mut self, path: impl Into<String>) -> Self {
        self.exempt.push(path.into());
        self
    }

    /// Every path under `prefix` needs no tenant. Use a prefix ending in `/` (e.g.
    /// `/public/`) so `/publicity` is not exempted by accident.
    pub fn exempt_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.exempt_prefixes.push(prefix.into());
        self
    }

    /// The rule ids are validated with (default: [`TenantIdRule::Default`]).
    pub fn id_rule(mut self, rule: TenantIdRule) -> Self {
        self.rule = rule;
        self
    }

    /// What each tenant status gets (default: [`StatusRules::default`]).
    pub fn status_rules(mut self, rules: StatusRules) -> Self {
        self.status_rules = rules;
        self
    }

    /// This deployment's region. A tenant whose record names another region gets
    /// `421 tenant_misdirected`; records without a region pass.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// How long a registry lookup, and each [async custom source](Source::custom_async),
    /// may take before the request fails closed with `503 tenant_unavailable`. Default
    /// 2 s. Warm cache hits never wait.
    pub fn registry_timeout(mut self, timeout: Duration) -> Self {
        self.registry_timeout = timeout;
        self
    }

    common_setters!();

    /// Checks the configuration and builds the resolver.
    pub fn build(self) -> Result<TenantResolver, ConfigError> {
        if self.sources.is_empty() {
            return Err(ConfigError::NoSources);
        }
        let mut sync_sources = Vec::new();
        let mut async_sources = Vec::new();
        let mut seen = Vec::new();
        for (rank, s) in self.sources.into_iter().enumerate() {
            let imp = s.imp?;
            // The same source twice is a configuration mistake; custom sources may repeat.
            let key = match &imp {
                Imp::Claim | Imp::Host(_) | Imp::Path(_) => Some(s.kind.as_str().to_owned()),
                Imp::Header(name) => Some(format!("header {name}")),
                Imp::Custom(_) | Imp::CustomAsync(_) => None,
                // Several certificate rules (a SAN URI and the CN) may check each other.
                #[cfg(feature = "tls")]
                Imp::Certificate(_) => None,
            };
            if let Some(key) = key {
                if seen.contains(&key) {
                    return Err(ConfigError::DuplicateSource(s.kind.as_str()));
                }
                seen.push(key);
            }
            match imp {
                Imp::CustomAsync(f) => async_sources.push((rank, s.kind, f)),
                imp => sync_sources.push((rank, s.kind, imp)),
            }
        }
        for p in self.exempt.iter().chain(&self.exempt_prefixes) {
            if !p.starts_with('/') {
                return Err(ConfigError::InvalidExemptPath(p.clone()));
            }
        }
        let stage = ResolveStage {
            registry: self.registry,
            sync_sources,
            async_sources,
            rule: self.rule,
            allow_missing: self.allow_missing,
            exempt: Exempt {
                paths: self.exempt,
                prefixes: self.exempt_prefixes,
            },
            status_rules: self.status_rules,
            region: self.region,
            registry_timeout: self.registry_timeout,
        };
        Ok(TenantResolver(Built::new(stage, self.common)))
    }
}

impl TenantResolver {
    /// Whether a verified principal's tenant is read (and so wins over other sources).
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) fn reads_claims(&self) -> bool {
        self.0
            .stage
            .sync_sources
            .iter()
            .any(|(_, kind, _)| *kind == SourceKind::Claim)
    }
}

/// The resolution stage, shared by [`TenantResolver`] and [`Tenancy`](crate::Tenancy).
pub(crate) struct ResolveStage {
    registry: Arc<dyn TenantRegistry>,
    sync_sources: Vec<(usize, SourceKind, Imp)>,
    async_sources: Vec<(usize, SourceKind, AsyncFn)>,
    rule: TenantIdRule,
    allow_missing: bool,
    exempt: Exempt,
    status_rules: StatusRules,
    region: Option<String>,
    registry_timeout: Duration,
}

impl fmt::Debug for ResolveStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<_> = self
            .sync_sources
            .iter()
            .map(|s| (s.0, s.1))
            .chain(self.async_sources.iter().map(|s| (s.0, s.1)))
            .collect();
        f.debug_struct("TenantResolver")
            .field("sources", &kinds)
            .field("allow_missing", &self.allow_missing)
            .field("exempt", &self.exempt.paths)
            .field("exempt_prefixes", &self.exempt.prefixes)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// What resolution decided: a tenant, no tenant (`Ok(None)`), or a rejection.
pub(crate) type Resolved = Result<Option<Arc<TenantContext>>, TenancyError>;

/// The tenant named so far: its id (validated, borrowed from the request where it
/// could be), the source, and the source's rank.
struct Named<'a> {
    id: Cow<'a, str>,
    kind: SourceKind,
    rank: usize,
}

impl<'a> Named<'a> {
    /// Folds one more source's answer in: agree, or remember the first conflict; and
    /// keep the best-ranked source (verified first, then configuration order).
    fn merge(slot: &mut Option<Named<'a>>, conflict: &mut Option<TenancyError>, next: Named<'a>) {
        let Some(cur) = slot else {
            *slot = Some(next);
            return;
        };
        let next_wins = (next.kind.is_verified() && !cur.kind.is_verified())
            || (next.kind.is_verified() == cur.kind.is_verified() && next.rank < cur.rank);
        if cur.id != next.id {
            if conflict.is_none() {
                let (first, second) = if next_wins {
                    (next.kind, cur.kind)
                } else {
                    (cur.kind, next.kind)
                };
                *conflict = Some(TenancyError::TenantConflict { first, second });
            }
        } else if next_wins {
            *slot = Some(next);
        }
    }
}

fn registry_panicked() -> TenancyError {
    TenancyError::TenantUnavailable {
        retry_after: None,
        reason: "the tenant registry panicked".into(),
    }
}

/// Methods that do not change state; read-only tenants may use them.
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

impl Stage for ResolveStage {
    fn worker(self: Arc<Self>, cx: &WorkerCx) -> Box<dyn Worker> {
        Box::new(ResolveWorker {
            stage: self,
            settings: Arc::clone(&cx.settings),
            contexts: Rc::default(),
        })
    }

    fn resolves(&self) -> bool {
        true
    }

    fn exempt(&self) -> Option<&Exempt> {
        Some(&self.exempt)
    }
}

/// The resolution stage on one worker, with its contexts.
#[derive(Clone)]
struct ResolveWorker {
    stage: Arc<ResolveStage>,
    settings: Arc<Settings>,
    contexts: Rc<ContextCache>,
}

impl Worker for ResolveWorker {
    fn prepare(&self, req: &ServiceRequest, flow: &mut Flow) -> Step {
        // The verified principal has one home, the request extensions: an
        // authentication stage of this pipeline or a layer outside put it there.
        let principal = Principal::attached(req);
        let now = flow.now();
        let at = At {
            settings: &self.settings,
            contexts: &self.contexts,
            exempt: flow.exempt,
            now,
            principal: principal.as_ref(),
            outer: flow.outer.as_ref(),
        };
        match self.stage.run_now(req, &at) {
            Some(resolved) => self.settle(req, flow, resolved).into(),
            None => {
                let me = self.clone();
                wait(move |req, flow| {
                    Box::pin(async move {
                        let at = At {
                            settings: &me.settings,
                            contexts: &me.contexts,
                            exempt: flow.exempt,
                            now,
                            principal: principal.as_ref(),
                            outer: flow.outer.as_ref(),
                        };
                        let resolved = me.stage.run(req, &at).await;
                        me.settle(req, flow, resolved)
                    })
                })
            }
        }
    }
}

impl ResolveWorker {
    /// Stores the resolution for the extractors, or refuses.
    #[inline(always)]
    fn settle(&self, req: &ServiceRequest, flow: &mut Flow, resolved: Resolved) -> Decision {
        match resolved {
            Ok(tenant) => {
                flow.settle(req, &self.settings, tenant);
                Decision::Pass
            }
            Err(err) => err.into(),
        }
    }
}

/// What one resolution runs with: the pipeline's settings, the worker's contexts, and
/// whether the path is exempt.
/// The registry's lookup, once it is done.
type LaterLookup<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Lookup, RegistryError>> + Send + 'a>>;

/// What the registry answered when asked.
enum Asked<'a> {
    /// The answer, with the lease the registry granted on it.
    Now(Result<Lookup, TenancyError>, Option<Lease>),
    /// The wait for the answer.
    Later(LaterLookup<'a>),
}

/// The registry could not answer.
fn unavailable(err: RegistryError) -> TenancyError {
    TenancyError::TenantUnavailable {
        retry_after: None,
        reason: err.to_string().into(),
    }
}

struct At<'a> {
    settings: &'a Settings,
    contexts: &'a ContextCache,
    exempt: bool,
    /// The request's time, shared by the stages.
    now: std::time::Instant,
    /// The request's verified principal, if any.
    principal: Option<&'a Principal>,
    /// The tenant an outer resolver settled: this resolution must agree with it.
    outer: Option<&'a Arc<TenantContext>>,
}

impl ResolveStage {
    /// Runs the synchronous sources, in order.
    fn identify_sync<'a>(
        &self,
        req: &'a ServiceRequest,
        principal: Option<&'a Principal>,
        named: &mut Option<Named<'a>>,
        conflict: &mut Option<TenancyError>,
    ) -> Result<(), TenancyError> {
        for (rank, kind, imp) in &self.sync_sources {
            if let Some(id) = imp.extract(*kind, req, principal, &self.rule)? {
                Named::merge(
                    named,
                    conflict,
                    Named {
                        id,
                        kind: *kind,
                        rank: *rank,
                    },
                );
            }
        }
        Ok(())
    }

    /// Runs every source; at most one tenant comes out. Malformed input anywhere is a
    /// `400`, even when two other sources already disagree: a conflict is only
    /// reported once every source has been read and validated.
    async fn identify<'a>(
        &self,
        req: &'a ServiceRequest,
        principal: Option<&'a Principal>,
    ) -> Result<Option<Named<'a>>, TenancyError> {
        let mut named = None;
        let mut conflict = None;
        self.identify_sync(req, principal, &mut named, &mut conflict)?;
        for (rank, kind, f) in &self.async_sources {
            // The application's code: bounded in time like the registry (a source
            // that hangs is an unavailable tenant lookup), and a panic is a `500`.
            let call = caught_async("Source::custom_async", f(req));
            let raw = match tokio::time::timeout(self.registry_timeout, call).await {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    return Err(TenancyError::Panicked("a custom tenant source panicked"));
                }
                Err(_) => {
                    return Err(TenancyError::TenantUnavailable {
                        retry_after: None,
                        reason: "a custom tenant source did not answer in time".into(),
                    })
                }
            };
            let raw = raw.map_err(|e| TenancyError::TenantInvalid {
                source: *kind,
                reason: e.to_string().into(),
            })?;
            if let Some(raw) = raw {
                let id = source::check(*kind, &self.rule, Cow::Owned(raw))?;
                Named::merge(
                    &mut named,
                    &mut conflict,
                    Named {
                        id,
                        kind: *kind,
                        rank: *rank,
                    },
                );
            }
        }
        match conflict {
            Some(err) => Err(err),
            None => Ok(named),
        }
    }

    /// Asks the registry at the request's time `now`: its answer now, with the lease
    /// it granted on it, or the wait for it. A panic in the registry is an unavailable
    /// registry, never a crashed worker.
    fn ask<'a>(&'a self, id: &'a str, now: std::time::Instant) -> Asked<'a> {
        let mut at = Moment::at(now);
        match catch_unwind(AssertUnwindSafe(|| self.registry.lookup(id, &mut at))) {
            Ok(Answer::Now(answer)) => Asked::Now(answer.map_err(unavailable), at.lease()),
            Ok(Answer::Later(wait)) => Asked::Later(wait),
            Err(_panic) => Asked::Now(Err(registry_panicked()), None),
        }
    }

    /// Waits for the registry's answer at most `registry_timeout`; a panic is an
    /// unavailable registry.
    async fn wait(&self, wait: LaterLookup<'_>) -> Result<Lookup, TenancyError> {
        match tokio::time::timeout(self.registry_timeout, AssertUnwindSafe(wait).catch_unwind())
            .await
        {
            Ok(Ok(answer)) => answer.map_err(unavailable),
            Ok(Err(_panic)) => Err(registry_panicked()),
            Err(_) => Err(TenancyError::TenantUnavailable {
                retry_after: None,
                reason: "tenant registry lookup timed out".into(),
            }),
        }
    }

    /// Whether the registry's lease still holds; a panic is "no".
    #[inline]
    fn lease_holds(&self, lease: &Lease, now: std::time::Instant) -> bool {
        catch_unwind(AssertUnwindSafe(|| self.registry.lease_holds(lease, now))).unwrap_or(false)
    }

    fn admit(&self, record: &TenantRecord, method: &Method) -> Result<(), TenancyError> {
        match self.status_rules.access(record.status()) {
            Access::Allow => {}
            Access::ReadOnly if is_safe(method) => {}
            Access::ReadOnly => return Err(TenancyError::TenantReadOnly),
            Access::Unavailable { retry_after } => {
                return Err(TenancyError::TenantUnavailable {
                    retry_after: Some(retry_after),
                    reason: record.status().reason().into(),
                })
            }
            Access::Forbidden => {
                return Err(TenancyError::TenantForbidden {
                    reason: record.status().reason().into(),
                })
            }
        }
        match (&self.region, record.region()) {
            (Some(here), Some(there)) if here != there => Err(TenancyError::TenantMisdirected),
            _ => Ok(()),
        }
    }

    /// Resolves the request's tenant without waiting, when it can: `None` means an
    /// async source or a registry miss needs [`run`](Self::run). The outcome, when there
    /// is one, has been reported; `Ok(None)` means the request goes on without a tenant.
    fn run_now(&self, req: &ServiceRequest, at: &At<'_>) -> Option<Resolved> {
        if at.exempt {
            return Some(self.exempt(req, at));
        }
        if !self.async_sources.is_empty() {
            return None;
        }
        let mut named = None;
        let mut conflict = None;
        if let Err(err) = self.identify_sync(req, at.principal, &mut named, &mut conflict) {
            return Some(self.fail(req, at, err, None));
        }
        if let Some(err) = conflict {
            return Some(self.fail(req, at, err, None));
        }
        let named = match self.agree(req, at, named) {
            Ok(named) => named,
            Err(done) => return Some(done),
        };
        let Some(named) = named else {
            return Some(self.missing(req, at));
        };
        // A record this worker holds under a lease that still holds: the registry
        // would answer with it, so it is not asked.
        if let Some((ctx, lease)) = at.contexts.leased(&named.id) {
            if self.lease_holds(&lease, at.now) {
                let record = Arc::clone(ctx.record_arc());
                let known = Some(Known::Held(ctx, lease));
                return Some(self.admit_known(req, at, named, record, known));
            }
        }
        // A registry that must wait is asked again by `run`: its answer is not
        // awaited here.
        let Asked::Now(answer, lease) = self.ask(&named.id, at.now) else {
            return None;
        };
        Some(self.conclude(req, at, named, answer, lease))
    }

    /// Resolves the request's tenant, waiting for async sources and the registry.
    async fn run(&self, req: &ServiceRequest, at: &At<'_>) -> Resolved {
        if at.exempt {
            return self.exempt(req, at);
        }
        let named = match self.identify(req, at.principal).await {
            Ok(named) => named,
            Err(err) => return self.fail(req, at, err, None),
        };
        let named = match self.agree(req, at, named) {
            Ok(Some(named)) => named,
            Ok(None) => return self.missing(req, at),
            Err(done) => return done,
        };
        let (answer, lease) = match self.ask(&named.id, at.now) {
            Asked::Now(answer, lease) => (answer, lease),
            Asked::Later(wait) => (self.wait(wait).await, None),
        };
        self.conclude(req, at, named, answer, lease)
    }

    /// An exempt path: no tenant, unless an outer resolver settled one, which stands.
    fn exempt(&self, req: &ServiceRequest, at: &At<'_>) -> Resolved {
        match at.outer {
            None => self.skip(req, at, "exempt path"),
            Some(outer) => {
                self.skip(req, at, "exempt path: the outer resolution stands")?;
                Ok(Some(Arc::clone(outer)))
            }
        }
    }

    /// Inside a request an outer resolver already settled, the tenant named here must
    /// be the same one: another tenant is a conflict (`403`), and naming none keeps the
    /// outer tenant. A second resolution never moves a request to another tenant.
    /// `Err` carries the finished outcome.
    fn agree<'a>(
        &self,
        req: &ServiceRequest,
        at: &At<'_>,
        named: Option<Named<'a>>,
    ) -> Result<Option<Named<'a>>, Resolved> {
        let Some(outer) = at.outer else {
            return Ok(named);
        };
        match named {
            None => {
                if !at.settings.silent_pass() {
                    self.report(
                        req,
                        at,
                        Outcome::Allowed,
                        Some(outer.id()),
                        Some(outer.tier()),
                        Some(outer.source()),
                        "the outer resolution stands",
                    );
                }
                Err(Ok(Some(Arc::clone(outer))))
            }
            Some(named) if named.id == outer.id().as_str() => Ok(Some(named)),
            Some(named) => {
                let err = TenancyError::TenantConflict {
                    first: outer.source(),
                    second: named.kind,
                };
                Err(self.fail(req, at, err, Some(&named)))
            }
        }
    }

    fn skip(&self, req: &ServiceRequest, at: &At<'_>, why: &str) -> Resolved {
        self.report(req, at, Outcome::Skipped, None, None, None, why);
        Ok(None)
    }

    fn fail(
        &self,
        req: &ServiceRequest,
        at: &At<'_>,
        err: TenancyError,
        named: Option<&Named<'_>>,
    ) -> Resolved {
        let reason = err.reason();
        // The rejection path may allocate: the id named in the audit event.
        let id = named.and_then(|n| self.rule.parse(&n.id).ok());
        self.report(
            req,
            at,
            Outcome::Rejected(err.code()),
            id.as_ref(),
            None,
            named.map(|n| n.kind),
            &reason,
        );
        Err(err)
    }

    fn missing(&self, req: &ServiceRequest, at: &At<'_>) -> Resolved {
        if self.allow_missing {
            self.skip(req, at, "no tenant named")
        } else {
            self.fail(req, at, TenancyError::TenantMissing, None)
        }
    }

    /// Decides on the registry's answer.
    fn conclude(
        &self,
        req: &ServiceRequest,
        at: &At<'_>,
        named: Named<'_>,
        answer: Result<Lookup, TenancyError>,
        lease: Option<Lease>,
    ) -> Resolved {
        let record = match answer {
            Ok(Some(record)) if record.id().as_str() == named.id => record,
            Ok(Some(_)) => {
                let err = TenancyError::TenantUnavailable {
                    retry_after: None,
                    reason: "the registry answered with another tenant's record".into(),
                };
                return self.fail(req, at, err, Some(&named));
            }
            Ok(None) => {
                let err = TenancyError::TenantForbidden {
                    reason: "unknown tenant".into(),
                };
                return self.fail(req, at, err, Some(&named));
            }
            Err(err) => return self.fail(req, at, err, Some(&named)),
        };
        self.admit_known(req, at, named, record, lease.map(Known::Lease))
    }

    /// Decides on the record of the named tenant: its status and region, then its
    /// context. `known` is what this worker's context cache had for the tenant (a
    /// context under a lease that holds), or the registry's fresh lease to keep.
    #[inline]
    fn admit_known(
        &self,
        req: &ServiceRequest,
        at: &At<'_>,
        named: Named<'_>,
        record: Arc<TenantRecord>,
        known: Option<Known>,
    ) -> Resolved {
        if let Err(err) = self.admit(&record, req.method()) {
            // A known tenant refused by its status or region: the event names its tier
            // (the client's answer is the same as for an unknown one).
            let reason = err.reason();
            self.report(
                req,
                at,
                Outcome::Rejected(err.code()),
                Some(record.id()),
                Some(record.tier()),
                Some(named.kind),
                &reason,
            );
            return Err(err);
        }
        if !at.settings.silent_pass() {
            self.report(
                req,
                at,
                Outcome::Allowed,
                Some(record.id()),
                Some(record.tier()),
                Some(named.kind),
                "resolved",
            );
        }
        let kind = named.kind;
        // The record's own id: an `Arc` clone, no allocation for the id.
        let id = || record.id().clone();
        let principal = at.principal.cloned();
        let shared = match (known, &principal) {
            // Held under a lease that holds: the context itself when the source is
            // the same; a request with a principal leaves the entry as it is.
            (Some(Known::Held(ctx, _)), None) if ctx.source() == kind => return Ok(Some(ctx)),
            (Some(Known::Held(..)), Some(_)) => None,
            (Some(Known::Held(_, lease)), None) => {
                Some(at.contexts.get_leased(id(), kind, &record, Some(lease)))
            }
            // The registry's fresh lease is kept, also on behalf of requests with a
            // principal (the entry then holds a context without one, for the lease).
            (Some(Known::Lease(lease)), _) => {
                Some(at.contexts.get_leased(id(), kind, &record, Some(lease)))
            }
            (None, None) => Some(at.contexts.get_leased(id(), kind, &record, None)),
            (None, Some(_)) => None,
        };
        match (principal, shared) {
            (None, Some(ctx)) => Ok(Some(ctx)),
            (principal, _) => Ok(Some(Arc::new(TenantContext::new(
                id(),
                kind,
                record,
                principal,
            )))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        req: &ServiceRequest,
        at: &At<'_>,
        outcome: Outcome,
        tenant: Option<&TenantId>,
        tier: Option<&str>,
        source: Option<SourceKind>,
        reason: &str,
    ) {
        at.settings.report(&AuditEvent {
            stage: StageName::Resolution,
            outcome,
            tenant,
            tier,
            source,
            method: req.method(),
            path: req.match_info().as_str(),
            reason,
            rule: None,
            policy_version: None,
        });
    }
}

/// The contexts of tenants without a principal, per worker: a request for a tenant
/// whose current record was seen before, from the same source, shares that context
/// instead of allocating one. One entry per tenant, replaced when the registry hands
/// out another record (a refresh, a tier change) or the source differs; at most
/// [`ContextCache::MAX_ENTRIES`] tenants, and a full cache starts over. Only tenants
/// the registry accepted get here, so clients cannot fill it with made-up ids.
///
/// An entry also keeps the registry's [`Lease`] on its record, when the registry gave
/// one: while the lease holds, the resolver takes the record from here and does not
/// ask the registry.
#[derive(Default)]
pub(crate) struct ContextCache {
    entries: RefCell<HashMap<TenantId, Held, foldhash::fast::RandomState>>,
}

/// A context, and the registry's lease on its record.
struct Held {
    ctx: Arc<TenantContext>,
    lease: Option<Lease>,
}

/// What the resolver knows of a tenant's record besides the registry's answer.
enum Known {
    /// This worker's context for the tenant, under a lease that holds.
    Held(Arc<TenantContext>, Lease),
    /// The registry's lease on the record it just gave.
    Lease(Lease),
}

impl ContextCache {
    const MAX_ENTRIES: usize = 1024;

    /// The context held for `id` and its lease, if it has one (whether the lease still
    /// holds is the registry's to say).
    fn leased(&self, id: &str) -> Option<(Arc<TenantContext>, Lease)> {
        let entries = self.entries.borrow();
        let held = entries.get(id)?;
        let lease = held.lease?;
        Some((Arc::clone(&held.ctx), lease))
    }

    #[cfg(test)]
    fn get(&self, id: TenantId, kind: SourceKind, record: Arc<TenantRecord>) -> Arc<TenantContext> {
        self.get_leased(id, kind, &record, None)
    }

    /// The context of `id` from `kind` with `record`, shared when this worker has it;
    /// the entry keeps `lease` from now on.
    fn get_leased(
        &self,
        id: TenantId,
        kind: SourceKind,
        record: &Arc<TenantRecord>,
        lease: Option<Lease>,
    ) -> Arc<TenantContext> {
        let mut entries = self.entries.borrow_mut();
        if let Some(held) = entries.get_mut(id.as_str()) {
            if held.ctx.source() == kind && Arc::ptr_eq(held.ctx.record_arc(), record) {
                held.lease = lease;
                return Arc::clone(&held.ctx);
            }
        } else if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        let ctx = Arc::new(TenantContext::new(
            id.clone(),
            kind,
            Arc::clone(record),
            None,
        ));
        entries.insert(
            id,
            Held {
                ctx: Arc::clone(&ctx),
                lease,
            },
        );
        ctx
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.borrow().len()
    }
}

crate::pipeline::built_stage!(TenantResolver);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_shared_per_record_and_source_within_bounds() {
        let cache = ContextCache::default();
        let id = TenantId::parse("acme").unwrap();
        let record = Arc::new(TenantRecord::new(id.clone(), "pro"));
        let a = cache.get(id.clone(), SourceKind::Header, Arc::clone(&record));
        let b = cache.get(id.clone(), SourceKind::Header, Arc::clone(&record));
        assert!(Arc::ptr_eq(&a, &b));
        let by_host = cache.get(id.clone(), SourceKind::Host, Arc::clone(&record));
        assert_eq!(by_host.source(), SourceKind::Host, "the source must match");
        assert_eq!(cache.len(), 1, "one entry per tenant");

        // The registry replaced the record (a tier change): a new context.
        let moved = Arc::new(TenantRecord::new(id.clone(), "enterprise"));
        let c = cache.get(id.clone(), SourceKind::Header, moved);
        assert_eq!((c.tier(), a.tier()), ("enterprise", "pro"));
        assert_eq!(cache.len(), 1, "the old record is let go");

        for i in 0..ContextCache::MAX_ENTRIES + 5 {
            let id = TenantId::parse(&format!("t{i}")).unwrap();
            let record = Arc::new(TenantRecord::new(id.clone(), "free"));
            let ctx = cache.get(id.clone(), SourceKind::Header, record);
            assert_eq!(ctx.id(), &id);
            assert!(cache.len() <= ContextCache::MAX_ENTRIES);
        }
    }
}
