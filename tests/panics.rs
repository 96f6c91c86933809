//! Every piece of the application's code the crate calls on the request path may panic:
//! a cost estimator, a quota manager (`check` when asked and while answering, `settle`),
//! a custom tenant source (sync and async; the async one may also hang), an audit
//! sink, an error responder, and a quota manager settling while a handler's panic
//! unwinds. Each is answered (`503` for a backend, `500` where the fault is the
//! application's, the normal answer where the callback only observes), never a
//! connection reset, and never an aborted process.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_tenancy::{
    observe::AuditEvent,
    prelude::*,
    quota::{
        ActualCost, Charge, LocalQuota, QuotaDecision, QuotaError, QuotaManager, QuotaPlan,
        QuotaPlans, TenantQuota,
    },
    resolve::SourceError,
};
use actix_tenancy::{Answer, Moment};
use actix_web::{dev::ServiceRequest, test, web, App, HttpMessage as _, HttpRequest, HttpResponse};
use futures_util::FutureExt as _;

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod quiet;
    pub mod send;
}
use common::{quiet::quiet_injected_panics, send::send};

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
}

fn resolver() -> TenantResolver {
    TenantResolver::builder(registry())
        .source(Source::header())
        .build()
        .unwrap()
}

fn plans() -> QuotaPlans {
    QuotaPlans::builder()
        .tier("pro", QuotaPlan::per_second(1_000))
        .build()
        .unwrap()
}

fn acme(path: &str) -> test::TestRequest {
    test::TestRequest::get()
        .uri(path)
        .insert_header(("x-tenant-id", "acme"))
}

/// The code of a problem body.
fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["code"].as_str().unwrap_or_default().to_owned()
}

/// A quota manager that panics where it is told to: a check when asked
/// (`check_now`) or while its answer is awaited (`check`); a settlement when asked.
struct Panicking {
    check_now: bool,
    check: bool,
    settle: bool,
    settled: Arc<AtomicUsize>,
}

impl QuotaManager for Panicking {
    fn check<'a>(
        &'a self,
        _: &'a TenantContext,
        _: u32,
        _: &mut Moment,
    ) -> Answer<'a, Result<QuotaDecision, QuotaError>> {
        if self.check_now {
            panic!("injected check panic, when asked");
        }
        Answer::later(async move {
            if self.check {
                panic!("injected check panic");
            }
            Ok(QuotaDecision::allow())
        })
    }

    fn settle<'a>(
        &'a self,
        _: &'a TenantContext,
        _: Charge,
        _: u32,
    ) -> Answer<'a, Result<(), QuotaError>> {
        self.settled.fetch_add(1, Ordering::SeqCst);
        if self.settle {
            panic!("injected settle panic, when asked");
        }
        Answer::Now(Ok(()))
    }
}

fn with_quota(quota: TenantQuota) -> Tenancy {
    Tenancy::builder()
        .resolver(resolver())
        .quota(quota)
        .build()
        .unwrap()
}

#[actix_web::test]
async fn a_panicking_cost_estimator_is_a_500() {
    quiet_injected_panics();
    let quota = TenantQuota::builder(LocalQuota::new(plans()))
        .cost(|_: &ServiceRequest| -> u32 { panic!("injected estimator panic") })
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(with_quota(quota))
            .route("/", web::get().to(|| async { "ok" })),
    )
    .await;
    let (status, body) = send(&app, acme("/")).await;
    assert_eq!(
        (status, code(&body)),
        (500, "internal_error".into()),
        "{body}"
    );
    assert!(!body.contains("estimator"), "reveals nothing: {body}");
}

#[actix_web::test]
async fn a_panicking_quota_manager_is_a_503_and_a_panicking_settle_loses_only_itself() {
    quiet_injected_panics();
    let settled = Arc::new(AtomicUsize::new(0));
    for (check_now, check) in [(true, false), (false, true)] {
        let manager = Panicking {
            check_now,
            check,
            settle: false,
            settled: Arc::clone(&settled),
        };
        let app = test::init_service(
            App::new()
                .wrap(with_quota(TenantQuota::new(manager)))
                .route("/", web::get().to(|| async { "ok" })),
        )
        .await;
        let (status, body) = send(&app, acme("/")).await;
        assert_eq!((status, code(&body)), (503, "quota_unavailable".into()));
    }
    // The handler's answer stands when the correction after it panics, on either path.
    let manager = Panicking {
        check_now: false,
        check: false,
        settle: true,
        settled: Arc::clone(&settled),
    };
    let app = test::init_service(
        App::new()
            .wrap(with_quota(TenantQuota::new(manager)))
            .route(
                "/",
                web::get().to(|req: HttpRequest| async move {
                    req.extensions_mut().insert(ActualCost(7));
                    "ok"
                }),
            ),
    )
    .await;
    assert_eq!(send(&app, acme("/")).await, (200, "ok".into()));
    // `settle` panicked when asked, once: caught, and not asked again.
    assert_eq!(settled.load(Ordering::SeqCst), 1);
}

#[actix_web::test]
async fn a_settle_that_panics_while_a_handler_panics_does_not_abort() {
    quiet_injected_panics();
    let settled = Arc::new(AtomicUsize::new(0));
    let manager = Panicking {
        check_now: false,
        check: false,
        settle: true,
        settled: Arc::clone(&settled),
    };
    let quota = TenantQuota::builder(manager)
        .refund_server_errors(true)
        .build()
        .unwrap();
    let app = test::init_service(App::new().wrap(with_quota(quota)).route(
        "/",
        web::get().to(|| async {
            panic!("injected handler panic");
            #[allow(unreachable_code)]
            "never"
        }),
    ))
    .await;
    // The handler's own panic is the application's to handle (actix does not catch
    // it); the crate must not turn it into an abort while it unwinds.
    let outcome = std::panic::AssertUnwindSafe(test::call_service(&app, acme("/").to_request()))
        .catch_unwind()
        .await;
    assert!(outcome.is_err(), "the handler's panic propagates");
    // The refund was deferred to a task (no user code runs during the unwind), where
    // its panic is caught.
    for _ in 0..50 {
        if settled.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        settled.load(Ordering::SeqCst),
        1,
        "settle ran on a task, caught"
    );
    // The worker still serves.
    let (status, _) = send(&app, test::TestRequest::get().uri("/")).await;
    assert_eq!(status, 401);
}

#[actix_web::test]
async fn panicking_or_hanging_custom_sources_are_answered() {
    quiet_injected_panics();
    let sync = TenantResolver::builder(registry())
        .source(Source::custom(|_| -> Result<Option<String>, SourceError> {
            panic!("injected source panic")
        }))
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(sync)
            .route("/", web::get().to(|| async { "ok" })),
    )
    .await;
    let (status, body) = send(&app, acme("/")).await;
    assert_eq!((status, code(&body)), (500, "internal_error".into()));

    let panicking = TenantResolver::builder(registry())
        .source(Source::custom_async(|_| {
            Box::pin(async { panic!("injected async source panic") })
        }))
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(panicking)
            .route("/", web::get().to(|| async { "ok" })),
    )
    .await;
    let (status, body) = send(&app, acme("/")).await;
    assert_eq!((status, code(&body)), (500, "internal_error".into()));

    let hanging = TenantResolver::builder(registry())
        .source(Source::custom_async(|_| {
            Box::pin(std::future::pending::<Result<Option<String>, SourceError>>())
        }))
        .registry_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(hanging)
            .route("/", web::get().to(|| async { "ok" })),
    )
    .await;
    let answered = tokio::time::timeout(Duration::from_secs(5), send(&app, acme("/")))
        .await
        .expect("a hanging async source is bounded by registry_timeout");
    assert_eq!(
        (answered.0, code(&answered.1)),
        (503, "tenant_unavailable".into())
    );
}

#[actix_web::test]
async fn a_panicking_audit_sink_or_responder_leaves_every_answer_as_it_was() {
    quiet_injected_panics();
    let audited = Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry())
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .audit(|_: &AuditEvent<'_>| panic!("injected audit panic"))
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(audited)
            .route("/", web::get().to(|| async { "ok" })),
    )
    .await;
    assert_eq!(send(&app, acme("/")).await, (200, "ok".into()));
    let (status, body) = send(&app, test::TestRequest::get().uri("/")).await;
    assert_eq!((status, code(&body)), (401, "tenant_missing".into()));

    let responded = Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry())
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .responder(|_: &TenancyError, _: &HttpRequest| -> HttpResponse {
            panic!("injected responder panic")
        })
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(responded)
            .route("/", web::get().to(|| async { "ok" })),
    )
    .await;
    // The refusal still has its status, in the default body.
    let (status, body) = send(&app, test::TestRequest::get().uri("/")).await;
    assert_eq!((status, code(&body)), (401, "tenant_missing".into()));
    let (status, body) = send(
        &app,
        test::TestRequest::get()
            .uri("/")
            .insert_header(("x-tenant-id", "nobody")),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "tenant_forbidden".into()));
}

#[cfg(feature = "redis")]
#[actix_web::test]
async fn a_panicking_mode_change_hook_leaves_the_check_answered() {
    use actix_tenancy::quota::RedisQuota;
    quiet_injected_panics();
    // Nothing listens on the port: every check fails, and the hook is called.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let quota = RedisQuota::builder(format!("redis://127.0.0.1:{port}"), plans())
        .timeout(Duration::from_millis(100))
        .on_mode_change(|_| panic!("injected hook panic"))
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(with_quota(TenantQuota::new(quota)))
            .route("/", web::get().to(|| async { "ok" })),
    )
    .await;
    for _ in 0..2 {
        let (status, body) = send(&app, acme("/")).await;
        assert_eq!((status, code(&body)), (503, "quota_unavailable".into()));
    }
}
