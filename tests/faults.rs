//! Fault injection through a real `App`: a registry, a policy evaluator and (feature
//! `jwt`) a revocation store that error, hang and panic, and (feature `redis`) a Redis
//! server of the test's own, stopped, frozen (`SIGSTOP`) and restarted while requests
//! flow. Every request gets an answer within its timeout, no panic escapes, no request
//! passes while the backend is down, and service comes back by itself when the backend
//! does. The times to answer and to recover are printed (`--nocapture`).

use std::{
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use actix_tenancy::{
    policy::{Decision, PolicyError, PolicyEvaluator, PolicyRequest, TenantPolicy},
    prelude::*,
    registry::{Lookup, RegistryError, TenantRegistry},
};
use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceResponse},
    test as actix_test, web, App, HttpResponse,
};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod quiet;
    pub mod services;
    pub mod stack;
}
use common::quiet::quiet_injected_panics;

/// How a faulty backend behaves now; tests switch it while requests flow.
#[derive(Clone, Default)]
struct Mode(Arc<AtomicU8>);

const HEALTHY: u8 = 0;
const ERROR: u8 = 1;
const HANG: u8 = 2;
const PANIC: u8 = 3;

impl Mode {
    fn set(&self, mode: u8) {
        self.0.store(mode, Ordering::SeqCst);
    }
    fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

fn name(mode: u8) -> &'static str {
    ["healthy", "error", "hang", "panic"][usize::from(mode)]
}

/// A registry that knows acme, when it is healthy.
struct FaultyRegistry {
    mode: Mode,
    /// Panic on the synchronous path too (the cache a registry may keep).
    ready_panics: bool,
}

#[async_trait::async_trait]
impl TenantRegistry for FaultyRegistry {
    async fn lookup(&self, id: &TenantId) -> Result<Lookup, RegistryError> {
        match self.mode.get() {
            ERROR => Err(RegistryError::new("injected failure")),
            HANG => std::future::pending().await,
            PANIC => panic!("injected registry panic"),
            _ => {
                Ok((id.as_str() == "acme").then(|| Arc::new(TenantRecord::new(id.clone(), "pro"))))
            }
        }
    }

    fn lookup_ready(&self, _: &str) -> Option<Lookup> {
        if self.ready_panics && self.mode.get() == PANIC {
            panic!("injected registry panic, on the synchronous path");
        }
        None
    }
}

/// An evaluator that allows everything, when it is healthy.
struct FaultyEvaluator(Mode);

#[async_trait::async_trait]
impl PolicyEvaluator for FaultyEvaluator {
    async fn evaluate(
        &self,
        _: &TenantContext,
        _: &PolicyRequest,
    ) -> Result<Decision, PolicyError> {
        match self.0.get() {
            ERROR => Err(PolicyError::new("injected failure")),
            HANG => std::future::pending().await,
            PANIC => panic!("injected evaluator panic"),
            _ => Ok(Decision::allow("healthy")),
        }
    }
}

fn get(tenant: &str) -> actix_test::TestRequest {
    actix_test::TestRequest::get()
        .uri("/x")
        .insert_header(("x-tenant-id", tenant.to_owned()))
}

/// Sends `n` requests; each must be answered with `status` within `deadline`. Returns
/// the slowest answer.
async fn answers<S, B>(
    app: &S,
    n: usize,
    status: u16,
    deadline: Duration,
    req: impl Fn() -> actix_test::TestRequest,
) -> Duration
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let start = Instant::now();
        let res = tokio::time::timeout(deadline, actix_test::call_service(app, req().to_request()))
            .await
            .unwrap_or_else(|_| panic!("request {i} got no answer within {deadline:?}"));
        let took = start.elapsed();
        slowest = slowest.max(took);
        assert_eq!(res.status().as_u16(), status, "request {i}");
    }
    slowest
}

type Req = fn() -> actix_test::TestRequest;

/// Drives one faulty backend through every mode while requests flow: healthy (200),
/// each fault (the `down` status, in time), healthy again (200, at once).
async fn cycle<S, B>(app: &S, mode: &Mode, what: &str, down: u16, deadline: Duration, req: Req)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    quiet_injected_panics();
    answers(app, 5, 200, deadline, req).await;
    for fault in [ERROR, HANG, PANIC] {
        mode.set(fault);
        let slowest = answers(app, 10, down, deadline, req).await;
        mode.set(HEALTHY);
        let start = Instant::now();
        answers(app, 5, 200, deadline, req).await;
        eprintln!(
            "{what} {}: 10 requests, 10 answers {down}, slowest {slowest:?}; recovered in {:?}",
            name(fault),
            start.elapsed()
        );
    }
}

fn resolver(registry: impl TenantRegistry) -> TenantResolver {
    TenantResolver::builder(registry)
        .source(Source::header())
        .registry_timeout(Duration::from_millis(100))
        .build()
        .unwrap()
}

fn handler() -> actix_web::Route {
    web::to(|_: Tenant| async { HttpResponse::Ok().body("ok") })
}

#[actix_web::test]
async fn a_failing_hanging_or_panicking_registry_is_a_503_in_time() {
    for ready_panics in [false, true] {
        let mode = Mode::default();
        let registry = FaultyRegistry {
            mode: mode.clone(),
            ready_panics,
        };
        let app = actix_test::init_service(
            App::new()
                .wrap(
                    Tenancy::builder()
                        .resolver(resolver(registry))
                        .build()
                        .unwrap(),
                )
                .default_service(handler()),
        )
        .await;
        cycle(&app, &mode, "registry", 503, Duration::from_secs(2), || {
            get("acme")
        })
        .await;
        // An unknown tenant is still refused by a healthy registry.
        answers(&app, 1, 403, Duration::from_secs(2), || get("nobody")).await;
    }
}

#[actix_web::test]
async fn a_failing_hanging_or_panicking_evaluator_is_a_503_in_time() {
    let mode = Mode::default();
    let registry =
        InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
    let policy = TenantPolicy::builder(FaultyEvaluator(mode.clone()))
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let tenancy = Tenancy::builder()
        .resolver(resolver(registry))
        .policy(policy)
        .build()
        .unwrap();
    let app = actix_test::init_service(App::new().wrap(tenancy).default_service(handler())).await;
    cycle(
        &app,
        &mode,
        "evaluator",
        503,
        Duration::from_secs(2),
        || get("acme"),
    )
    .await;
}

#[cfg(feature = "jwt")]
mod revocations {
    use actix_tenancy::session::{
        Consumed, Grant, JwtAuth, Key, KeySet, Revocation, RevocationError, RevocationStore,
        SessionConfig, SessionManager, TokenFacts,
    };
    use jsonwebtoken::Algorithm;

    use super::*;

    /// A store that has revoked nothing, when it is healthy; it never answers without
    /// waiting, so every check takes the async path.
    struct FaultyStore(Mode);

    #[async_trait::async_trait]
    impl RevocationStore for FaultyStore {
        async fn revoke(&self, _: Revocation<'_>, _: u64) -> Result<(), RevocationError> {
            Ok(())
        }
        async fn is_revoked(&self, _: &TokenFacts<'_>) -> Result<bool, RevocationError> {
            match self.0.get() {
                ERROR => Err(RevocationError::new("injected failure")),
                HANG => std::future::pending().await,
                PANIC => panic!("injected store panic"),
                _ => Ok(false),
            }
        }
        async fn consume(&self, _: &str, _: &str, _: u64) -> Result<Consumed, RevocationError> {
            Ok(Consumed::First)
        }
    }

    #[actix_web::test]
    async fn a_failing_hanging_or_panicking_revocation_store_is_a_503_in_time() {
        let mode = Mode::default();
        let keys = KeySet::signing(
            Key::hmac("k1", Algorithm::HS256, b"0123456789abcdef0123456789abcdef").unwrap(),
        )
        .unwrap();
        let sessions = SessionManager::new(SessionConfig::new("iss", "aud"), keys)
            .with_store(FaultyStore(mode.clone()));
        let acme = TenantId::parse("acme").unwrap();
        let pair = sessions.issue(&acme, "ada", Grant::new()).unwrap();
        let auth = JwtAuth::builder(sessions)
            .revocation_timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let registry = InMemoryRegistry::new().with(TenantRecord::new(acme, "pro"));
        let tenancy = common::stack::on_claim(registry)
            .auth(auth)
            .build()
            .unwrap();
        let app =
            actix_test::init_service(App::new().wrap(tenancy).default_service(handler())).await;
        TOKEN.with(|t| *t.borrow_mut() = pair.access_token.clone());
        cycle(
            &app,
            &mode,
            "revocation store",
            503,
            Duration::from_secs(2),
            || {
                let token = TOKEN.with(|t| t.borrow().clone());
                actix_test::TestRequest::get()
                    .uri("/x")
                    .insert_header(("authorization", format!("Bearer {token}")))
            },
        )
        .await;
    }

    thread_local! {
        static TOKEN: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
}

#[cfg(feature = "redis")]
mod redis_server {
    //! A Redis server of the test's own, on a free port: started, stopped, frozen and
    //! restarted by the test, never the machine's.

    use std::{
        net::TcpListener,
        process::{Child, Command},
    };

    use actix_tenancy::quota::{FailureMode, QuotaPlan, QuotaPlans, RedisQuota, TenantQuota};

    use super::*;

    struct Server {
        port: u16,
        child: Child,
    }

    impl Server {
        /// Starts `redis-server` on `port` (a free one when `None`); `None` when there is
        /// no `redis-server` outside CI (under `CI=true`, a missing server fails).
        fn start(port: Option<u16>) -> Option<Self> {
            let port = port.unwrap_or_else(|| {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            });
            let child = common::services::spawn_redis(&["--port", &port.to_string()], port)?;
            Some(Self { port, child })
        }

        fn signal(&self, sig: &str) {
            let ok = Command::new("kill")
                .args([sig, &self.child.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill {sig}");
        }

        fn stop(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-CONT", &self.child.id().to_string()])
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[actix_web::test]
    async fn redis_stopped_frozen_and_restarted_while_requests_flow() {
        let Some(server) = Server::start(None) else {
            return;
        };
        let port = server.port;
        let plans = QuotaPlans::builder()
            .tier("pro", QuotaPlan::per_second(10_000).burst(10_000))
            .build()
            .unwrap();
        let quota = RedisQuota::builder(format!("redis://127.0.0.1:{port}"), plans)
            .prefix("faults")
            .timeout(Duration::from_millis(150))
            .failure_mode(FailureMode::FailClosed)
            .build()
            .unwrap();
        let registry = InMemoryRegistry::new()
            .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
        let tenancy = Tenancy::builder()
            .resolver(resolver(registry))
            .quota(TenantQuota::new(quota))
            .build()
            .unwrap();
        let app =
            actix_test::init_service(App::new().wrap(tenancy).default_service(handler())).await;
        let deadline = Duration::from_secs(3);
        answers(&app, 5, 200, deadline, || get("acme")).await;

        // Frozen: the connection is open, nothing answers. Fail closed, in time.
        server.signal("-STOP");
        let slowest = answers(&app, 10, 503, deadline, || get("acme")).await;
        server.signal("-CONT");
        let recovered = until_ok(&app).await;
        eprintln!("redis frozen: 10 answers 503, slowest {slowest:?}; recovered in {recovered:?}");

        // Stopped, then restarted on the same port.
        server.stop();
        let slowest = answers(&app, 10, 503, deadline, || get("acme")).await;
        let server = Server::start(Some(port)).expect("redis-server restarts");
        let recovered = until_ok(&app).await;
        eprintln!(
            "redis stopped: 10 answers 503, slowest {slowest:?}; restarted, recovered in {recovered:?}"
        );
        drop(server);
    }

    /// How long until requests pass again (at most 10 s), every answer a 503 or a 200.
    async fn until_ok<S, B>(app: &S) -> Duration
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let start = Instant::now();
        loop {
            let res = actix_test::call_service(app, get("acme").to_request()).await;
            match res.status().as_u16() {
                200 => return start.elapsed(),
                503 => {}
                other => panic!("answered {other} while recovering"),
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no recovery in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
