//! [`TenancyLayer`], its builder, its [`Service`] and the service's named future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use http::{request::Parts, Request, Response};
use tenancy_core::{
    caught, caught_async,
    error::{ConfigError, ProblemJson, TenancyError},
    observe::{self, AuditEvent, AuditSink, Outcome, Stage, StageTimer, TracingAudit},
    registry::{Lookup, TenantRegistry},
    resolve::{self, Named, Naming, Settings},
    Answer, Moment, Principal, SourceKind, StatusRules, TenantContext, TenantId, TenantIdRule,
};
use tower_layer::Layer;
use tower_service::Service;

#[cfg(feature = "jwt")]
use crate::auth::{Auth, AuthStage, Authenticated, TenantAuth};
use crate::{
    body::{Rejection, TenancyBody},
    grpc::GrpcStatus,
    policy::{self, PolicyStage, TenantPolicy},
    quota::{self, Charged, Decided, QuotaStage, Refused, Said, TenantQuota},
    source::{Imp, Source},
    tenant::{problem, Resolution, Tenant},
};

/// Resolves each request's tenant once, before the inner service (and so before the
/// router, when the layer wraps it): from the configured [`Source`]s, validated
/// against the registry, the tenant's record judged by its status and region. The
/// tenant goes into the request extensions, where the [`Tenant`] extractor reads it;
/// a request it refuses never reaches the inner service, and is answered in
/// `application/problem+json`, the same bodies actix-tenancy sends.
///
/// Cheap to clone: the configuration is shared.
///
/// ```
/// use axum::{routing::get, Router};
/// use tenancy_core::{registry::InMemoryRegistry, TenantId, TenantRecord};
/// use tower_tenancy::{Source, Tenant, TenancyLayer};
///
/// let registry = InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
/// let tenancy = TenancyLayer::builder(registry)
///     .source(Source::header())
///     .exempt("/health")
///     .build()
///     .unwrap();
/// let app: Router = Router::new()
///     .route("/whoami", get(|tenant: Tenant| async move { tenant.id().to_string() }))
///     .route("/health", get(|| async { "ok" }))
///     .layer(tenancy);
/// ```
#[derive(Clone)]
pub struct TenancyLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for TenancyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl TenancyLayer {
    /// A builder validating tenants against `registry`. Wrap the registry in a
    /// [`CachedRegistry`](tenancy_core::registry::CachedRegistry) unless it answers
    /// from memory already.
    pub fn builder(registry: impl TenantRegistry) -> TenancyLayerBuilder {
        TenancyLayerBuilder {
            registry: Arc::new(registry),
            sources: Vec::new(),
            settings: Settings::default(),
            responder: ProblemJson::default(),
            audit: None,
            per_tenant_metrics: false,
            #[cfg(feature = "jwt")]
            auth: None,
            policy: None,
            quota: None,
        }
    }
}

/// Builds a [`TenancyLayer`]. Defaults are the safe ones, the same as actix-tenancy's
/// resolver: no tenant is a `401`, ids follow the default rule, suspended tenants look
/// unknown.
#[must_use]
pub struct TenancyLayerBuilder {
    registry: Arc<dyn TenantRegistry>,
    sources: Vec<Source>,
    settings: Settings,
    responder: ProblemJson,
    audit: Option<Arc<dyn AuditSink>>,
    per_tenant_metrics: bool,
    #[cfg(feature = "jwt")]
    auth: Option<TenantAuth>,
    policy: Option<TenantPolicy>,
    quota: Option<TenantQuota>,
}

impl fmt::Debug for TenancyLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenancyLayerBuilder")
            .field("sources", &self.sources)
            .field("allow_missing", &self.settings.allow_missing)
            .finish_non_exhaustive()
    }
}

impl TenancyLayerBuilder {
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

    /// A path that needs no tenant, matched exactly against the routing path
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

    /// How long a registry lookup may take before the request is answered `503`
    /// (default 2 s).
    pub fn registry_timeout(mut self, timeout: Duration) -> Self {
        self.settings.registry_timeout = timeout;
        self
    }

    /// How rejections are written (default: [`ProblemJson::default`]).
    pub fn responder(mut self, responder: ProblemJson) -> Self {
        self.responder = responder;
        self
    }

    /// Where every decision is reported (default: [`TracingAudit`], target
    /// `tenancy::audit`, as actix-tenancy's; a closure `Fn(&AuditEvent)` is a sink).
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Some(Arc::new(sink));
        self
    }

    /// Labels the decision counter `tenancy_decisions_total` with the tenant (feature
    /// `metrics`; default off), as actix-tenancy's `per_tenant_metrics` does: the id of
    /// a tenant whose record was found, `unknown` for an id without one, `none`
    /// without an id, so clients cannot create series.
    pub fn per_tenant_metrics(mut self, on: bool) -> Self {
        self.per_tenant_metrics = on;
        self
    }

    /// Verifies each request's bearer token before resolution (see [`TenantAuth`];
    /// feature `jwt`). Add [`Source::claim`] to the sources, first, so that the
    /// token's tenant wins.
    #[cfg(feature = "jwt")]
    pub fn auth(mut self, auth: TenantAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Asks `policy` whether the tenant may make each request, after resolution and
    /// before quota (see [`TenantPolicy`]).
    pub fn policy(mut self, policy: TenantPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Charges each request that has a tenant to its plan, after resolution (and
    /// policy) and before the inner service (see [`TenantQuota`]).
    pub fn quota(mut self, quota: TenantQuota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<TenancyLayer, ConfigError> {
        let sources = self
            .sources
            .into_iter()
            .map(|s| s.imp.map(|imp| (s.kind, imp)))
            .collect::<Result<Vec<_>, _>>()?;
        self.settings
            .check(sources.iter().map(|(kind, imp)| (*kind, imp.key(*kind))))?;
        Ok(TenancyLayer {
            shared: Arc::new(Shared {
                registry: self.registry,
                sources,
                settings: self.settings,
                responder: Arc::new(self.responder),
                default_audit: self.audit.is_none(),
                per_tenant_metrics: self.per_tenant_metrics,
                #[cfg(feature = "jwt")]
                auth: self.auth.map(|a| a.0),
                policy: self.policy.map(|p| p.0),
                quota: self.quota.map(|q| q.0),
                audit: self
                    .audit
                    .unwrap_or_else(|| Arc::new(TracingAudit::default())),
            }),
        })
    }
}

/// This stage's name in the audit events, as actix-tenancy's resolver names it.
const STAGE: Stage = Stage::named("resolution");
/// The quota stage's name, as actix-tenancy's names it.
const QUOTA: Stage = Stage::named("quota");
/// The policy stage's name, as actix-tenancy's names it.
const POLICY: Stage = Stage::named("policy");
/// The authentication stage's name, as actix-tenancy's names it.
#[cfg(feature = "jwt")]
const AUTHENTICATION: Stage = Stage::named("authentication");

/// The layer's configuration, shared by every clone of the layer and its services.
struct Shared {
    registry: Arc<dyn TenantRegistry>,
    /// In the order configured: a source's place is its rank.
    sources: Vec<(SourceKind, Imp)>,
    settings: Settings,
    responder: Arc<ProblemJson>,
    audit: Arc<dyn AuditSink>,
    /// The sink is the default `TracingAudit` (none was given).
    default_audit: bool,
    /// The decision counter has a `tenant` label (feature `metrics`).
    per_tenant_metrics: bool,
    #[cfg(feature = "jwt")]
    auth: Option<Arc<AuthStage>>,
    policy: Option<Arc<PolicyStage>>,
    quota: Option<Arc<QuotaStage>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<_> = self.sources.iter().map(|s| s.0).collect();
        f.debug_struct("TenancyLayer")
            .field("sources", &kinds)
            .field("allow_missing", &self.settings.allow_missing)
            .field("exempt", &self.settings.exempt)
            .field("region", &self.settings.admission.region)
            .finish_non_exhaustive()
    }
}

/// What resolution decided: a tenant, no tenant, or a rejection.
type Resolved = Result<Option<Arc<TenantContext>>, TenancyError>;

/// A resolution decided now, or the wait for it.
enum Settled {
    Now(Resolved),
    Later(Pending),
}

/// What the layer let through: the tenant (or none), and what the quota charged.
struct Admitted {
    tenant: Option<Arc<TenantContext>>,
    charged: Option<Charged>,
}

/// The layer's verdict on a request.
type Verdict = Result<Admitted, Refused>;

/// Where a request stands: authenticated (resolution comes next), resolved (policy
/// comes next), let through by policy (quota comes next), or decided.
enum Next {
    #[cfg(feature = "jwt")]
    Authenticated(Authenticated),
    /// Resolution comes next.
    Start,
    Resolved(Resolved),
    Permitted(Resolved),
    Decided(Verdict),
}

/// A wait, for the registry or for the quota manager.
type Pending = Pin<Box<dyn Future<Output = Next> + Send>>;

/// A verdict now, or the wait for it.
enum Step {
    Now(Verdict),
    Later(Pending),
}

/// What policy let through now, or the wait for the evaluator.
enum Permit {
    Now(Resolved),
    Later(Pending),
}

/// The tenant named and the request's method and routing path, owned, for a
/// resolution that waits.
struct Owned {
    id: String,
    kind: SourceKind,
    method: String,
    path: String,
}

/// What an audit event says of the request.
#[derive(Clone, Copy)]
struct Req<'a> {
    method: &'a str,
    path: &'a str,
}

impl Shared {
    /// Resolves the request's tenant, now when the registry answers at once. Every
    /// outcome is reported to the audit sink, as actix-tenancy's resolver reports it.
    fn resolve(self: &Arc<Self>, head: &Parts) -> Settled {
        let path = resolve::routing_path(head.uri.path());
        let req = Req {
            method: head.method.as_str(),
            path: &path,
        };
        // A tenant an outer layer settled: this resolution must agree with it, and
        // never moves the request to another tenant. (An outer resolution with no
        // tenant settled nothing: this layer resolves on its own.)
        let outer = head
            .extensions
            .get::<Resolution>()
            .and_then(|r| r.tenant.as_ref())
            .map(|t| Arc::clone(t.context()));
        if self.settings.exempt.matches(&path) {
            let why = match outer {
                None => "exempt path",
                Some(_) => "exempt path: the outer resolution stands",
            };
            self.report(req, Outcome::Skipped, None, None, None, why);
            return Settled::Now(Ok(outer));
        }
        let principal = head.extensions.get::<Principal>();
        let mut naming = Naming::new();
        for (rank, (kind, imp)) in self.sources.iter().enumerate() {
            match imp.extract(*kind, head, &path, principal, &self.settings.rule) {
                Ok(Some(id)) => naming.add(Named {
                    id,
                    kind: *kind,
                    rank,
                }),
                Ok(None) => {}
                Err(err) => return Settled::Now(self.fail(req, err, None)),
            }
        }
        let named = match (naming.finish(), outer) {
            (Err(err), _) => return Settled::Now(self.fail(req, err, None)),
            (Ok(Some(named)), None) => named,
            (Ok(Some(named)), Some(outer)) if named.id == outer.id().as_str() => named,
            (Ok(Some(named)), Some(outer)) => {
                let err = TenancyError::TenantConflict {
                    first: outer.source(),
                    second: named.kind,
                };
                return Settled::Now(self.fail(req, err, Some((&named.id, named.kind))));
            }
            (Ok(None), Some(outer)) => {
                if !self.silent_pass() {
                    let (id, tier) = (Some(outer.id()), Some(outer.tier()));
                    let why = "the outer resolution stands";
                    self.report(req, Outcome::Allowed, id, tier, Some(outer.source()), why);
                }
                return Settled::Now(Ok(Some(outer)));
            }
            (Ok(None), None) if self.settings.allow_missing => {
                self.report(req, Outcome::Skipped, None, None, None, "no tenant named");
                return Settled::Now(Ok(None));
            }
            (Ok(None), None) => {
                return Settled::Now(self.fail(req, TenancyError::TenantMissing, None))
            }
        };
        let safe = resolve::is_safe_method(head.method.as_str());
        let now = Instant::now();
        let mut at = Moment::at(now);
        // A registry that must wait is asked again from a future that owns what it
        // needs: the first answer borrows the request.
        let now_answer = match caught("registry lookup", || {
            self.registry.lookup(&named.id, &mut at)
        }) {
            Some(Answer::Now(answer)) => Some(answer.map_err(resolve::unavailable)),
            Some(Answer::Later(_)) => None,
            None => Some(Err(resolve::registry_panicked())),
        };
        if let Some(answer) = now_answer {
            let resolved = self.conclude(req, &named.id, named.kind, answer, principal, safe);
            return Settled::Now(resolved);
        }
        let me = Arc::clone(self);
        let owned = Owned {
            id: named.id.into_owned(),
            kind: named.kind,
            method: req.method.to_owned(),
            path: req.path.to_owned(),
        };
        let principal = principal.cloned();
        Settled::Later(Box::pin(async move {
            let answer = me.wait(&owned.id, now).await;
            let req = Req {
                method: &owned.method,
                path: &owned.path,
            };
            Next::Resolved(me.conclude(
                req,
                &owned.id,
                owned.kind,
                answer,
                principal.as_ref(),
                safe,
            ))
        }))
    }

    /// Waits for the registry at most `registry_timeout`; a panic is an unavailable
    /// registry.
    async fn wait(&self, id: &str, now: Instant) -> Result<Lookup, TenancyError> {
        let mut at = Moment::at(now);
        let lookup = match caught("registry lookup", || self.registry.lookup(id, &mut at)) {
            Some(answer) => answer,
            None => return Err(resolve::registry_panicked()),
        };
        let answer = async move {
            match lookup {
                Answer::Now(answer) => Some(answer),
                Answer::Later(wait) => caught_async("registry lookup", wait).await,
            }
        };
        match tokio::time::timeout(self.settings.registry_timeout, answer).await {
            Ok(Some(answer)) => answer.map_err(resolve::unavailable),
            Ok(None) => Err(resolve::registry_panicked()),
            Err(_) => Err(resolve::registry_timed_out()),
        }
    }

    /// Decides on the registry's answer for the named tenant.
    fn conclude(
        &self,
        req: Req<'_>,
        id: &str,
        kind: SourceKind,
        answer: Result<Lookup, TenancyError>,
        principal: Option<&Principal>,
        safe: bool,
    ) -> Resolved {
        let record = match resolve::recognise(id, answer) {
            Ok(record) => record,
            Err(err) => return self.fail(req, err, Some((id, kind))),
        };
        let (tenant, tier) = (Some(record.id()), Some(record.tier()));
        if let Err(err) = self.settings.admission.admit(&record, safe) {
            // A known tenant refused by its status or region: the event names its tier
            // (the client's answer is the same as for an unknown one).
            let outcome = Outcome::Rejected(err.code());
            self.report(req, outcome, tenant, tier, Some(kind), &err.reason());
            return Err(err);
        }
        if !self.silent_pass() {
            self.report(req, Outcome::Allowed, tenant, tier, Some(kind), "resolved");
        }
        Ok(Some(Arc::new(TenantContext::new(
            record.id().clone(),
            kind,
            record,
            principal.cloned(),
        ))))
    }

    /// Reports a rejection, naming the tenant when one was named and valid.
    fn fail(&self, req: Req<'_>, err: TenancyError, named: Option<(&str, SourceKind)>) -> Resolved {
        let id = named.and_then(|(id, _)| self.settings.rule.parse(id).ok());
        let outcome = Outcome::Rejected(err.code());
        let source = named.map(|(_, kind)| kind);
        self.report(req, outcome, id.as_ref(), None, source, &err.reason());
        Err(err)
    }

    /// Whether a pass would be written nowhere: the default sink, which nobody
    /// listens to at `DEBUG`, and no metrics to count it in. The event is then not
    /// even built.
    #[inline]
    fn silent_pass(&self) -> bool {
        !observe::COUNTING && self.default_audit && !observe::wanted(tracing::Level::DEBUG)
    }

    fn report(
        &self,
        req: Req<'_>,
        outcome: Outcome,
        tenant: Option<&TenantId>,
        tier: Option<&str>,
        source: Option<SourceKind>,
        reason: &str,
    ) {
        let event = AuditEvent::new(STAGE, outcome, req.method, req.path, reason)
            .tenant(tenant, tier, source);
        observe::emit(&*self.audit, self.per_tenant_metrics, &event);
    }

    /// The stages after resolution, from where `next` stands: policy, then quota;
    /// the verdict now, or the wait for an evaluator or a quota manager.
    /// Every stage, from authentication: the verdict now, or the wait for a backend.
    fn start(self: &Arc<Self>, head: &mut Parts) -> Step {
        #[cfg(feature = "jwt")]
        if let Some(auth) = &self.auth {
            return match auth.check(head) {
                Auth::Now(authenticated) => self.advance(head, Next::Authenticated(authenticated)),
                Auth::Later(waiting) => {
                    Step::Later(Box::pin(async move { Next::Authenticated(waiting.await) }))
                }
            };
        }
        self.advance(head, Next::Start)
    }

    fn advance(self: &Arc<Self>, head: &mut Parts, mut next: Next) -> Step {
        loop {
            next = match next {
                #[cfg(feature = "jwt")]
                Next::Authenticated(Ok(principal)) => {
                    // Its one home, where the claim source and the extractors read it.
                    if let Some(principal) = principal {
                        // Counted (feature `metrics`) as the other stages' passes are,
                        // not audited: it would double every request's audit lines.
                        if observe::COUNTING {
                            let path = resolve::routing_path(head.uri.path());
                            let event = AuditEvent::new(
                                AUTHENTICATION,
                                Outcome::Allowed,
                                head.method.as_str(),
                                &path,
                                "",
                            )
                            .tenant(principal.tenant(), None, None);
                            observe::count(self.per_tenant_metrics, &event);
                        }
                        head.extensions.insert(principal);
                    }
                    Next::Start
                }
                #[cfg(feature = "jwt")]
                Next::Authenticated(Err(err)) => {
                    let (path, reason) = (resolve::routing_path(head.uri.path()), err.reason());
                    let event = AuditEvent::new(
                        AUTHENTICATION,
                        Outcome::Rejected(err.code()),
                        head.method.as_str(),
                        &path,
                        &reason,
                    );
                    observe::emit(&*self.audit, self.per_tenant_metrics, &event);
                    return Step::Now(Err(Refused { err, fields: None }));
                }
                Next::Start => match self.resolve(head) {
                    Settled::Now(resolved) => Next::Resolved(resolved),
                    Settled::Later(pending) => return Step::Later(pending),
                },
                Next::Resolved(resolved) => match self.permit(head, resolved) {
                    Permit::Now(resolved) => Next::Permitted(resolved),
                    Permit::Later(pending) => return Step::Later(pending),
                },
                Next::Permitted(resolved) => return self.charge(head, resolved),
                Next::Decided(verdict) => return Step::Now(verdict),
            };
        }
    }

    /// The policy stage, when there is one: the resolution it lets through, or the
    /// wait for the evaluator. Exempt paths skip it; a request with no tenant is
    /// refused.
    fn permit(self: &Arc<Self>, head: &Parts, resolved: Resolved) -> Permit {
        let (Some(stage), Ok(tenant)) = (&self.policy, &resolved) else {
            return Permit::Now(resolved);
        };
        let path = resolve::routing_path(head.uri.path());
        if self.settings.exempt.matches(&path) {
            return Permit::Now(resolved);
        }
        let req = Req {
            method: head.method.as_str(),
            path: &path,
        };
        let Some(tenant) = tenant else {
            let err = tenancy_core::policy::no_tenant();
            let said = policy::Said {
                outcome: Outcome::Rejected(err.code()),
                why: err.reason().into_owned(),
                decision: None,
            };
            self.policy_said(req, None, vec![said]);
            return Permit::Now(Err(err));
        };
        let audit_pass = !self.silent_pass();
        let timer = StageTimer::start();
        // A decision remembered for this tenant, method and route: no question built,
        // no evaluator asked.
        let memo = stage.memo_probe(head, &path, tenant);
        if let Some((epoch, probe)) = memo {
            if let Some(d) = stage.remembered(epoch, probe) {
                timer.stop(POLICY);
                let (verdict, said) = stage.judged(tenant, None, Ok(d), audit_pass);
                self.policy_said(req, Some(tenant), said);
                return Permit::Now(verdict.and(resolved));
            }
        }
        let question = match stage.question(head, &path, tenant) {
            Ok(question) => question,
            Err(err) => {
                let said = policy::Said {
                    outcome: Outcome::Rejected(err.code()),
                    why: err.reason().into_owned(),
                    decision: None,
                };
                self.policy_said(req, Some(tenant), vec![said]);
                return Permit::Now(Err(err));
            }
        };
        if let Some(answer) = stage.evaluate_now(tenant, &question) {
            timer.stop(POLICY);
            if let (Some((epoch, probe)), Ok(d)) = (memo, &answer) {
                stage.remember(epoch, probe, tenant, d);
            }
            let (verdict, said) = stage.judged(tenant, Some(&question), answer, audit_pass);
            self.policy_said(req, Some(tenant), said);
            return Permit::Now(verdict.and(resolved));
        }
        // The evaluator must wait: asked again from a future that owns what it needs.
        let (me, stage, tenant) = (Arc::clone(self), Arc::clone(stage), Arc::clone(tenant));
        let method = head.method.as_str().to_owned();
        let path = path.into_owned();
        Permit::Later(Box::pin(async move {
            let timer = StageTimer::start();
            let answer = stage.evaluate_later(&tenant, &question).await;
            timer.stop(POLICY);
            let (verdict, said) = stage.judged(&tenant, Some(&question), answer, audit_pass);
            let req = Req {
                method: &method,
                path: &path,
            };
            me.policy_said(req, Some(&tenant), said);
            Next::Permitted(verdict.map(|()| Some(tenant)))
        }))
    }

    /// Reports what the policy stage said of the request, in order.
    fn policy_said(
        &self,
        req: Req<'_>,
        tenant: Option<&Arc<TenantContext>>,
        said: Vec<policy::Said>,
    ) {
        for policy::Said {
            outcome,
            why,
            decision,
        } in said
        {
            let event = AuditEvent::new(POLICY, outcome, req.method, req.path, &why)
                .tenant(
                    tenant.map(|t| t.id()),
                    tenant.map(|t| t.tier()),
                    tenant.map(|t| t.source()),
                )
                .rule(
                    decision.as_ref().and_then(|d| d.rule.as_deref()),
                    decision.as_ref().map(|d| d.version),
                );
            observe::emit(&*self.audit, self.per_tenant_metrics, &event);
        }
    }

    /// After resolution: the quota stage, when there is one and the request has a
    /// tenant; a verdict now, or the wait for the quota manager.
    fn charge(self: &Arc<Self>, head: &Parts, resolved: Resolved) -> Step {
        let tenant = match resolved {
            Err(err) => return Step::Now(Err(Refused { err, fields: None })),
            Ok(None) => {
                let admitted = Admitted {
                    tenant: None,
                    charged: None,
                };
                return Step::Now(Ok(admitted));
            }
            Ok(Some(tenant)) => tenant,
        };
        let Some(stage) = &self.quota else {
            let admitted = Admitted {
                tenant: Some(tenant),
                charged: None,
            };
            return Step::Now(Ok(admitted));
        };
        let cost = match stage.estimate(head) {
            Ok(cost) => cost,
            Err(err) => {
                let refused = quota::refused(err);
                return Step::Now(self.quota_said(&head.method, head.uri.path(), tenant, refused));
            }
        };
        let now = Instant::now();
        let audit_pass = !self.silent_pass();
        let timer = StageTimer::start();
        if let Some(answer) = stage.check_now(&tenant, cost, &mut Moment::at(now)) {
            timer.stop(QUOTA);
            let decided = stage.decided(Arc::clone(&tenant), cost, answer, audit_pass);
            return Step::Now(self.quota_said(&head.method, head.uri.path(), tenant, decided));
        }
        // The manager must wait: asked again from a future that owns what it needs.
        let (me, stage) = (Arc::clone(self), Arc::clone(stage));
        let (method, path) = (head.method.clone(), head.uri.path().to_owned());
        Step::Later(Box::pin(async move {
            let timer = StageTimer::start();
            let answer = stage.check_later(&tenant, cost, now).await;
            timer.stop(QUOTA);
            let decided = stage.decided(Arc::clone(&tenant), cost, answer, audit_pass);
            Next::Decided(me.quota_said(&method, &path, tenant, decided))
        }))
    }

    /// Reports what the quota stage said of the request (the routing path decoded only
    /// then: a silent pass reports nothing), and turns its decision into the layer's
    /// verdict.
    fn quota_said(
        &self,
        method: &http::Method,
        uri_path: &str,
        tenant: Arc<TenantContext>,
        decided: Decided,
    ) -> Verdict {
        let (decision, said) = decided;
        if let Some(Said { outcome, why }) = said {
            let path = resolve::routing_path(uri_path);
            let event = AuditEvent::new(QUOTA, outcome, method.as_str(), &path, &why).tenant(
                Some(tenant.id()),
                Some(tenant.tier()),
                Some(tenant.source()),
            );
            observe::emit(&*self.audit, self.per_tenant_metrics, &event);
        }
        decision.map(|charged| Admitted {
            tenant: Some(tenant),
            charged: Some(charged),
        })
    }
}

impl<S> Layer<S> for TenancyLayer {
    type Service = TenancyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenancyService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of a [`TenancyLayer`]: resolves the tenant, then calls the inner
/// service with it in the request extensions, or answers the rejection itself.
#[derive(Clone)]
pub struct TenancyService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for TenancyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenancyService")
            .field("inner", &self.inner)
            .field("layer", &self.shared)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TenancyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: http_body::Body,
{
    type Response = Response<TenancyBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    /// The inner service's readiness only: the tenant is not known before `call`, and
    /// rejections come from the future.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (mut head, body) = req.into_parts();
        let pending: Pending = match self.shared.start(&mut head) {
            // Decided now: the service made ready is called now, and stays for the
            // next request (no clone).
            Step::Now(verdict) => {
                let state = self.shared.settle(&mut self.inner, head, body, verdict);
                return ResponseFuture { state };
            }
            Step::Later(pending) => pending,
        };
        // A wait: the service made ready goes with the future, and a clone stays for
        // the next request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Waiting {
                waiting: pending,
                rest: Some((inner, head, body, Arc::clone(&self.shared))),
            },
        }
    }
}

impl Shared {
    /// Calls the inner service with the verdict's tenant, or answers the rejection.
    fn settle<S, ReqBody, ResBody>(
        &self,
        inner: &mut S,
        mut head: Parts,
        body: ReqBody,
        verdict: Verdict,
    ) -> State<S, ReqBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    {
        match verdict {
            Ok(Admitted { tenant, charged }) => {
                // The principal stays where the claim source read it.
                head.extensions.insert(Resolution {
                    tenant: tenant.map(Tenant),
                    responder: Arc::clone(&self.responder),
                });
                State::Inner {
                    future: inner.call(Request::from_parts(head, body)),
                    charged,
                }
            }
            // A gRPC client reads a gRPC status; any other, the problem body.
            Err(Refused { err, .. }) if crate::grpc::is_grpc(&head.headers) => State::Refused {
                rejection: Some((Rejection::Grpc(GrpcStatus::of(&err)), None)),
            },
            Err(Refused { err, fields }) => State::Refused {
                rejection: Some((
                    Rejection::Problem(problem(&self.responder, &err, &head)),
                    fields,
                )),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`TenancyService`]: the wait for the registry, when it must wait,
    /// then the inner service's response; or the rejection.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Waiting {
            waiting: Pending,
            rest: Option<(S, Parts, ReqBody, Arc<Shared>)>,
        },
        Inner {
            #[pin]
            future: S::Future,
            // Dropped with the future when the request is abandoned: refunded then,
            // when refunds are on.
            charged: Option<Charged>,
        },
        Refused {
            rejection: Option<(Rejection, Option<tenancy_core::quota::QuotaFields>)>,
        },
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Output = Result<Response<TenancyBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Waiting { waiting, rest } => {
                    let next = ready!(waiting.as_mut().poll(cx));
                    let Some((_, head, _, shared)) = rest.as_mut() else {
                        return Poll::Pending;
                    };
                    let verdict = match shared.advance(head, next) {
                        Step::Now(verdict) => verdict,
                        Step::Later(pending) => {
                            *waiting = pending;
                            continue;
                        }
                    };
                    let Some((mut inner, head, body, shared)) = rest.take() else {
                        // Polled again after it finished: nothing to answer.
                        return Poll::Pending;
                    };
                    shared.settle(&mut inner, head, body, verdict)
                }
                StateProj::Inner { future, charged } => {
                    let mut res = ready!(future.poll(cx))?;
                    let Some(Charged { fields, settlement }) = charged.take() else {
                        return Poll::Ready(Ok(res.map(TenancyBody::inner)));
                    };
                    if let Some(fields) = fields {
                        quota::write(fields, res.headers_mut());
                    }
                    let settlement = settlement.answered(res.status(), res.extensions());
                    return Poll::Ready(Ok(res.map(|body| TenancyBody::settled(body, settlement))));
                }
                StateProj::Refused { rejection } => {
                    let Some((rejection, fields)) = rejection.take() else {
                        return Poll::Pending;
                    };
                    let mut res = crate::body::response(rejection);
                    if let Some(fields) = fields {
                        quota::write(fields, res.headers_mut());
                    }
                    return Poll::Ready(Ok(res));
                }
            };
            this.state.set(next);
        }
    }
}
