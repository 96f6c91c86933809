//! Quotas, the same on both adapters: one sequence of requests (with the clock moved
//! between some of them) through actix-tenancy's `TenantQuota` in an actix `App` and
//! tower-tenancy's `TenantQuota` in an axum `Router`, each over its own `LocalQuota` on
//! a fake clock that starts at the same second. Every answer (status, body, the quota
//! fields, `Retry-After`) and every audit event must be the same on both, and what
//! the table expects; and a burst of concurrent requests admits exactly the plan's
//! burst on both.

use std::time::{Duration, UNIX_EPOCH};

use actix_web::{test as atest, web, App, HttpMessage as _, HttpRequest, HttpResponse};
use axum::{extract::Path, response::IntoResponse as _, routing::get};
use tenancy_core::{
    error::TenancyError,
    quota::{
        ActualCost, LocalQuota, Period, QuotaDecision, QuotaError, QuotaManager, QuotaPlan,
        QuotaPlans,
    },
    Answer, Charge, Clock, FakeClock, Moment, TenantContext,
};
use tower::ServiceExt as _;

#[allow(dead_code, unreachable_pub)]
mod common;

use common::*;

/// 12:00:00 UTC on a day: the day's budget resets in 43,200 s.
const START: u64 = 1_800_000_000 - 1_800_000_000 % 86_400 + 43_200;

fn plans() -> QuotaPlans {
    QuotaPlans::builder()
        .tier("pro", QuotaPlan::per_second(2).budget(5, Period::Day))
        .tier("free", QuotaPlan::per_second(5))
        .build()
        .unwrap()
}

/// A local quota on the fake clock, and the cases a real backend has: a manager that
/// fails (`initech`), one that panics (`wonka`), one that answers later (`slowco`).
struct Flaky(LocalQuota<Clock>);

impl QuotaManager for Flaky {
    fn check<'a>(
        &'a self,
        tenant: &'a TenantContext,
        cost: u32,
        at: &mut Moment,
    ) -> Answer<'a, Result<QuotaDecision, QuotaError>> {
        match tenant.id().as_str() {
            "initech" => Answer::Now(Err(QuotaError::new("the quota store is down"))),
            "wonka" => panic!("a quota manager bug"),
            "slowco" => Answer::later(async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let answer = self.0.check(tenant, cost, &mut Moment::now()).now();
                answer.expect("a local quota answers now")
            }),
            _ => self.0.check(tenant, cost, at),
        }
    }

    fn settle<'a>(
        &'a self,
        tenant: &'a TenantContext,
        charge: Charge,
        actual: u32,
    ) -> Answer<'a, Result<(), QuotaError>> {
        self.0.settle(tenant, charge, actual)
    }
}

fn flaky(time: &FakeClock) -> Flaky {
    Flaky(LocalQuota::with_clock(plans(), time.clock()))
}

/// The cost a client names in `x-cost`: 1 without it, a bad one a `400`.
fn cost_of(value: Option<&[u8]>) -> Result<u32, TenancyError> {
    let Some(value) = value else { return Ok(1) };
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or(TenancyError::CostInvalid {
            reason: "the cost is not a number".into(),
        })
}

struct XCost;

impl actix_tenancy::quota::CostEstimator for XCost {
    fn estimate(&self, req: &actix_tenancy::quota::CostRequest<'_>) -> Result<u32, TenancyError> {
        cost_of(req.request().headers().get("x-cost").map(|v| v.as_bytes()))
    }
}

impl tower_tenancy::quota::CostEstimator for XCost {
    fn estimate(&self, head: &http::request::Parts) -> Result<u32, TenancyError> {
        cost_of(head.headers.get("x-cost").map(|v| v.as_bytes()))
    }
}

/// One step of the sequence: a request and what it must get, or time passing.
enum Step {
    Send(&'static str, Req, Want),
    Wait(Duration),
}

/// What a step wants beyond the table's `Want`: quota fields.
fn fields(got: &Got) -> Vec<(&'static str, &str)> {
    got.headers
        .iter()
        .filter(|(n, _)| *n == "retry-after" || QUOTA_FIELDS.contains(n))
        .map(|(n, v)| (*n, v.as_str()))
        .collect()
}

fn acme(uri: &'static str) -> Req {
    get_(uri).h("x-tenant-id", "acme")
}

fn sequence() -> Vec<Step> {
    use Step::{Send, Wait};
    use Want::{Refused, Served};
    vec![
        Send("first", acme("/whoami"), Served("acme header")),
        Send(
            "second, the burst spent",
            acme("/whoami"),
            Served("acme header"),
        ),
        Send(
            "over the rate",
            acme("/whoami"),
            Refused(429, "quota_exceeded"),
        ),
        Wait(Duration::from_secs(1)),
        // A 5xx with refunds on: the budget's unit comes back.
        Send("a server error", acme("/fail"), Want::Status(500)),
        Send("the actual cost, 0", acme("/actual/0"), Served("ok")),
        Wait(Duration::from_secs(1)),
        Send(
            "a cost that is not a number",
            acme("/whoami").h("x-cost", "abc"),
            Refused(400, "cost_invalid"),
        ),
        Send(
            "a cost over the burst: never",
            acme("/whoami").h("x-cost", "9"),
            Refused(429, "quota_exceeded"),
        ),
        Send("third of the day", acme("/whoami"), Served("acme header")),
        Send("fourth of the day", acme("/whoami"), Served("acme header")),
        Wait(Duration::from_secs(1)),
        Send("fifth of the day", acme("/whoami"), Served("acme header")),
        Send(
            "over the day",
            acme("/whoami"),
            Refused(429, "quota_exceeded"),
        ),
        Send(
            "the registry and the manager both wait",
            get_("/whoami").h("x-tenant-id", "slowco"),
            Served("slowco header"),
        ),
        Send(
            "the manager fails",
            get_("/whoami").h("x-tenant-id", "initech"),
            Refused(503, "quota_unavailable"),
        ),
        Send(
            "the manager panics",
            get_("/whoami").h("x-tenant-id", "wonka"),
            Refused(503, "quota_unavailable"),
        ),
        Send("exempt: not charged", get_("/health"), Served("ok")),
        Send("no tenant", get_("/whoami"), Refused(401, "tenant_missing")),
    ]
}

fn actix_quota(time: &FakeClock) -> actix_tenancy::quota::TenantQuota {
    actix_tenancy::quota::TenantQuota::builder(flaky(time))
        .cost(XCost)
        .refund_server_errors(true)
        .build()
        .unwrap()
}

fn tower_quota(time: &FakeClock) -> tower_tenancy::TenantQuota {
    tower_tenancy::TenantQuota::builder(flaky(time))
        .cost(XCost)
        .refund_server_errors(true)
        .build()
        .unwrap()
}

async fn actix_run(steps: &[Step]) -> Vec<Got> {
    let (time, audit) = (
        FakeClock::starting_at(UNIX_EPOCH + secs(START)),
        Recorder::default(),
    );
    let resolver = actix_tenancy::TenantResolver::builder(Registry::new())
        .source(actix_tenancy::Source::header())
        .exempt("/health")
        .build()
        .unwrap();
    let tenancy = actix_tenancy::Tenancy::builder()
        .resolver(resolver)
        .quota(actix_quota(&time))
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<actix_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    async fn actual(req: HttpRequest, n: web::Path<u32>) -> &'static str {
        req.extensions_mut().insert(ActualCost(*n));
        "ok"
    }
    let app = atest::init_service(
        App::new()
            .wrap(tenancy)
            .route("/whoami", web::to(whoami))
            .route(
                "/fail",
                web::to(|| async { HttpResponse::InternalServerError().finish() }),
            )
            .route("/actual/{n}", web::to(actual))
            .route("/health", web::to(|| async { "ok" })),
    )
    .await;
    let mut answers = Vec::new();
    for step in steps {
        match step {
            Step::Wait(d) => time.advance(*d),
            Step::Send(_, req, _) => {
                let res = atest::call_service(&app, actix_request(req)).await;
                answers.push(actix_answer(res, &audit).await);
            }
        }
    }
    answers
}

fn axum_app(time: &FakeClock, audit: &Recorder) -> axum::Router {
    let layer = tower_tenancy::TenancyLayer::builder(Registry::new())
        .source(tower_tenancy::Source::header())
        .exempt("/health")
        .quota(tower_quota(time))
        .audit(audit.sink())
        .build()
        .unwrap();
    async fn whoami(t: Option<tower_tenancy::Tenant>) -> String {
        served(t.as_deref())
    }
    async fn actual(Path(n): Path<u32>) -> axum::response::Response {
        let mut res = "ok".into_response();
        res.extensions_mut().insert(ActualCost(n));
        res
    }
    axum::Router::new()
        .route("/whoami", get(whoami))
        .route(
            "/fail",
            get(|| async { http::StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route("/actual/{n}", get(actual))
        .route("/health", get(|| async { "ok" }))
        .layer(layer)
}

async fn axum_run(steps: &[Step]) -> Vec<Got> {
    let (time, audit) = (
        FakeClock::starting_at(UNIX_EPOCH + secs(START)),
        Recorder::default(),
    );
    let app = axum_app(&time, &audit);
    let mut answers = Vec::new();
    for step in steps {
        match step {
            Step::Wait(d) => time.advance(*d),
            Step::Send(_, req, _) => {
                let res = app.clone().oneshot(axum_request(req)).await.unwrap();
                answers.push(axum_answer(res, &audit).await);
            }
        }
    }
    answers
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[actix_web::test]
async fn one_quota_sequence_gets_the_same_answers_on_both_adapters() {
    let steps = sequence();
    let on_actix = actix_run(&steps).await;
    let on_axum = axum_run(&steps).await;
    let rows = steps.iter().filter_map(|s| match s {
        Step::Send(name, _, want) => Some((name, want)),
        Step::Wait(_) => None,
    });
    for ((name, want), (a, x)) in rows.zip(on_actix.iter().zip(&on_axum)) {
        check(name, want, a, "actix");
        check(name, want, x, "axum");
        assert_eq!(a, x, "{name}: the adapters differ");
    }
    assert_eq!(on_actix.len(), on_axum.len());

    // What the quota fields say, row by row (the same on both, checked above).
    let f = |i: usize| fields(&on_actix[i]);
    let policy = ("ratelimit-policy", "\"rate\";q=2;w=1, \"day\";q=5;w=86400");
    assert_eq!(
        f(0),
        [
            ("x-quota-remaining", "1"),
            policy,
            ("ratelimit", "\"rate\";r=1;t=1, \"day\";r=4;t=43200"),
        ]
    );
    // Over the rate: retry in a second, nothing left now.
    assert_eq!(
        f(2),
        [
            ("retry-after", "1"),
            ("x-quota-remaining", "0"),
            policy,
            ("ratelimit", "\"rate\";r=0;t=1, \"day\";r=3;t=43200"),
        ]
    );
    // The 5xx was refunded and the actual cost of 0 corrected: the day still has 3
    // (2 spent by the first two requests; the next one leaves 2).
    assert!(
        f(7).contains(&("ratelimit", "\"rate\";r=1;t=1, \"day\";r=2;t=43198")),
        "{:?}",
        f(7)
    );
    // A cost the plan can never admit has no Retry-After.
    assert!(!f(6).iter().any(|(n, _)| *n == "retry-after"), "{:?}", f(6));
    // Over the day: retry when the day ends.
    assert!(f(10).contains(&("retry-after", "43197")), "{:?}", f(10));
    // Exempt: no quota fields.
    assert_eq!(f(14), []);
}

/// A burst of concurrent requests for one tenant admits exactly the burst, on both:
/// on actix, every request in flight at once on the worker; on axum, every request on
/// a task of a multi-threaded runtime, two threads at once.
#[test]
fn a_concurrent_burst_admits_exactly_the_plan_on_both_adapters() {
    const N: usize = 24;
    let burst = || get_("/whoami").h("x-tenant-id", "stark");
    let actix: Vec<u16> = actix_web::rt::System::new().block_on(async move {
        let time = FakeClock::starting_at(UNIX_EPOCH + secs(START));
        let resolver = actix_tenancy::TenantResolver::builder(Registry::new())
            .source(actix_tenancy::Source::header())
            .build()
            .unwrap();
        let tenancy = actix_tenancy::Tenancy::builder()
            .resolver(resolver)
            .quota(actix_quota(&time))
            .build()
            .unwrap();
        let app = atest::init_service(
            App::new()
                .wrap(tenancy)
                .route("/whoami", web::to(|| async { "ok" })),
        )
        .await;
        let reqs: Vec<_> = (0..N).map(|_| actix_request(&burst())).collect();
        let calls = reqs.into_iter().map(|r| atest::call_service(&app, r));
        futures_util::future::join_all(calls)
            .await
            .iter()
            .map(|r| r.status().as_u16())
            .collect()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let axum: Vec<u16> = runtime.block_on(async move {
        let time = FakeClock::starting_at(UNIX_EPOCH + secs(START));
        let app = axum_app(&time, &Recorder::default());
        let tasks: Vec<_> = (0..N)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move {
                    let res = app.oneshot(axum_request(&burst())).await.unwrap();
                    res.status().as_u16()
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        statuses
    });
    for (adapter, statuses) in [("actix", &actix), ("axum", &axum)] {
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let over = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((ok, over), (5, N - 5), "{adapter}: {statuses:?}");
    }
}
