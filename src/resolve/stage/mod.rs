//! The resolution stage: [`TenantResolver`], its builder, and the stage it runs.
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | the middleware and its builder, the stage and its worker, one resolution's run (now, or with one wait) and its report |
//! | `identify.rs` | the sources read into the one tenant they name |
//! | `admit.rs` | the registry asked, and the record judged by status, region and method |
//! | `contexts.rs` | the contexts a worker keeps per tenant, under the registry's lease |

mod admit;
mod contexts;
mod identify;

use std::{fmt, rc::Rc, sync::Arc, time::Duration};

use actix_web::dev::ServiceRequest;

use super::source::{AsyncFn, Imp, Source};
use admit::Asked;
use contexts::{ContextCache, Known};
use tenancy_core::resolve::{Named, Naming, Settings as ResolveSettings};

use crate::{
    core::{
        error::{ConfigError, TenancyError},
        observe::{AuditEvent, Outcome, Stage as StageName},
        Principal, SourceKind, StatusRules, TenantContext, TenantId, TenantIdRule,
    },
    pipeline::{wait, Built, Decision, Exempt, Flow, Settings, Stage, Step, Worker, WorkerCx},
    registry::TenantRegistry,
};

/// This stage's name in the audit events and metrics.
const STAGE: StageName = StageName::named("resolution");

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
            settings: ResolveSettings::default(),
        }
    }
}

/// Builds a [`TenantResolver`]. Defaults are the safe ones: no tenant is a `401`, ids
/// follow the default rule, suspended tenants look unknown.
#[must_use]
pub struct TenantResolverBuilder {
    registry: Arc<dyn TenantRegistry>,
    sources: Vec<Source>,
    settings: ResolveSettings,
}

impl fmt::Debug for TenantResolverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantResolverBuilder")
            .field("sources", &self.sources)
            .field("allow_missing", &self.settings.allow_missing)
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
        self.settings.allow_missing = allow;
        self
    }

    /// A path that needs no tenant, matched exactly against the routed path
    /// (e.g. `/health`). Sources are not read there.
    pub fn exempt(mut self, path: impl Into<String>) -> Self {
        self.settings.exempt.paths.push(path.into());
        self
    }

    /// Every path under `prefix` needs no tenant. Use a prefix ending in `/` (e.g.
    /// `/public/`) so `/publicity` is not exempted by accident.
    pub fn exempt_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.exempt.prefixes.push(prefix.into());
        self
    }

    /// The rule ids are validated with (default: [`TenantIdRule::Default`]).
    pub fn id_rule(mut self, rule: TenantIdRule) -> Self {
        self.settings.rule = rule;
        self
    }

    /// What each tenant status gets (default: [`StatusRules::default`]).
    pub fn status_rules(mut self, rules: StatusRules) -> Self {
        self.settings.admission.status_rules = rules;
        self
    }

    /// This deployment's region. A tenant whose record names another region gets
    /// `421 tenant_misdirected`; records without a region pass.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.settings.admission.region = Some(region.into());
        self
    }

    /// How long a registry lookup, and each [async custom source](Source::custom_async),
    /// may take before the request fails closed with `503 tenant_unavailable`. Default
    /// 2 s. Warm cache hits never wait.
    pub fn registry_timeout(mut self, timeout: Duration) -> Self {
        self.settings.registry_timeout = timeout;
        self
    }

    /// Checks the configuration and builds the resolver.
    pub fn build(self) -> Result<TenantResolver, ConfigError> {
        let sources = self
            .sources
            .into_iter()
            .enumerate()
            .map(|(rank, s)| s.imp.map(|imp| (rank, s.kind, imp)))
            .collect::<Result<Vec<_>, _>>()?;
        self.settings
            .check(sources.iter().map(|(_, kind, imp)| (*kind, imp.key(*kind))))?;
        let mut sync_sources = Vec::new();
        let mut async_sources = Vec::new();
        for (rank, kind, imp) in sources {
            match imp {
                Imp::CustomAsync(f) => async_sources.push((rank, kind, f)),
                imp => sync_sources.push((rank, kind, imp)),
            }
        }
        let stage = ResolveStage {
            registry: self.registry,
            sync_sources,
            async_sources,
            settings: self.settings,
        };
        Ok(TenantResolver(Built::new(stage)))
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
    settings: ResolveSettings,
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
            .field("allow_missing", &self.settings.allow_missing)
            .field("exempt", &self.settings.exempt.paths)
            .field("exempt_prefixes", &self.settings.exempt.prefixes)
            .field("region", &self.settings.admission.region)
            .finish_non_exhaustive()
    }
}

/// What resolution decided: a tenant, no tenant (`Ok(None)`), or a rejection.
pub(crate) type Resolved = Result<Option<Arc<TenantContext>>, TenancyError>;

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
        Some(&self.settings.exempt)
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
        let principal = Principal::of(req);
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
        let mut naming = Naming::new();
        if let Err(err) = self.identify_sync(req, at.principal, &mut naming) {
            return Some(self.fail(req, at, err, None));
        }
        let named = match naming.finish() {
            Ok(named) => named,
            Err(err) => return Some(self.fail(req, at, err, None)),
        };
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
        let id = named.and_then(|n| self.settings.rule.parse(&n.id).ok());
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
        if self.settings.allow_missing {
            self.skip(req, at, "no tenant named")
        } else {
            self.fail(req, at, TenancyError::TenantMissing, None)
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
        let (method, path) = (req.method().as_str(), req.match_info().as_str());
        at.settings.report(
            &AuditEvent::new(STAGE, outcome, method, path, reason).tenant(tenant, tier, source),
        );
    }
}

crate::pipeline::built_stage!(TenantResolver);
