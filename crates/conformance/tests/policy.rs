//! Policy, the same on both adapters: one table of requests through actix-tenancy's
//! `TenantPolicy` in an actix `App` and tower-tenancy's `TenantPolicy` in an axum
//! `Router`, over one evaluator: the core's `RulePolicy` (with a shadow version
//! loaded), and the cases a remote evaluator has (one that fails, panics, answers
//! later, or too late). Each answer and each audit event (with the rule and version
//! that decided) must be what the table says, and the same on both.

use std::time::Duration;

use actix_web::{test as atest, web, App};
use axum::routing::get;
use tenancy_core::{
    policy::{Decision, PolicyError, PolicyEvaluator, PolicyRequest, PolicySet, RulePolicy, Rules},
    Answer, TenantContext,
};
use tower::ServiceExt as _;

#[allow(dead_code, unreachable_pub)]
mod common;

use common::*;

/// The rules, with a shadow version that would deny `/whoami` to free tenants.
fn rules() -> RulePolicy {
    let active = PolicySet::new()
        .default_rules(Rules::new().deny("* /admin/**"))
        .tier(
            "pro",
            Rules::new()
                .allow("GET /whoami")
                .allow("POST /whoami")
                .allow_capability("model:*"),
        )
        .tier(
            "free",
            Rules::new()
                .allow("GET /whoami")
                .allow_capability("model:gpt-4o-mini"),
        );
    let policy = RulePolicy::new(active).unwrap();
    let shadow = PolicySet::new()
        .default_rules(Rules::new().deny("* /admin/**"))
        .tier("pro", Rules::new().allow("* /whoami"))
        .tier("free", Rules::new().deny("GET /whoami"));
    policy.load_shadow(shadow).unwrap();
    policy
}

/// The rules, and a remote evaluator's cases by tenant: `initech` fails, `wonka`
/// panics, `slowco` answers later, `umbrella` later than the stage waits.
struct Remote(RulePolicy);

impl PolicyEvaluator for Remote {
    fn evaluate<'a>(
        &'a self,
        tenant: &'a TenantContext,
        req: &'a PolicyRequest,
    ) -> Answer<'a, Result<Decision, PolicyError>> {
        match tenant.id().as_str() {
            "initech" => Answer::Now(Err(PolicyError::new("the policy service is down"))),
            "wonka" => panic!("an evaluator bug"),
            "slowco" => Answer::later(async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(self.0.decide(tenant, req))
            }),
            "umbrella" => Answer::later(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(self.0.decide(tenant, req))
            }),
            _ => self.0.evaluate(tenant, req),
        }
    }

    fn shadow(&self, tenant: &TenantContext, req: &PolicyRequest) -> Option<Decision> {
        self.0.shadow(tenant, req)
    }
}

const TIMEOUT: Duration = Duration::from_millis(50);

async fn on_actix(req: &Req) -> Got {
    let audit = Recorder::default();
    let resolver = actix_tenancy::TenantResolver::builder(Registry::new())
        .source(actix_tenancy::Source::header())
        .exempt("/health")
        .build()
        .unwrap();
    let policy = actix_tenancy::policy::TenantPolicy::builder(Remote(rules()))
        .timeout(TIMEOUT)
        .capability_header(
            "model",
            actix_web::http::header::HeaderName::from_static("x-model"),
        )
        .build()
        .unwrap();
    let tenancy = actix_tenancy::Tenancy::builder()
        .resolver(resolver)
        .policy(policy)
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<actix_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let app = atest::init_service(
        App::new()
            .wrap(tenancy)
            .route("/whoami", web::to(whoami))
            .route("/admin/{page}", web::to(whoami))
            .route("/health", web::to(|| async { "ok" })),
    )
    .await;
    let res = atest::call_service(&app, actix_request(req)).await;
    actix_answer(res, &audit).await
}

async fn on_axum(req: &Req) -> Got {
    let audit = Recorder::default();
    let policy = tower_tenancy::TenantPolicy::builder(Remote(rules()))
        .timeout(TIMEOUT)
        .capability_header("model", http::HeaderName::from_static("x-model"))
        .build()
        .unwrap();
    let layer = tower_tenancy::TenancyLayer::builder(Registry::new())
        .source(tower_tenancy::Source::header())
        .exempt("/health")
        .policy(policy)
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<tower_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    let any = || get(whoami).post(whoami).delete(whoami);
    let router = axum::Router::new()
        .route("/whoami", any())
        .route("/admin/{page}", any())
        .route("/health", get(|| async { "ok" }))
        .layer(layer);
    let res = router.oneshot(axum_request(req)).await.unwrap();
    axum_answer(res, &audit).await
}

fn acme(uri: &'static str) -> Req {
    get_(uri).h("x-tenant-id", "acme")
}

fn stark(uri: &'static str) -> Req {
    get_(uri).h("x-tenant-id", "stark")
}

fn table() -> Vec<(&'static str, Req, Want)> {
    use Want::{Refused, Served};
    vec![
        ("allowed", acme("/whoami"), Served("acme header")),
        (
            "allowed, POST",
            acme("/whoami").method("POST"),
            Served("acme header"),
        ),
        (
            "no rule allows DELETE",
            acme("/whoami").method("DELETE"),
            Refused(403, "policy_denied"),
        ),
        (
            "denied for every tier",
            acme("/admin/users"),
            Refused(403, "policy_denied"),
        ),
        (
            "an encoded path is the path it routes to",
            acme("/%61dmin/users"),
            Refused(403, "policy_denied"),
        ),
        (
            "a capability the tier has",
            acme("/whoami").h("x-model", "gpt-5"),
            Served("acme header"),
        ),
        (
            "a capability the tier lacks",
            stark("/whoami").h("x-model", "gpt-5"),
            Refused(403, "policy_denied"),
        ),
        (
            "the free tier's model",
            stark("/whoami").h("x-model", "gpt-4o-mini"),
            Served("stark header"),
        ),
        (
            "a repeated capability header",
            acme("/whoami")
                .h("x-model", "gpt-5")
                .h("x-model", "gpt-4o-mini"),
            Refused(403, "policy_denied"),
        ),
        (
            "a malformed capability header",
            acme("/whoami").h("x-model", "gpt 5"),
            Refused(403, "policy_denied"),
        ),
        (
            "the evaluator fails",
            get_("/whoami").h("x-tenant-id", "initech"),
            Refused(503, "policy_unavailable"),
        ),
        (
            "the evaluator panics",
            get_("/whoami").h("x-tenant-id", "wonka"),
            Refused(503, "policy_unavailable"),
        ),
        (
            "the evaluator answers later",
            get_("/whoami").h("x-tenant-id", "slowco"),
            Served("slowco header"),
        ),
        (
            "the evaluator answers too late",
            get_("/whoami").h("x-tenant-id", "umbrella"),
            Refused(503, "policy_unavailable"),
        ),
        ("exempt: no policy", get_("/health"), Served("ok")),
        (
            "resolution refuses first",
            get_("/admin/users"),
            Refused(401, "tenant_missing"),
        ),
    ]
}

#[actix_web::test]
async fn both_adapters_judge_every_row_of_the_policy_table_the_same() {
    let mut answers = Vec::new();
    for (name, req, want) in table() {
        let actix = on_actix(&req).await;
        let axum = on_axum(&req).await;
        check(name, &want, &actix, "actix");
        check(name, &want, &axum, "axum");
        assert_eq!(actix, axum, "{name}: the adapters differ");
        answers.push((name, actix));
    }
    let audit = |n: &str| &answers.iter().find(|(name, _)| *name == n).unwrap().1.audit;
    // The rule and version that decided are audited.
    let denied = audit("denied for every tier");
    assert!(
        denied
            .iter()
            .any(|e| e.contains(r#"rule=Some("default deny * /admin/**") version=Some(1)"#)),
        "{denied:#?}"
    );
    // The shadow version's view is audited beside the active one's, never the answer.
    let stark = audit("the free tier's model");
    assert!(
        stark.iter().any(|e| e.starts_with("policy would_deny")),
        "{stark:#?}"
    );
    // A capability refused by its header names no decision: it never reached the
    // evaluator.
    let repeated = audit("a repeated capability header");
    assert!(
        repeated
            .iter()
            .any(|e| e.starts_with("policy policy_denied") && e.ends_with("rule=None version=None")),
        "{repeated:#?}"
    );
}
