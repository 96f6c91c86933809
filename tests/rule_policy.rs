//! `RulePolicy`: inheritance, deny-over-allow, route patterns, versions, rollback,
//! invalid files, shadow mode, capability checks in handlers and guards, and the
//! decision cache, through a real `App` where it matters.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix_tenancy::Answer;
use actix_tenancy::{
    error::ConfigError,
    guard,
    observe::{AuditEvent, AuditSink, Stage},
    policy::{
        CachedPolicy, Decision, PolicyError, PolicyEvaluator, PolicyRequest, PolicySet, RulePolicy,
        Rules, TenantPolicy, VersionError,
    },
    prelude::*,
    resolve::SourceKind,
};
use actix_web::{
    http::{header::HeaderName, Method},
    test, web, App, HttpResponse,
};
use serde_json::Value;

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::new()
        .with(TenantRecord::new(id("acme"), "pro"))
        .with(TenantRecord::new(id("acme-eu"), "pro").with_parent(id("acme")))
        .with(TenantRecord::new(id("globex"), "free"))
        .with(TenantRecord::new(id("initech"), "free"))
}

fn ctx(tenant: &str, tier: &str, parent: Option<&str>) -> TenantContext {
    let mut record = TenantRecord::new(id(tenant), tier);
    if let Some(p) = parent {
        record = record.with_parent(id(p));
    }
    TenantContext::new(id(tenant), SourceKind::Header, Arc::new(record), None)
}

fn ask(method: Method, route: &str) -> PolicyRequest {
    PolicyRequest::new(method, route).with_route(route)
}

/// The tiered policy the policy guide shows, plus tenant and parent overrides.
fn tiered() -> PolicySet {
    PolicySet::new()
        .default_rules(Rules::new().allow("GET /health").deny("* /admin/**"))
        .tier(
            "free",
            Rules::new()
                .allow("GET /items/*")
                .deny("* /reports/**")
                .allow_capability("model:gpt-4o-mini"),
        )
        .tier(
            "pro",
            Rules::new()
                .allow("* /items/**")
                .allow("GET /reports/**")
                .allow_capability("model:*")
                .allow_capability("tool:*")
                .feature("beta", true),
        )
        .tenant(
            "acme",
            Rules::new()
                .deny_capability("tool:web_search")
                .deny("DELETE /items/*")
                .allow("DELETE /items/*"),
        )
        .tenant("acme-eu", Rules::new().feature("beta", false))
        .tenant("initech", Rules::new().allow("GET /reports/**"))
}

#[actix_web::test]
async fn levels_are_asked_tenant_parent_tier_default_and_deny_beats_allow() {
    let p = RulePolicy::new(tiered()).unwrap();
    let acme = ctx("acme", "pro", None);
    let eu = ctx("acme-eu", "pro", Some("acme"));
    let globex = ctx("globex", "free", None);
    let initech = ctx("initech", "free", None);

    // Tier rules.
    let d = p.decide(&globex, &ask(Method::GET, "/items/{id}"));
    assert!(d.allowed);
    assert_eq!(d.rule.as_deref(), Some("tier:free allow GET /items/*"));
    assert_eq!(d.version, 1);
    let d = p.decide(&globex, &ask(Method::GET, "/reports/q3"));
    assert!(!d.allowed);
    assert_eq!(d.rule.as_deref(), Some("tier:free deny * /reports/**"));
    // The tenant's own rule beats its tier's deny.
    assert!(p.decide(&initech, &ask(Method::GET, "/reports/q3")).allowed);
    // Deny beats allow on the same level.
    let d = p.decide(&acme, &ask(Method::DELETE, "/items/{id}"));
    assert!(!d.allowed);
    assert_eq!(d.rule.as_deref(), Some("tenant:acme deny DELETE /items/*"));
    // The parent's rules apply to the child, ahead of the tier's.
    assert!(!p.decide(&eu, &ask(Method::DELETE, "/items/{id}")).allowed);
    assert!(p.decide(&eu, &ask(Method::POST, "/items/{id}")).allowed);
    // Default level, then the default answer (deny).
    assert!(p.decide(&globex, &ask(Method::GET, "/health")).allowed);
    assert!(!p.decide(&acme, &ask(Method::GET, "/admin/users")).allowed);
    let d = p.decide(&globex, &ask(Method::GET, "/unlisted"));
    assert!(!d.allowed);
    assert_eq!(d.rule.as_deref(), Some("default-deny"));

    // Capabilities and features by the same order.
    assert!(p.can(&globex, "model:gpt-4o-mini"));
    assert!(!p.can(&globex, "model:gpt-4o"));
    assert!(p.can(&acme, "model:gpt-4o"));
    assert!(
        !p.can(&acme, "tool:web_search"),
        "tenant deny beats tier allow"
    );
    assert!(!p.can(&eu, "tool:web_search"), "inherited from the parent");
    assert!(p.can(&eu, "tool:code_interpreter"));
    assert!(p.can(&acme, "feature:beta"));
    assert!(!p.can(&eu, "feature:beta"), "the child turned it off");
    assert!(!p.can(&globex, "feature:beta"));
    // Every capability asked for must be granted.
    let q = ask(Method::GET, "/items/{id}").with_capability("model:gpt-4o");
    let d = p.decide(&globex, &q);
    assert!(!d.allowed);
    assert_eq!(d.rule.as_deref(), Some("default-deny"));
    let q = ask(Method::GET, "/items/{id}")
        .with_capability("model:gpt-4o")
        .with_capability("tool:web_search");
    let d = p.decide(&acme, &q);
    assert!(!d.allowed);
    assert_eq!(d.rule.as_deref(), Some("tenant:acme deny tool:web_search"));

    // An unknown tier falls to the default level.
    let odd = ctx("initech", "legacy", None);
    assert!(p.decide(&odd, &ask(Method::GET, "/health")).allowed);
    // default_allow flips only what no rule decides.
    let open = RulePolicy::new(tiered().default_allow(true)).unwrap();
    assert!(open.decide(&globex, &ask(Method::GET, "/unlisted")).allowed);
    assert!(
        !open
            .decide(&globex, &ask(Method::GET, "/reports/x"))
            .allowed
    );
}

fn resolver() -> TenantResolver {
    TenantResolver::builder(registry())
        .source(Source::header())
        .build()
        .unwrap()
}

/// Resolution on `X-Tenant-ID`, then `policy`.
fn tenancy(policy: TenantPolicy) -> Tenancy {
    Tenancy::builder()
        .resolver(resolver())
        .policy(policy)
        .build()
        .unwrap()
}

/// [`tenancy`] with the pipeline's audit sink.
fn audited(policy: TenantPolicy, sink: impl AuditSink) -> Tenancy {
    Tenancy::builder()
        .resolver(resolver())
        .policy(policy)
        .audit(sink)
        .build()
        .unwrap()
}

fn get(path: &str, tenant: &str) -> actix_http::Request {
    test::TestRequest::get()
        .uri(path)
        .insert_header(("x-tenant-id", tenant.to_owned()))
        .to_request()
}

async fn status_and_code(
    res: actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
) -> (u16, String) {
    let status = res.status().as_u16();
    let body = test::read_body(res).await;
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    (status, code)
}

#[actix_web::test]
async fn an_id_in_the_path_cannot_escape_a_rule() {
    let policy = RulePolicy::new(
        PolicySet::new()
            .tier(
                "free",
                Rules::new().allow("GET /items/*").allow("GET /t/*/items/*"),
            )
            .default_rules(Rules::new().deny("* /admin/**")),
    )
    .unwrap();
    let tenancy = tenancy(TenantPolicy::new(policy));
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .route("/items/{id}", web::get().to(|| async { "item" }))
            .route("/t/{t}/items/{id}", web::get().to(|| async { "item" }))
            .route("/admin/{what}", web::get().to(|| async { "admin" }))
            .route(
                "/admin/{what}/{more:.*}",
                web::get().to(|| async { "admin" }),
            ),
    )
    .await;
    let call = |p: &'static str| {
        let app = &app;
        async move { test::call_service(app, get(p, "globex")).await.status() }
    };
    assert_eq!(call("/items/42").await, 200);
    assert_eq!(call("/t/x/items/42").await, 200, "a '*' in the middle");
    assert_eq!(call("/t/x/y/items/42").await, 403, "is one segment");
    // Ids that look like other routes are still the `{id}` of `/items/{id}`.
    for hostile in [
        "/items/..%2Fadmin",
        "/items/%2e%2e",
        "/items/*",
        "/items/%2A",
    ] {
        assert_eq!(call(hostile).await, 200, "{hostile}");
    }
    // And nothing reaches /admin by encoding or extra slashes.
    for hostile in [
        "/admin/users",
        "/%61dmin/users",
        "/admin/users/../../items/1",
        "/admin/x/y/z",
    ] {
        assert_eq!(call(hostile).await, 403, "{hostile}");
    }
    // A path that matched no route is judged on the path itself: denied, not a 404
    // that would reveal which routes exist.
    assert_eq!(call("/items/1/extra").await, 403);

    // Patterns are remembered per path: repeats, and a flood of distinct paths past
    // the bound, answer the same.
    for round in 0..2 {
        assert_eq!(call("/items/42").await, 200, "round {round}");
        assert_eq!(call("/admin/users").await, 403, "round {round}");
    }
    for i in 0..1_500 {
        let status = test::call_service(&app, get(&format!("/items/{i}"), "globex"))
            .await
            .status();
        assert_eq!(status, 200, "/items/{i}");
    }
    assert_eq!(call("/admin/users").await, 403);
    assert_eq!(call("/items/1/extra").await, 403);
}

#[actix_web::test]
async fn apps_sharing_one_tenancy_are_judged_on_their_own_routes() {
    let policy =
        RulePolicy::new(PolicySet::new().tier("free", Rules::new().allow("GET /items/*"))).unwrap();
    let tenancy = tenancy(TenantPolicy::new(policy));
    let items = test::init_service(
        App::new()
            .wrap(tenancy.clone())
            .route("/items/{id}", web::get().to(|| async { "item" })),
    )
    .await;
    let sections = test::init_service(
        App::new()
            .wrap(tenancy)
            .route("/{section}/{id}", web::get().to(|| async { "section" })),
    )
    .await;
    for _ in 0..2 {
        let status = test::call_service(&items, get("/items/42", "globex"))
            .await
            .status();
        assert_eq!(status, 200, "routed as /items/{{id}}");
        let status = test::call_service(&sections, get("/items/42", "globex"))
            .await
            .status();
        assert_eq!(
            status, 403,
            "routed as /{{section}}/{{id}}: no rule allows it"
        );
    }
}

#[actix_web::test]
async fn versions_swap_atomically_under_concurrent_requests() {
    // Two versions that disagree on everything: in each, route and capability
    // answers must come from the same version as the decision names.
    let v = |allow_route: bool| {
        let rules = if allow_route {
            Rules::new().allow("GET /a").allow_capability("tool:x")
        } else {
            Rules::new().deny("GET /a").deny_capability("tool:x")
        };
        PolicySet::new().tier("free", rules)
    };
    let policy = RulePolicy::new(v(true)).unwrap();
    let t = ctx("globex", "free", None);
    let q = ask(Method::GET, "/a").with_capability("tool:x");
    let stop = AtomicBool::new(false);
    let decided = AtomicUsize::new(0);
    let seen = [AtomicBool::new(false), AtomicBool::new(false)]; // even, odd
                                                                 // Waits until the readers decided after the last swap: each of the 3 may finish
                                                                 // one decision begun before it, so 4 more decisions include a fresh one.
    let fresh = || {
        let start = decided.load(Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while decided.load(Ordering::SeqCst) < start + 4 {
            assert!(std::time::Instant::now() < deadline, "the readers stopped");
            std::thread::yield_now();
        }
    };
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let d = policy.decide(&t, &q);
                    // Odd versions allow, even ones deny: a half-loaded policy would
                    // pair one version's number with the other's answer.
                    assert_eq!(d.allowed, d.version % 2 == 1, "{d:?}");
                    seen[(d.version % 2) as usize].store(true, Ordering::Relaxed);
                    decided.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        fresh();
        for i in 0..2000u64 {
            let version = policy.load(v(i % 2 == 1)).unwrap();
            assert_eq!(version, i + 2);
            if i % 100 == 0 {
                fresh();
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    // The readers decided under both kinds of version, across the swaps.
    assert!(seen.iter().all(|s| s.load(Ordering::Relaxed)));
    assert_eq!(policy.version(), 2001);
    assert_eq!(policy.versions().len(), 10, "only the last ten are kept");
}

#[actix_web::test]
async fn a_reload_and_a_rollback_take_effect_for_the_next_request() {
    let policy = RulePolicy::new(PolicySet::new().tier("free", Rules::new().allow("GET /x")))
        .unwrap()
        .keep_versions(3);
    let tenancy = tenancy(TenantPolicy::new(policy.clone()));
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .route("/x", web::get().to(|| async { "x" })),
    )
    .await;
    assert_eq!(status_of(&app, "/x", "globex").await, 200);
    assert_eq!(policy.load(PolicySet::new()).unwrap(), 2);
    assert_eq!(status_of(&app, "/x", "globex").await, 403);
    assert_eq!(policy.rollback().unwrap(), 1);
    assert_eq!(status_of(&app, "/x", "globex").await, 200);
    assert_eq!(policy.versions(), [1, 2]);
    assert_eq!(policy.rollback_to(2).unwrap(), 2);
    assert!(policy
        .rollback_to(9)
        .unwrap_err()
        .to_string()
        .contains("not kept"));
    // Versions only go up, even after a rollback.
    let err = policy.load(PolicySet::new().version(2)).unwrap_err();
    assert!(err.to_string().contains("not newer"), "{err}");
    assert_eq!(policy.load(PolicySet::new().version(10)).unwrap(), 10);
    assert_eq!(policy.load(PolicySet::new()).unwrap(), 11);
    assert_eq!(policy.versions(), [2, 10, 11]);
    policy.rollback_to(2).unwrap();
    policy.rollback().unwrap_err();
}

#[actix_web::test]
async fn invalid_policy_files_are_rejected_naming_the_line_and_change_nothing() {
    let set = PolicySet::from_json(r#"{"tiers": {"free": {"routes": {"allow": ["GET /x"]}}}}"#);
    let policy = RulePolicy::new(set.unwrap()).unwrap();
    let cases = [
        (
            "{\n  \"tiers\": {\n    \"free\": {\n      \"routes\": { \"allow\": [\"GETT /x\"] }\n    }\n  }\n}",
            "line 4",
            "unknown method \"GETT\"",
        ),
        (
            "{\n  \"tiers\": {\n    \"free\": {\n      \"routes\": { \"alow\": [] }\n    }\n  }\n}",
            "line 4",
            "unknown field `alow`",
        ),
        (
            "{\n  \"default\": {\n    \"capabilities\": { \"allow\": [\"gpt-4o\"] }\n  }\n}",
            "line 3",
            "invalid capability \"gpt-4o\"",
        ),
        ("{\n  \"version\": \"seven\"\n}", "line 2", "invalid type"),
        ("{\"tiers\": {\"free\": ", "line 1", "EOF"),
    ];
    for (text, line, what) in cases {
        let err = PolicySet::from_json(text)
            .map_err(VersionError::from)
            .and_then(|set| policy.load(set))
            .unwrap_err();
        assert!(
            matches!(
                err,
                VersionError::Invalid(ConfigError::InvalidDocument { of: "policy", .. })
            ),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(err.contains(line) && err.contains(what), "{err}");
    }
    assert_eq!(policy.version(), 1);
    assert_eq!(policy.versions(), [1]);
    // Rules given in code are checked when the policy is built, naming the level.
    let err = RulePolicy::new(PolicySet::new().tier("pro", Rules::new().allow("GET /a/**/b")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tier:pro") && err.contains("'**' may only end"),
        "{err}"
    );
    let err = policy
        .load(PolicySet::new().default_rules(Rules::new().allow_capability("tool")))
        .unwrap_err();
    assert!(
        matches!(&err, VersionError::Invalid(ConfigError::Invalid { setting: "policy rule of", value, reason })
            if value == "default" && reason.contains("invalid capability")),
        "{err:?}"
    );
    assert_eq!(policy.version(), 1);
}

#[cfg(feature = "toml")]
#[actix_web::test]
async fn toml_policies_load_and_errors_name_the_line() {
    let set = PolicySet::from_toml(
        r#"
version = 3
[default.routes]
allow = ["GET /health"]

[tiers.free.routes]
allow = ["GET /items/*"]

[tiers.pro.features]
beta = true
"#,
    )
    .unwrap();
    let policy = RulePolicy::new(set).unwrap();
    assert_eq!(policy.version(), 3);
    assert!(policy.can(&ctx("acme", "pro", None), "feature:beta"));
    let err =
        PolicySet::from_toml("[tiers.free.routes]\nallow = [\"GET /ok\"]\ndeny = [\"FETCH /x\"]\n")
            .map_err(VersionError::from)
            .and_then(|set| policy.load(set))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("line 3") && err.contains("unknown method"),
        "{err}"
    );
    assert_eq!(policy.version(), 3);
}

#[actix_web::test]
async fn handlers_and_guards_check_capabilities_with_the_same_rules() {
    let every_tier = Rules::new().allow("GET /items/*/can");
    let policy = RulePolicy::new(tiered().default_rules(every_tier.clone())).unwrap();
    let tenancy = tenancy(TenantPolicy::new(policy.clone()));
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .service(
                web::resource("/items/{id}")
                    .guard(guard::feature("beta"))
                    .route(web::get().to(|| async { "beta items" })),
            )
            .route("/items/{id}", web::get().to(|| async { "items" }))
            .route(
                "/items/{id}/search",
                web::get().to(|t: Tenant| async move {
                    t.require("tool:web_search")?;
                    Ok::<_, actix_web::Error>(HttpResponse::Ok().body("results"))
                }),
            )
            .route(
                "/items/{id}/can",
                web::get().to(|t: Tenant| async move {
                    format!("{} {}", t.can("model:gpt-4o"), t.can("feature:beta"))
                }),
            ),
    )
    .await;
    assert_eq!(body_of(&app, "/items/1", "acme").await, "beta items");
    assert_eq!(
        body_of(&app, "/items/1", "acme-eu").await,
        "items",
        "beta off for the child"
    );
    assert_eq!(body_of(&app, "/items/1", "globex").await, "items");
    assert_eq!(body_of(&app, "/items/1/can", "acme").await, "true true");
    assert_eq!(body_of(&app, "/items/1/can", "globex").await, "false false");

    let (status, code) =
        status_and_code(test::call_service(&app, get("/items/1/search", "acme")).await).await;
    assert_eq!((status, code.as_str()), (403, "policy_denied"));
    assert!(
        !body_of(&app, "/items/1/search", "acme")
            .await
            .contains("web_search"),
        "nothing echoed"
    );
    // A reload changes what handlers and guards see at once.
    policy
        .load(
            tiered()
                .default_rules(every_tier)
                .tenant("acme", Rules::new().feature("beta", false)),
        )
        .unwrap();
    assert_eq!(body_of(&app, "/items/1", "acme").await, "items");
    assert_eq!(body_of(&app, "/items/1/search", "acme").await, "results");
}

async fn body_of<S, B>(app: &S, path: &str, tenant: &str) -> String
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let res = test::call_service(app, get(path, tenant)).await;
    String::from_utf8_lossy(&test::read_body(res).await).into_owned()
}

async fn status_of<S, B>(app: &S, path: &str, tenant: &str) -> u16
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    test::call_service(app, get(path, tenant))
        .await
        .status()
        .as_u16()
}

#[actix_web::test]
async fn without_a_rule_policy_no_capability_is_granted() {
    let closure = |_: &TenantContext, _: &PolicyRequest| Ok(Decision::allow("all"));
    let app = test::init_service(App::new().wrap(tenancy(TenantPolicy::new(closure))).route(
        "/c",
        web::get().to(|t: Tenant| async move { format!("{}", t.can("feature:beta")) }),
    ))
    .await;
    assert_eq!(body_of(&app, "/c", "acme").await, "false");
    // With the resolver alone there is no policy to ask either.
    let app = test::init_service(App::new().wrap(resolver()).route(
        "/c",
        web::get().to(|t: Tenant| async move { format!("{}", t.can("feature:beta")) }),
    ))
    .await;
    assert_eq!(body_of(&app, "/c", "acme").await, "false");
}

type Seen = Vec<(String, Option<String>, Option<u64>)>;

#[actix_web::test]
async fn a_shadow_version_is_audited_and_changes_no_response() {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sink = {
        let seen = Arc::clone(&seen);
        move |e: &AuditEvent<'_>| {
            if e.stage == Stage::named("policy") {
                seen.lock().unwrap().push((
                    e.outcome.as_str().to_owned(),
                    e.rule.map(str::to_owned),
                    e.policy_version,
                ));
            }
        }
    };
    let policy = RulePolicy::new(tiered()).unwrap();
    let app = test::init_service(
        App::new()
            .wrap(audited(TenantPolicy::new(policy.clone()), sink))
            .route("/items/{id}", web::get().to(|| async { "item" })),
    )
    .await;
    // The candidate takes /items away from the free tier.
    let candidate = policy
        .load_shadow(tiered().tier("free", Rules::new().deny("GET /items/*")))
        .unwrap();
    assert_eq!((candidate, policy.shadow_version()), (2, Some(2)));
    assert_eq!(status_of(&app, "/items/1", "globex").await, 200);
    assert_eq!(status_of(&app, "/items/1", "acme").await, 200);
    {
        let seen = seen.lock().unwrap();
        let want: Seen = vec![
            (
                "would_deny".into(),
                Some("tier:free deny GET /items/*".into()),
                Some(2),
            ),
            (
                "allowed".into(),
                Some("tier:free allow GET /items/*".into()),
                Some(1),
            ),
            (
                "would_allow".into(),
                Some("tier:pro allow * /items/**".into()),
                Some(2),
            ),
            (
                "allowed".into(),
                Some("tier:pro allow * /items/**".into()),
                Some(1),
            ),
        ];
        assert_eq!(*seen, want);
    }
    assert_eq!(policy.promote_shadow().unwrap(), 2);
    assert_eq!(policy.shadow_version(), None);
    assert_eq!(status_of(&app, "/items/1", "globex").await, 403);
    assert!(policy.promote_shadow().is_err());
    assert_eq!(policy.rollback().unwrap(), 1);
    assert_eq!(status_of(&app, "/items/1", "globex").await, 200);
}

/// A slow evaluator that counts its calls and follows a version number.
struct Remote {
    calls: AtomicUsize,
    version: AtomicUsize,
    fail: AtomicBool,
}

impl PolicyEvaluator for Remote {
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        _: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        // The work is in the future: the stage may ask twice (now, then to wait).
        Answer::later(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(PolicyError::new("policy service down"));
            }
            let v = self.version.load(Ordering::SeqCst) as u64;
            Ok(if tenant.tier() == "pro" {
                Decision::allow("pro").with_version(v)
            } else {
                Decision::deny("not pro").with_version(v)
            })
        })
    }

    fn version(&self) -> Option<u64> {
        Some(self.version.load(Ordering::SeqCst) as u64)
    }
}

#[actix_web::test]
async fn the_decision_cache_answers_repeats_and_follows_versions() {
    let remote = Arc::new(Remote {
        calls: AtomicUsize::new(0),
        version: AtomicUsize::new(1),
        fail: AtomicBool::new(false),
    });
    let cached = Arc::new(CachedPolicy::new(
        Arc::clone(&remote),
        Duration::from_secs(60),
    ));
    let app = test::init_service(
        App::new()
            .wrap(tenancy(TenantPolicy::new(Arc::clone(&cached))))
            .route("/items/{id}", web::get().to(|| async { "item" })),
    )
    .await;
    assert_eq!(status_of(&app, "/items/1", "acme").await, 200);
    assert_eq!(status_of(&app, "/items/1", "acme").await, 200, "a repeat");
    assert_eq!(status_of(&app, "/items/3", "globex").await, 403);
    assert_eq!(status_of(&app, "/items/3", "globex").await, 403);
    assert_eq!(
        remote.calls.load(Ordering::SeqCst),
        2,
        "one call per tenant and path"
    );
    assert_eq!(cached.len(), 2);
    // Another path of the same pattern is asked: actix's guards may route it to
    // another handler, and an evaluator may judge the path.
    assert_eq!(status_of(&app, "/items/2", "acme").await, 200);
    assert_eq!(remote.calls.load(Ordering::SeqCst), 3);
    // A new version is never answered from the old one's entries.
    remote.version.store(2, Ordering::SeqCst);
    assert_eq!(status_of(&app, "/items/1", "acme").await, 200);
    assert_eq!(remote.calls.load(Ordering::SeqCst), 4);
    // Errors are not cached and fail closed.
    remote.version.store(3, Ordering::SeqCst);
    remote.fail.store(true, Ordering::SeqCst);
    assert_eq!(status_of(&app, "/items/1", "acme").await, 503);
    remote.fail.store(false, Ordering::SeqCst);
    assert_eq!(status_of(&app, "/items/1", "acme").await, 200);
    assert_eq!(remote.calls.load(Ordering::SeqCst), 6);
    // A path that matched no route is not cached.
    assert_eq!(status_of(&app, "/nope/1", "acme").await, 404);
    assert_eq!(status_of(&app, "/nope/1", "acme").await, 404);
    assert_eq!(remote.calls.load(Ordering::SeqCst), 8);
}

#[actix_web::test]
async fn cached_entries_expire() {
    let remote = Arc::new(Remote {
        calls: AtomicUsize::new(0),
        version: AtomicUsize::new(1),
        fail: AtomicBool::new(false),
    });
    let cached = CachedPolicy::new(Arc::clone(&remote), Duration::from_millis(30));
    let t = ctx("acme", "pro", None);
    let q = ask(Method::GET, "/items/{id}");
    assert!(cached.evaluate(&t, &q).await.unwrap().allowed);
    assert!(
        cached.evaluate(&t, &q).now().unwrap().unwrap().allowed,
        "a hit needs no wait"
    );
    assert_eq!(remote.calls.load(Ordering::SeqCst), 1);
    // The same tenant on another tier is asked again, never answered from the cache.
    let downgraded = ctx("acme", "free", None);
    assert!(cached.evaluate(&downgraded, &q).now().is_none());
    assert!(!cached.evaluate(&downgraded, &q).await.unwrap().allowed);
    assert_eq!(remote.calls.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert!(
        cached.evaluate(&t, &q).now().is_none(),
        "expired: ask the evaluator"
    );
    assert!(!cached.is_empty());
    cached.clear();
    assert!(cached.is_empty());
}

/// A `RulePolicy` that counts its evaluations, and may promise a memo epoch (or panic
/// when asked for one).
struct Counting {
    rules: RulePolicy,
    calls: AtomicUsize,
    epoch: Option<u64>,
    panics: bool,
}

impl PolicyEvaluator for Counting {
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Answer::Now(Ok(self.rules.decide(tenant, req)))
    }

    fn memo_epoch(&self) -> Option<u64> {
        assert!(!self.panics, "a broken evaluator");
        self.epoch
    }
}

#[actix_web::test]
async fn remembered_decisions_follow_records_capabilities_versions_and_shadows() {
    let registry = Arc::new(registry());
    let resolver = TenantResolver::builder(Arc::clone(&registry))
        .source(Source::header())
        .build()
        .unwrap();
    let policy = RulePolicy::new(tiered()).unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = {
        let seen = Arc::clone(&seen);
        move |e: &AuditEvent<'_>| {
            if e.stage == Stage::named("policy") && e.outcome.as_str() != "allowed" {
                seen.lock().unwrap().push(e.outcome.as_str().to_owned());
            }
        }
    };
    let stage = TenantPolicy::builder(policy.clone())
        .capability_header("tool", HeaderName::from_static("x-tool"))
        .build()
        .unwrap();
    let tenancy = Tenancy::builder()
        .resolver(resolver)
        .policy(stage)
        .audit(sink)
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .route("/reports/{id}", web::get().to(|| async { "report" }))
            .route("/items/{id}", web::get().to(|| async { "item" })),
    )
    .await;
    // Repeated: free is refused reports every time, pro is let in every time.
    for _ in 0..3 {
        assert_eq!(status_of(&app, "/reports/1", "globex").await, 403);
        assert_eq!(status_of(&app, "/reports/1", "acme").await, 200);
    }
    // A new record (a tier change) is a new decision at once.
    registry.insert(TenantRecord::new(id("globex"), "pro"));
    assert_eq!(status_of(&app, "/reports/1", "globex").await, 200);
    registry.insert(TenantRecord::new(id("globex"), "free"));
    assert_eq!(status_of(&app, "/reports/1", "globex").await, 403);
    // A capability asked for is always evaluated: acme may not use web_search, on a
    // path whose plain requests were allowed just before.
    assert_eq!(status_of(&app, "/items/1", "acme").await, 200);
    let tool = test::TestRequest::get()
        .uri("/items/1")
        .insert_header(("x-tenant-id", "acme"))
        .insert_header(("x-tool", "web_search"))
        .to_request();
    assert_eq!(test::call_service(&app, tool).await.status(), 403);
    // A new version is a new decision at once, and so is a rollback.
    policy
        .load(tiered().tier("pro", Rules::new().deny("GET /reports/**")))
        .unwrap();
    assert_eq!(status_of(&app, "/reports/1", "acme").await, 403);
    policy.rollback().unwrap();
    assert_eq!(status_of(&app, "/reports/1", "acme").await, 200);
    // A shadow version sees every request, remembered or not.
    seen.lock().unwrap().clear();
    policy
        .load_shadow(tiered().tier("pro", Rules::new().deny("GET /reports/**")))
        .unwrap();
    for _ in 0..3 {
        assert_eq!(status_of(&app, "/reports/1", "acme").await, 200);
    }
    assert_eq!(seen.lock().unwrap().as_slice(), ["would_deny"; 3]);
}

#[actix_web::test]
async fn only_an_evaluator_that_gives_an_epoch_is_remembered() {
    for (epoch, panics, evaluations) in [(Some(7), false, 1), (None, false, 4), (Some(7), true, 4)]
    {
        let counting = Arc::new(Counting {
            rules: RulePolicy::new(tiered()).unwrap(),
            calls: AtomicUsize::new(0),
            epoch,
            panics,
        });
        let app = test::init_service(
            App::new()
                .wrap(tenancy(TenantPolicy::new(Arc::clone(&counting))))
                .route("/items/{id}", web::get().to(|| async { "item" })),
        )
        .await;
        for _ in 0..4 {
            assert_eq!(status_of(&app, "/items/1", "acme").await, 200);
        }
        assert_eq!(
            counting.calls.load(Ordering::SeqCst),
            evaluations,
            "epoch {epoch:?}, panicking {panics}"
        );
    }
}
