//! The isolation promise, attacked with random input (`proptest`):
//!
//! - random requests from many tenants, naming their tenant through random sources
//!   (a verified principal, the header, the subdomain, a path prefix), through the full
//!   `Tenancy` stack: every answered request saw exactly the tenant its verified
//!   identity names, no request whose sources disagree passes, and every answer is
//!   the one the rules give;
//! - random header, host and path bytes never panic and never yield a tenant the id
//!   rule refuses;
//! - a model of the quota (burst, refill, daily budget, all or nothing) agrees with
//!   `LocalQuota` on random schedules, on a fake clock.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, UNIX_EPOCH},
};

use actix_tenancy::Moment;
use actix_tenancy::{
    prelude::*,
    quota::{LocalQuota, Period, QuotaManager, QuotaPlan, QuotaPlans},
};
use actix_web::{
    dev::{Service, ServiceResponse},
    test as actix_test, web, App, HttpMessage as _, HttpResponse,
};
use governor::clock::FakeRelativeClock;

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod stack;
}
use proptest::prelude::*;

/// Tenants t0..t5 are active, t6 and t7 suspended; u0..u3 are unknown.
const TENANTS: usize = 8;

fn registry() -> InMemoryRegistry {
    (0..TENANTS).fold(InMemoryRegistry::new(), |r, i| {
        let record = TenantRecord::new(TenantId::parse(&format!("t{i}")).unwrap(), "pro");
        r.with(if i >= 6 {
            record.with_status(TenantStatus::Suspended)
        } else {
            record
        })
    })
}

fn active(id: &str) -> bool {
    matches!(id.strip_prefix('t').and_then(|n| n.parse::<usize>().ok()), Some(n) if n < 6)
}

/// What a source says in one generated request.
#[derive(Debug, Clone)]
enum Named {
    /// An id (known, suspended or unknown) that follows the rule.
    Id(String),
    /// Input the rule refuses.
    Junk(String),
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..TENANTS).prop_map(|i| format!("t{i}")),
        (0..4usize).prop_map(|i| format!("u{i}")),
    ]
}

fn junk() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("T1".to_owned()),
        Just("t1 ".to_owned()),
        Just("-t1".to_owned()),
        Just("t_1!".to_owned()),
        Just("..".to_owned()),
        "[a-z0-9]{65,70}",
    ]
}

fn named() -> impl Strategy<Value = Option<Named>> {
    prop_oneof![
        3 => Just(None),
        4 => id().prop_map(|i| Some(Named::Id(i))),
        1 => junk().prop_map(|j| Some(Named::Junk(j))),
    ]
}

/// One request: the tenant of a verified principal (an id, never junk: it was
/// verified), and what the header, the subdomain and the path prefix say.
#[derive(Debug, Clone)]
struct Req {
    principal: Option<String>,
    header: Option<Named>,
    host: Option<String>,
    path: Option<Named>,
}

fn req() -> impl Strategy<Value = Req> {
    (
        prop::option::weighted(0.3, id()),
        named(),
        prop::option::weighted(0.4, id()),
        named(),
    )
        .prop_map(|(principal, header, host, path)| Req {
            principal,
            header,
            host,
            path,
        })
}

/// The answer the rules give: the status, and for a `200` the tenant served.
fn expected(r: &Req) -> (u16, Option<String>) {
    let junk = [&r.header, &r.path]
        .iter()
        .any(|n| matches!(n, Some(Named::Junk(_))));
    if junk {
        return (400, None);
    }
    let mut ids = BTreeSet::new();
    ids.extend(r.principal.clone());
    ids.extend(r.host.clone());
    for n in [&r.header, &r.path].into_iter().flatten() {
        if let Named::Id(i) = n {
            ids.insert(i.clone());
        }
    }
    match ids.len() {
        0 => (401, None),
        1 => {
            let id = ids.into_iter().next().unwrap();
            if active(&id) {
                (200, Some(id))
            } else {
                (403, None)
            }
        }
        _ => (403, None),
    }
}

fn to_request(r: &Req) -> actix_test::TestRequest {
    let path = match &r.path {
        None => "/x".to_owned(),
        Some(Named::Id(i) | Named::Junk(i)) => {
            let seg: String = i
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        char::from(b).to_string()
                    }
                    b => format!("%{b:02X}"),
                })
                .collect();
            format!("/t/{seg}/x")
        }
    };
    let host = match &r.host {
        Some(h) => format!("{h}.example.com"),
        None => "example.com".to_owned(),
    };
    let mut t = actix_test::TestRequest::get()
        .uri(&path)
        .insert_header(("host", host));
    if let Some(Named::Id(v) | Named::Junk(v)) = &r.header {
        t = t.insert_header(("x-tenant-id", v.clone()));
    }
    if let Some(p) = &r.principal {
        // Read by the test's own authentication stand-in, which attaches a verified
        // principal: the part a real authentication stage plays.
        t = t.insert_header(("x-test-verified-tenant", p.clone()));
    }
    t
}

/// The full stack around a handler that answers with the tenant it saw, behind a
/// stand-in for authentication that attaches the verified principal.
async fn app() -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    let resolver = TenantResolver::builder(registry())
        .source(Source::claim())
        .source(Source::header())
        .source(Source::subdomain(["example.com"]))
        .source(Source::path_prefix("/t/"))
        .build()
        .unwrap();
    let tenancy = Tenancy::builder().resolver(resolver).build().unwrap();
    actix_test::init_service(
        App::new()
            .wrap(tenancy)
            .wrap_fn(|req, srv| {
                let verified = req
                    .headers()
                    .get("x-test-verified-tenant")
                    .and_then(|v| v.to_str().ok())
                    .map(|t| TenantId::parse(t).unwrap());
                if let Some(t) = verified {
                    Principal::new("user").with_tenant(t).attach(&req);
                }
                srv.call(req)
            })
            .default_service(web::to(
                |t: Tenant, req: actix_web::HttpRequest| async move {
                    // The handler reads the one context; the principal, if any, is the
                    // one the context carries.
                    let principal = req.extensions().get::<Principal>().cloned();
                    let agrees = principal
                        .as_ref()
                        .and_then(Principal::tenant)
                        .is_none_or(|p| p == t.id());
                    HttpResponse::Ok().body(format!("{} {agrees}", t.id()))
                },
            )),
    )
    .await
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn every_answer_is_the_one_the_rules_give(reqs in prop::collection::vec(req(), 1..40)) {
        actix_web::rt::System::new().block_on(async {
            let app = app().await;
            for r in &reqs {
                let res = actix_test::call_service(&app, to_request(r).to_request()).await;
                let status = res.status().as_u16();
                let body = actix_test::read_body(res).await;
                let body = std::str::from_utf8(&body).unwrap();
                let (want, tenant) = expected(r);
                assert_eq!(status, want, "{r:?}: {body}");
                if let Some(tenant) = tenant {
                    assert_eq!(body, format!("{tenant} true"), "{r:?}");
                    if let Some(p) = &r.principal {
                        assert_eq!(p, &tenant, "served as the verified identity's tenant");
                    }
                }
            }
        });
    }

    #[test]
    fn random_bytes_never_panic_nor_yield_a_tenant_the_rule_refuses(
        header in prop_oneof![
            prop::collection::vec(0x20u8..0x7f, 0..80),
            id().prop_map(String::into_bytes),
        ],
        high in prop::collection::vec(any::<u8>(), 0..8),
        host in "[ -~]{0,40}",
        path in prop::collection::vec(any::<u8>(), 0..60),
    ) {
        actix_web::rt::System::new().block_on(async {
            let app = app().await;
            let mut value = header.clone();
            value.extend(high.iter().copied().filter(|b| *b >= 0x80));
            let encoded: String = path.iter().map(|b| format!("%{b:02X}")).collect();
            let mut t = actix_test::TestRequest::get().uri(&format!("/{encoded}"));
            if let Ok(h) = actix_web::http::header::HeaderValue::from_bytes(&value) {
                t = t.insert_header(("x-tenant-id", h));
            }
            if let Ok(h) = actix_web::http::header::HeaderValue::from_str(&host) {
                t = t.insert_header(("host", h));
            }
            let res = actix_test::call_service(&app, t.to_request()).await;
            let status = res.status().as_u16();
            assert!(matches!(status, 200 | 400 | 401 | 403), "{status}");
            let body = actix_test::read_body(res).await;
            if status == 200 {
                let body = std::str::from_utf8(&body).unwrap();
                let id = body.split(' ').next().unwrap();
                assert!(TenantId::parse(id).is_ok(), "{id:?}");
                assert!(active(id), "{id:?} is not an active tenant");
            }
        });
    }
}

/// The quota the plan describes, computed the plain way: GCRA for the rate (each
/// unit costs one interval; at most a burst's worth in advance) and a counter for the
/// day; a request is admitted by both or charged to neither.
struct Model {
    interval: u64,
    burst: u64,
    day: u64,
    /// The theoretical arrival time, in nanoseconds.
    tat: u64,
    used: u64,
}

impl Model {
    fn check(&mut self, now: u64, cost: u64) -> bool {
        if self.used + cost > self.day {
            return false;
        }
        let tat = self.tat.max(now);
        let next = tat + cost * self.interval;
        if cost > self.burst || next - now > self.burst * self.interval {
            return false;
        }
        self.tat = next;
        self.used += cost;
        true
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn local_quota_agrees_with_the_model(
        per_second in 1u32..50,
        burst in 1u32..20,
        day in 1u64..500,
        steps in prop::collection::vec((0u64..400, 0u32..8), 1..120),
    ) {
        let plan = QuotaPlan::per_second(per_second).burst(burst).budget(day, Period::Day);
        let plans = QuotaPlans::builder().tier("pro", plan).build().unwrap();
        let clock = FakeRelativeClock::default();
        // Noon, UTC: no step crosses midnight (at most 120 x 400 ms).
        let noon = Arc::new(AtomicU64::new(1_795_608_000));
        let wall = {
            let noon = Arc::clone(&noon);
            move || UNIX_EPOCH + Duration::from_secs(noon.load(Ordering::SeqCst))
        };
        let quota = LocalQuota::with_clocks(plans, clock.clone(), wall);
        let interval = 1_000_000_000 / u64::from(per_second);
        let mut model = Model {
            interval,
            burst: u64::from(burst),
            day,
            tat: 0,
            used: 0,
        };
        let tenant = common::stack::context("t1", "pro");
        let mut now = 0;
        for (i, (advance_ms, cost)) in steps.into_iter().enumerate() {
            clock.advance(Duration::from_millis(advance_ms));
            now += advance_ms * 1_000_000;
            let got = quota.check(&tenant, cost, &mut Moment::now()).now().unwrap().unwrap();
            let want = model.check(now, u64::from(cost));
            prop_assert_eq!(got.allowed, want, "step {}: cost {} at {} ns: {:?}", i, cost, now, got);
            // The plan has a budget: every decision reports it.
            let budget = got.budget.as_ref();
            prop_assert!(budget.is_some(), "step {}: no budget state: {:?}", i, got);
            prop_assert_eq!(budget.unwrap().remaining, day - model.used, "step {}", i);
        }
    }
}
