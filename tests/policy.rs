//! The policy stage through a real `App`: decisions, route patterns, failures that
//! fail closed, capabilities, and its place in the pipeline.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_tenancy::Answer;
use actix_tenancy::{
    observe::AuditEvent,
    policy::{Decision, PolicyError, PolicyEvaluator, PolicyRequest, TenantPolicy},
    prelude::*,
    quota::{LocalQuota, QuotaPlan, QuotaPlans, TenantQuota},
};
use actix_web::{dev::Service, http::header::HeaderName, test, web, App, HttpResponse};
use serde_json::Value;

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
        .with(TenantRecord::new(
            TenantId::parse("globex").unwrap(),
            "free",
        ))
}

fn resolver() -> TenantResolver {
    TenantResolver::builder(registry())
        .source(Source::header())
        .exempt("/health")
        .allow_missing(true)
        .build()
        .unwrap()
}

/// Records what the evaluator was asked, and answers by tier and route.
fn tiered(asked: Arc<Mutex<Vec<PolicyRequest>>>) -> TenantPolicy {
    TenantPolicy::builder(move |t: &TenantContext, q: &PolicyRequest| {
        asked.lock().unwrap().push(q.clone());
        if q.route() == Some("/reports") && t.tier() == "free" {
            return Ok(Decision::deny("reports need a paid tier")
                .with_rule("reports-paid")
                .with_version(7));
        }
        if q.capabilities().iter().any(|c| c == "model:gpt-4o") && t.tier() != "pro" {
            return Ok(Decision::deny("model not in plan").with_rule("models"));
        }
        Ok(Decision::allow("default").with_version(7))
    })
    .capability_header("model", HeaderName::from_static("x-model"))
    .capability_header("tool", HeaderName::from_static("x-tool"))
    .build()
    .unwrap()
}

macro_rules! app {
    ($policy:expr) => {
        test::init_service(
            App::new()
                .wrap(
                    Tenancy::builder()
                        .resolver(resolver())
                        .policy($policy)
                        .build()
                        .unwrap(),
                )
                .route("/health", web::get().to(HttpResponse::Ok))
                .route("/reports", web::get().to(|| async { "report" }))
                .route("/items/{id}", web::get().to(|| async { "item" }))
                .route("/slow", web::get().to(|| async { "slow" })),
        )
        .await
    };
}

fn get(path: &str, tenant: Option<&str>) -> test::TestRequest {
    let req = test::TestRequest::get().uri(path);
    match tenant {
        Some(t) => req.insert_header(("x-tenant-id", t.to_owned())),
        None => req,
    }
}

async fn code(res: actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>) -> Value {
    serde_json::from_slice(&test::read_body(res).await).unwrap()
}

#[actix_web::test]
async fn denied_is_403_and_reveals_nothing() {
    let app = app!(tiered(Arc::default()));
    let res = test::call_service(&app, get("/reports", Some("acme")).to_request()).await;
    assert_eq!(res.status(), 200);
    let res = test::call_service(&app, get("/reports", Some("globex")).to_request()).await;
    assert_eq!(res.status(), 403);
    let body = test::read_body(res).await;
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains("\"code\":\"policy_denied\""), "{text}");
    assert!(
        !text.contains("paid") && !text.contains("reports-paid"),
        "{text}"
    );
}

#[actix_web::test]
async fn rules_see_route_patterns_not_concrete_or_encoded_paths() {
    let asked: Arc<Mutex<Vec<PolicyRequest>>> = Arc::default();
    let app = app!(tiered(Arc::clone(&asked)));
    test::call_service(&app, get("/items/42", Some("acme")).to_request()).await;
    test::call_service(
        &app,
        get("/items/..%2F..%2Freports", Some("acme")).to_request(),
    )
    .await;
    {
        let asked = asked.lock().unwrap();
        assert_eq!(asked[0].route(), Some("/items/{id}"));
        assert_eq!(asked[0].path(), "/items/42");
        assert_eq!(
            asked[1].route(),
            Some("/items/{id}"),
            "an id cannot escape its route"
        );
    }
    // Percent-encoding the path does not dodge the /reports rule.
    let res = test::call_service(&app, get("/%72eports", Some("globex")).to_request()).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        asked.lock().unwrap().last().unwrap().route(),
        Some("/reports")
    );
}

#[actix_web::test]
async fn capabilities_come_from_headers_and_hostile_ones_are_refused() {
    let asked: Arc<Mutex<Vec<PolicyRequest>>> = Arc::default();
    let app = app!(tiered(Arc::clone(&asked)));
    let req = get("/items/1", Some("acme"))
        .insert_header(("x-model", "gpt-4o"))
        .insert_header(("x-tool", "web_search"))
        .to_request();
    assert_eq!(test::call_service(&app, req).await.status(), 200);
    assert_eq!(
        asked.lock().unwrap()[0].capabilities(),
        ["model:gpt-4o", "tool:web_search"]
    );
    let req = get("/items/1", Some("globex"))
        .insert_header(("x-model", "gpt-4o"))
        .to_request();
    assert_eq!(test::call_service(&app, req).await.status(), 403);

    let long = "m".repeat(200);
    for bad in [
        get("/items/1", Some("acme"))
            .append_header(("x-model", "a"))
            .append_header(("x-model", "b")),
        get("/items/1", Some("acme")).insert_header(("x-model", "")),
        get("/items/1", Some("acme")).insert_header(("x-model", "gpt 4o")),
        get("/items/1", Some("acme")).insert_header(("x-model", long.as_str())),
        get("/items/1", Some("acme")).insert_header((
            "x-tool",
            actix_web::http::header::HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap(),
        )),
    ] {
        let res = test::call_service(&app, bad.to_request()).await;
        assert_eq!(res.status(), 403);
        assert_eq!(code(res).await["code"], "policy_denied");
    }

    // A stage told of no capability header reads none: the same headers ask nothing.
    let asked: Arc<Mutex<Vec<PolicyRequest>>> = Arc::default();
    let plain = {
        let asked = Arc::clone(&asked);
        TenantPolicy::new(move |_: &TenantContext, q: &PolicyRequest| {
            asked.lock().unwrap().push(q.clone());
            Ok(Decision::allow("default"))
        })
    };
    let app = app!(plain);
    let req = get("/items/1", Some("globex"))
        .append_header(("x-model", "a"))
        .append_header(("x-model", "b"))
        .insert_header(("x-tool", "web_search"))
        .to_request();
    assert_eq!(test::call_service(&app, req).await.status(), 200);
    assert!(asked.lock().unwrap()[0].capabilities().is_empty());
}

/// An evaluator that fails in the way it is told to, by tenant.
struct Flaky;

impl PolicyEvaluator for Flaky {
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        Answer::later(async move {
            match (tenant.id().as_str(), req.path()) {
                (_, "/slow") => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(Decision::allow("too late"))
                }
                ("globex", _) => Err(PolicyError::new("backend down")),
                _ => Ok(Decision::allow("ok")),
            }
        })
    }
}

#[actix_web::test]
async fn errors_timeouts_and_panics_are_503_and_the_next_request_is_served() {
    let app = app!(TenantPolicy::builder(Flaky)
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap());
    let ok = || get("/items/1", Some("acme")).to_request();

    let res = test::call_service(&app, get("/items/1", Some("globex")).to_request()).await;
    assert_eq!(res.status(), 503);
    assert_eq!(code(res).await["code"], "policy_unavailable");
    assert_eq!(test::call_service(&app, ok()).await.status(), 200);

    let started = Instant::now();
    let res = test::call_service(&app, get("/slow", Some("acme")).to_request()).await;
    assert_eq!(res.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(test::call_service(&app, ok()).await.status(), 200);

    // A panicking evaluator, sync and async.
    let sync_panic = TenantPolicy::new(|t: &TenantContext, _: &PolicyRequest| {
        if t.id() == "globex" {
            panic!("evaluator bug");
        }
        Ok(Decision::allow("ok"))
    });
    let app = app!(sync_panic);
    let res = test::call_service(&app, get("/items/1", Some("globex")).to_request()).await;
    assert_eq!(res.status(), 503);
    assert_eq!(test::call_service(&app, ok()).await.status(), 200);

    struct AsyncPanic;
    impl PolicyEvaluator for AsyncPanic {
        fn evaluate<'a>(
            &'a self,
            _: &'a TenantContext,
            _: &'a PolicyRequest,
        ) -> Answer<'a, Result<Decision, PolicyError>> {
            Answer::later(async { panic!("async evaluator bug") })
        }
    }
    let app = app!(TenantPolicy::new(AsyncPanic));
    let res = test::call_service(&app, get("/items/1", Some("acme")).to_request()).await;
    assert_eq!(res.status(), 503);
    let res = test::call_service(&app, get("/health", None).to_request()).await;
    assert_eq!(res.status(), 200, "the server keeps serving");
}

#[actix_web::test]
async fn no_tenant_fails_closed_but_exempt_paths_pass() {
    let app = app!(tiered(Arc::default()));
    let res = test::call_service(&app, get("/items/1", None).to_request()).await;
    assert_eq!(
        res.status(),
        403,
        "allow_missing does not mean allow everything"
    );
    assert_eq!(code(res).await["code"], "policy_denied");
    let res = test::call_service(&app, get("/health", None).to_request()).await;
    assert_eq!(res.status(), 200);

    // Standalone, inside a resolver: reads its tenant. Without one: 500, never a pass.
    let app = test::init_service(
        App::new()
            .wrap(tiered(Arc::default()))
            .wrap(resolver())
            .route("/reports", web::get().to(|| async { "report" })),
    )
    .await;
    let res = app
        .call(get("/reports", Some("globex")).to_request())
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = app
        .call(get("/reports", Some("acme")).to_request())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let app = test::init_service(
        App::new()
            .wrap(tiered(Arc::default()))
            .route("/reports", web::get().to(|| async { "report" })),
    )
    .await;
    let res = test::call_service(&app, get("/reports", Some("acme")).to_request()).await;
    assert_eq!(res.status(), 500);
}

/// Outcome, rule and policy version of one audited policy decision.
type Seen = (String, Option<String>, Option<u64>);

#[actix_web::test]
async fn decisions_are_audited_with_rule_and_version_and_denials_are_not_charged() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = {
        let seen = Arc::clone(&seen);
        move |e: &AuditEvent<'_>| {
            if e.stage == actix_tenancy::observe::Stage::named("policy") {
                seen.lock().unwrap().push((
                    e.outcome.as_str().to_owned(),
                    e.rule.map(str::to_owned),
                    e.policy_version,
                ))
            }
        }
    };
    let plans = QuotaPlans::builder()
        .tier("free", QuotaPlan::per_minute(1))
        .build()
        .unwrap();
    let tenancy = Tenancy::builder()
        .audit(sink)
        .resolver(resolver())
        .policy(tiered(Arc::default()))
        .quota(TenantQuota::new(LocalQuota::new(plans)))
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .route("/reports", web::get().to(|| async { "report" }))
            .route("/items/{id}", web::get().to(|| async { "item" })),
    )
    .await;
    for _ in 0..3 {
        let res = test::call_service(&app, get("/reports", Some("globex")).to_request()).await;
        assert_eq!(res.status(), 403, "policy runs before quota");
    }
    // The quota of 1 per minute is untouched by the three denials.
    let res = test::call_service(&app, get("/items/1", Some("globex")).to_request()).await;
    assert_eq!(res.status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0],
        (
            "policy_denied".to_owned(),
            Some("reports-paid".to_owned()),
            Some(7)
        )
    );
    assert_eq!(seen[3], ("allowed".to_owned(), None, Some(7)));
}

#[actix_web::test]
async fn guards_route_by_tenant_and_match_nothing_without_one() {
    use actix_tenancy::guard;
    let registry = InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro").with_region("eu"))
        .with(TenantRecord::new(
            TenantId::parse("globex").unwrap(),
            "free",
        ))
        .with(TenantRecord::new(
            TenantId::parse("beta-co").unwrap(),
            "free",
        ));
    let resolver = TenantResolver::builder(registry)
        .source(Source::header())
        .allow_missing(true)
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(resolver)
            .service(
                web::scope("/r")
                    .guard(guard::region("eu"))
                    .route("", web::get().to(|| async { "eu" })),
            )
            .service(
                web::scope("/r")
                    .guard(guard::id("beta-co"))
                    .route("", web::get().to(|| async { "beta" })),
            )
            .service(
                web::scope("/r")
                    .guard(guard::tenant(|t| t.id().starts_with('g')))
                    .route("", web::get().to(|| async { "g" })),
            )
            .service(web::scope("/r").route("", web::get().to(|| async { "default" }))),
    )
    .await;
    for (tenant, want) in [
        (Some("acme"), "eu"),
        (Some("beta-co"), "beta"),
        (Some("globex"), "g"),
        (None, "default"),
    ] {
        let body = test::call_and_read_body(&app, get("/r", tenant).to_request()).await;
        assert_eq!(body, want, "{tenant:?}");
    }
}

#[actix_web::test]
async fn bad_policy_settings_fail_at_build() {
    use actix_tenancy::error::ConfigError;
    let allow = |_: &TenantContext, _: &PolicyRequest| Ok(Decision::allow("ok"));
    let err = TenantPolicy::builder(allow)
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid policy timeout "0s": it must be longer than zero"#
    );
    let same = HeaderName::from_static("x-cap");
    let err = TenantPolicy::builder(allow)
        .capability_header("model", same.clone())
        .capability_header("tool", same)
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::Conflict(_)), "{err:?}");
    const NINE: [(&str, &str); 9] = [
        ("k0", "x-0"),
        ("k1", "x-1"),
        ("k2", "x-2"),
        ("k3", "x-3"),
        ("k4", "x-4"),
        ("k5", "x-5"),
        ("k6", "x-6"),
        ("k7", "x-7"),
        ("k8", "x-8"),
    ];
    let bad: [&[(&'static str, &'static str)]; 5] = [
        &[("model", "x-a"), ("model", "x-b")],
        &[("", "x-a")],
        &[("Model", "x-a")],
        &[("model kind", "x-a")],
        &NINE,
    ];
    for headers in bad {
        let err = headers
            .iter()
            .fold(TenantPolicy::builder(allow), |b, (kind, name)| {
                b.capability_header(kind, HeaderName::from_static(name))
            })
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid { .. } | ConfigError::Duplicate { .. }
            ),
            "{headers:?}: {err:?}"
        );
    }
    assert!(NINE[..8]
        .iter()
        .fold(TenantPolicy::builder(allow), |b, (kind, name)| {
            b.capability_header(kind, HeaderName::from_static(name))
        })
        .build()
        .is_ok());
}
