//! The server (and a keep-alive client) that `bench/load.sh` measures.
//!
//! ```sh
//! cargo run --release --example bench_server -- serve MODE [ADDR]    # one worker
//! cargo run --release --example bench_server -- client ADDR N TENANT # N requests, one connection
//! ```
//!
//! Modes, each serving `GET /hello` → `ok`:
//! - `bare`: actix-web with no middleware;
//! - `bare-headers`: `bare` whose handler writes the three fields `full-headers` adds
//!   (same names, values of the same lengths): actix's own cost of carrying them;
//! - `resolve`: the resolver on `X-Tenant-ID`, an in-memory registry of 10,000 tenants;
//! - `cached`: the same registry behind `CachedRegistry`, as a remote store would be
//!   (warm: every request is a cache hit);
//! - `policy`: `cached` plus a tiered `RulePolicy`;
//! - `full`: `policy` plus the local quota stage (a rate far above the load, and a daily
//!   budget), without quota headers on allowed responses: the full stack;
//! - `full-headers`: the same with the quota headers on every response;
//! - `full-jwt`: `full` behind `TenantAuth` (HS256); the client sends a bearer token
//!   (`bench_server token TENANT` prints one) and the resolver reads its claim;
//! - `peer`: the same handler behind `actix-extensible-rate-limit` (in-memory backend,
//!   keyed by `X-Tenant-ID`), a peer crate's per-key limit, as a baseline.
//! - `floor`: a hand-written middleware doing only what any design of this crate must
//!   do per request: read the header, find the tenant's entry in a `DashMap`, check its
//!   `governor` limiter, put the tenant into the request extensions for the handler.
//!   No validation, policy, audit or error responses: the lower bound to compare with.
//!
//! `bench_server client ADDR N TENANT [TOKEN]` sends the bearer token too when given.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
};

use actix_tenancy::{
    policy::{PolicySet, RulePolicy, Rules, TenantPolicy},
    prelude::*,
    quota::{LocalQuota, Period, QuotaPlan, QuotaPlans, TenantQuota},
    session::{Grant, Key, KeySet, SessionConfig, SessionManager, TenantAuth},
};
use actix_web::{web, App, HttpResponse, HttpServer};

#[path = "registry.rs"]
mod registry;

use registry::{registry, Remote, TENANTS};

async fn hello() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// `hello` with the three fields `full-headers` adds to a 2xx, of the same lengths,
/// written by the handler as cheaply as actix allows (static names and values, no
/// parsing or formatting): what actix itself costs to carry them.
async fn hello_headers() -> HttpResponse {
    use actix_web::http::header::{HeaderName, HeaderValue};
    let mut res = HttpResponse::Ok().body("ok");
    let h = res.headers_mut();
    h.insert(
        HeaderName::from_static("x-quota-remaining"),
        HeaderValue::from_static("99"),
    );
    h.insert(
        HeaderName::from_static("ratelimit-policy"),
        HeaderValue::from_static("\"rate\";q=1000000;w=1, \"day\";q=1000000000;w=86400"),
    );
    h.insert(
        HeaderName::from_static("ratelimit"),
        HeaderValue::from_static("\"rate\";r=999999;t=1, \"day\";r=999999999;t=40000"),
    );
    res
}

const MODES: &str = "bare bare-headers resolve cached policy full full-headers full-jwt peer floor";

/// The sessions of `full-jwt`: a fixed key, so `token` and `serve` agree.
fn sessions() -> SessionManager {
    let key = Key::hmac("bench", jsonwebtoken::Algorithm::HS256, &[7u8; 32]).expect("valid key");
    SessionManager::new(
        SessionConfig::new("bench", "bench").access_ttl(std::time::Duration::from_secs(3600)),
        KeySet::signing(key).expect("signing key"),
    )
}

fn tenancy(mode: &str) -> Option<Tenancy> {
    let builder = match mode {
        "bare" | "bare-headers" | "peer" | "floor" => return None,
        "resolve" => TenantResolver::builder(registry()),
        "cached" | "policy" | "full" | "full-headers" | "full-jwt" => TenantResolver::builder(
            CachedRegistry::new(Remote(registry()), CacheConfig::default()),
        ),
        other => panic!("unknown mode {other:?}; modes: {MODES}"),
    };
    let builder = if mode == "full-jwt" {
        builder.source(Source::claim())
    } else {
        builder
    };
    let resolver = builder
        .source(Source::header())
        .build()
        .expect("valid configuration");
    let mut tenancy = Tenancy::builder().resolver(resolver);
    if matches!(mode, "policy" | "full" | "full-headers" | "full-jwt") {
        let rules = RulePolicy::new(
            PolicySet::new()
                .default_rules(Rules::new().deny("* /admin/**"))
                .tier(
                    "pro",
                    Rules::new().allow("GET /hello").allow_capability("model:*"),
                )
                .tier("free", Rules::new().allow("GET /hello")),
        )
        .expect("valid policy");
        tenancy = tenancy.policy(TenantPolicy::new(rules));
    }
    if mode.starts_with("full") {
        let plan = || QuotaPlan::per_second(1_000_000).budget(1_000_000_000, Period::Day);
        let plans = QuotaPlans::builder()
            .tier("pro", plan())
            .tier("free", plan())
            .build()
            .expect("valid plans");
        let quota = TenantQuota::builder(LocalQuota::new(plans))
            .headers_on_success(mode == "full-headers")
            .build()
            .expect("a valid quota stage");
        tenancy = tenancy.quota(quota);
    }
    if mode == "full-jwt" {
        tenancy = tenancy.auth(TenantAuth::new(sessions()));
    }
    Some(tenancy.build().expect("valid configuration"))
}

fn serve(mode: &str, addr: &str) -> std::io::Result<()> {
    eprintln!("bench_server: {mode} on {addr}");
    let addr = addr.to_owned();
    let tenancy = tenancy(mode);
    // Every mode: one worker, `GET /hello`, the mode's middleware (if any) around it.
    macro_rules! run {
        ($make:expr) => {
            HttpServer::new($make).workers(1).bind(addr)?.run().await
        };
    }
    actix_web::rt::System::new().block_on(async move {
        match (mode, tenancy) {
            ("peer", _) => {
                use actix_extensible_rate_limit::{
                    backend::{memory::InMemoryBackend, SimpleInputFunctionBuilder},
                    RateLimiter,
                };
                let backend = InMemoryBackend::builder().build();
                run!(move || {
                    let input = SimpleInputFunctionBuilder::new(
                        std::time::Duration::from_secs(1),
                        1_000_000,
                    )
                    .custom_fn(|req| {
                        Ok(req
                            .headers()
                            .get("x-tenant-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned())
                    })
                    .build();
                    App::new()
                        .wrap(RateLimiter::builder(backend.clone(), input).build())
                        .route("/hello", web::get().to(hello))
                })
            }
            ("floor", _) => {
                let floor = floor::Floor::new(TENANTS);
                run!(move || App::new()
                    .wrap(floor.clone())
                    .route("/hello", web::get().to(hello)))
            }
            (_, Some(tenancy)) => run!(move || App::new()
                .wrap(tenancy.clone())
                .route("/hello", web::get().to(hello))),
            ("bare-headers", _) => {
                run!(|| App::new().route("/hello", web::get().to(hello_headers)))
            }
            (_, None) => run!(|| App::new().route("/hello", web::get().to(hello))),
        }
    })
}

/// Sends `n` requests over one keep-alive connection and checks every answer.
fn client(addr: &str, n: usize, tenant: &str, token: Option<&str>) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET /hello HTTP/1.1\r\nHost: {addr}\r\nX-Tenant-ID: {tenant}\r\n{auth}\r\n");
    let mut line = String::new();
    for i in 0..n {
        writer.write_all(request.as_bytes())?;
        line.clear();
        reader.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(format!("request {i}: {line:?}")));
        }
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    match arg(0, "serve").as_str() {
        "serve" => serve(&arg(1, "bare"), &arg(2, "127.0.0.1:8088")),
        "client" => client(
            &arg(1, "127.0.0.1:8088"),
            arg(2, "1000").parse().map_err(std::io::Error::other)?,
            &arg(3, "t42"),
            args.get(4).map(String::as_str),
        ),
        "token" => {
            let tenant = TenantId::parse(&arg(1, "t42")).map_err(std::io::Error::other)?;
            let pair = sessions()
                .issue(&tenant, "bench", Grant::new())
                .map_err(std::io::Error::other)?;
            println!("{}", pair.access_token);
            Ok(())
        }
        other => Err(std::io::Error::other(format!("unknown command {other:?}"))),
    }
}

/// The `floor` mode's middleware: the irreducible per-request work, nothing else.
mod floor {
    use std::{
        future::{ready, Future, Ready},
        num::NonZeroU32,
        pin::Pin,
        rc::Rc,
        sync::Arc,
        task::{Context, Poll},
    };

    use actix_web::{
        body::EitherBody,
        dev::{Service, ServiceRequest, ServiceResponse, Transform},
        http::header::HeaderName,
        HttpMessage as _, HttpResponse,
    };
    use dashmap::DashMap;
    use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

    pub(crate) struct Entry {
        limiter: DefaultDirectRateLimiter,
    }

    #[derive(Clone)]
    pub(crate) struct Floor(Arc<DashMap<Box<str>, Arc<Entry>, foldhash::fast::RandomState>>);

    impl Floor {
        pub(crate) fn new(tenants: usize) -> Self {
            let map = DashMap::default();
            let quota = Quota::per_second(NonZeroU32::new(1_000_000).expect("non-zero"));
            for i in 0..tenants {
                let entry = Entry {
                    limiter: RateLimiter::direct(quota),
                };
                map.insert(format!("t{i}").into_boxed_str(), Arc::new(entry));
            }
            Self(Arc::new(map))
        }
    }

    impl<S, B> Transform<S, ServiceRequest> for Floor
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>
            + 'static,
    {
        type Response = ServiceResponse<EitherBody<B>>;
        type Error = actix_web::Error;
        type Transform = FloorService<S>;
        type InitError = ();
        type Future = Ready<Result<Self::Transform, ()>>;

        fn new_transform(&self, service: S) -> Self::Future {
            ready(Ok(FloorService {
                service: Rc::new(service),
                map: self.clone(),
                // Parsed once, as the crate's sources do.
                header: HeaderName::from_static("x-tenant-id"),
            }))
        }
    }

    pub(crate) struct FloorService<S> {
        service: Rc<S>,
        map: Floor,
        header: HeaderName,
    }

    pin_project_lite::pin_project! {
        #[project = FutProj]
        pub(crate) enum FloorFuture<F, B> {
            Inner { #[pin] fut: F },
            Refused { res: Option<ServiceResponse<EitherBody<B>>> },
        }
    }

    impl<F, B> Future for FloorFuture<F, B>
    where
        F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
    {
        type Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                FutProj::Inner { fut } => fut.poll(cx).map_ok(ServiceResponse::map_into_left_body),
                FutProj::Refused { res } => Poll::Ready(Ok(res.take().expect("polled once"))),
            }
        }
    }

    impl<S, B> Service<ServiceRequest> for FloorService<S>
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>
            + 'static,
    {
        type Response = ServiceResponse<EitherBody<B>>;
        type Error = actix_web::Error;
        type Future = FloorFuture<S::Future, B>;

        actix_web::dev::forward_ready!(service);

        fn call(&self, req: ServiceRequest) -> Self::Future {
            let entry = req
                .headers()
                .get(&self.header)
                .and_then(|v| v.to_str().ok())
                .and_then(|id| self.map.0.get(id).map(|e| Arc::clone(e.value())));
            match entry {
                Some(entry) if entry.limiter.check().is_ok() => {
                    req.extensions_mut().insert(entry);
                    FloorFuture::Inner {
                        fut: self.service.call(req),
                    }
                }
                _ => {
                    let res = req.into_response(HttpResponse::Forbidden().finish());
                    FloorFuture::Refused {
                        res: Some(res.map_into_right_body()),
                    }
                }
            }
        }
    }
}
