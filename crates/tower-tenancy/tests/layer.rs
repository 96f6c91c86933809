//! The layer through axum and a real server: Tower's conventions (readiness, the
//! ready service called, rejections from the future, `Send` futures), the extractors,
//! and a request over TCP.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use axum::{body::Body, routing::get, Router};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use tenancy_core::{registry::InMemoryRegistry, Principal, TenantId, TenantRecord};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::{Layer as _, Service, ServiceExt as _};
use tower_tenancy::{Source, SourceError, TenancyLayer, Tenant};

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
        .with(TenantRecord::new(
            TenantId::parse("globex").unwrap(),
            "free",
        ))
}

fn layer() -> TenancyLayer {
    TenancyLayer::builder(registry())
        .source(Source::header())
        .build()
        .unwrap()
}

async fn body(res: Response<impl http_body::Body<Error = impl std::fmt::Debug>>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn req(tenant: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri("/");
    if let Some(t) = tenant {
        b = b.header("x-tenant-id", t);
    }
    b.body(Body::empty()).unwrap()
}

/// An inner service that counts its calls and is ready only when told.
#[derive(Clone)]
struct Counting {
    calls: Arc<AtomicUsize>,
    ready: Arc<std::sync::atomic::AtomicBool>,
}

impl Service<Request<Body>> for Counting {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let tenant = Tenant::of(req.extensions()).map(|t| t.id().to_string());
        std::future::ready(Ok(Response::new(Body::from(tenant.unwrap_or_default()))))
    }
}

#[tokio::test]
async fn readiness_is_the_inner_service_and_a_refused_request_never_reaches_it() {
    let inner = Counting {
        calls: Arc::default(),
        ready: Arc::default(),
    };
    let mut svc = layer().layer(inner.clone());
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "not ready while the inner is not"
    );
    inner.ready.store(true, Ordering::SeqCst);
    assert!(svc.poll_ready(&mut cx).is_ready());

    let res = svc.call(req(Some("acme"))).await.unwrap();
    assert_eq!(body(res).await, "acme");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);

    for refused in [None, Some("nobody"), Some("ACME")] {
        let res = svc.ready().await.unwrap().call(req(refused)).await.unwrap();
        assert_ne!(res.status(), StatusCode::OK, "{refused:?}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(
        inner.calls.load(Ordering::SeqCst),
        1,
        "refused requests reach nothing"
    );
}

#[test]
fn the_service_and_its_future_are_send_for_axum_and_tonic() {
    fn send<T: Send + Sync>(_: &T) {}
    fn send_future<F: std::future::Future + Send>(_: &F) {}
    let mut svc = layer().layer(Counting {
        calls: Arc::default(),
        ready: Arc::new(true.into()),
    });
    send(&svc);
    let fut = svc.call(req(Some("acme")));
    send_future(&fut);
}

async fn whoami(tenant: Tenant) -> String {
    format!("{} {}", tenant.id(), tenant.tier())
}

async fn maybe(tenant: Option<Tenant>) -> String {
    tenant.map_or_else(|| "none".to_owned(), |t| t.id().to_string())
}

async fn who(principal: Principal) -> String {
    principal.subject().to_owned()
}

#[tokio::test]
async fn the_extractors_read_the_layer_and_fail_closed_without_it() {
    let open = TenancyLayer::builder(registry())
        .source(Source::header())
        .allow_missing(true)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/maybe", get(maybe))
        .route("/who", get(who))
        .layer(open);
    let call = |uri: &'static str, tenant: Option<&'static str>| {
        let app = app.clone();
        async move {
            let mut b = Request::builder().uri(uri);
            if let Some(t) = tenant {
                b = b.header("x-tenant-id", t);
            }
            let res = app.oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
            (res.status().as_u16(), body(res).await)
        }
    };
    assert_eq!(
        call("/whoami", Some("acme")).await,
        (200, "acme pro".into())
    );
    assert_eq!(call("/maybe", Some("acme")).await, (200, "acme".into()));
    assert_eq!(call("/maybe", None).await, (200, "none".into()));
    // Let through without a tenant, a handler that needs one answers `401`.
    let (status, text) = call("/whoami", None).await;
    assert_eq!(status, 401);
    assert!(text.contains(r#""code":"tenant_missing""#), "{text}");
    // No authentication layer attached a principal.
    let (status, text) = call("/who", Some("acme")).await;
    assert_eq!(status, 401);
    assert!(text.contains(r#""code":"unauthenticated""#), "{text}");

    // A handler that needs a tenant, mounted without the layer: `500`, never a default.
    let bare = Router::new()
        .route("/whoami", get(whoami))
        .route("/maybe", get(maybe));
    for uri in ["/whoami", "/maybe"] {
        let res = bare
            .clone()
            .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 500, "{uri}");
        assert!(body(res).await.contains(r#""code":"internal_error""#));
    }
}

#[tokio::test]
async fn a_principal_from_an_outer_layer_names_the_tenant_and_reaches_the_handler() {
    let app = Router::new()
        .route(
            "/who",
            get(|p: Principal, t: Tenant| async move { format!("{} {}", p.subject(), t.id()) }),
        )
        .layer(
            TenancyLayer::builder(registry())
                .source(Source::claim())
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .layer(tower::util::MapRequestLayer::new(|mut r: Request<Body>| {
            let p = Principal::new("alice").with_tenant(TenantId::parse("acme").unwrap());
            r.extensions_mut().insert(p);
            r
        }));
    let res = app.clone().oneshot(req(None)).await.unwrap();
    assert_eq!(res.status(), 404); // no route at `/`: the tenant was settled all the same
    let who = |t: Option<&'static str>| {
        let mut b = Request::builder().uri("/who");
        if let Some(t) = t {
            b = b.header("x-tenant-id", t);
        }
        app.clone().oneshot(b.body(Body::empty()).unwrap())
    };
    let res = who(None).await.unwrap();
    assert_eq!(body(res).await, "alice acme");
    let res = who(Some("globex")).await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(body(res).await.contains("tenant_conflict"));
}

#[tokio::test]
async fn a_custom_source_that_panics_is_a_500_not_a_dropped_connection() {
    let app = Router::new().route("/", get(|| async { "served" })).layer(
        TenancyLayer::builder(registry())
            .source(Source::custom(|head| match head.uri.query() {
                Some("boom") => panic!("a bug in the application's source"),
                Some("bad") => Err(SourceError::new("refused")),
                Some(q) => Ok(Some(q.to_owned())),
                None => Ok(None),
            }))
            .build()
            .unwrap(),
    );
    let call = |uri: &'static str| {
        let app = app.clone();
        async move {
            let res = app
                .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            res.status().as_u16()
        }
    };
    assert_eq!(call("/?acme").await, 200);
    assert_eq!(call("/?bad").await, 400);
    assert_eq!(call("/?boom").await, 500);
    assert_eq!(call("/?ACME").await, 400);
}

#[test]
fn a_bad_configuration_is_refused_when_built() {
    let err = |b: tower_tenancy::TenancyLayerBuilder| b.build().unwrap_err().to_string();
    assert!(err(TenancyLayer::builder(registry())).contains("source"));
    assert!(err(TenancyLayer::builder(registry())
        .source(Source::header())
        .source(Source::header()))
    .contains("twice"));
    assert!(
        err(TenancyLayer::builder(registry()).source(Source::header_named("bad header")))
            .contains("header name")
    );
    assert!(
        err(TenancyLayer::builder(registry()).source(Source::subdomain(["10.0.0.1"])))
            .contains("base domain")
    );
    assert!(err(TenancyLayer::builder(registry())
        .source(Source::header())
        .exempt("health"))
    .contains("exempt path"));
}

#[tokio::test]
async fn a_real_server_settles_the_tenant_before_the_router() {
    // The layer around the whole router: the tenant is settled before routing, so an
    // unknown route is answered `404` only for a tenant that may be served.
    let router = Router::new().route("/whoami", get(whoami));
    let app = layer().layer(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback_service(app))
            .await
            .unwrap();
    });
    let raw = |request: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    };
    let get = |path: &str, tenant: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nx-tenant-id: {tenant}\r\nconnection: close\r\n\r\n"
        )
    };
    let ok = raw(get("/whoami", "acme")).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("acme pro"), "{ok}");
    let refused = raw(get("/nowhere", "nobody")).await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("application/problem+json"), "{refused}");
    let missing = raw(get("/nowhere", "acme")).await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    server.abort();
}
