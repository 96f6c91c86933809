//! The quota stage of the layer, where Tower differs from actix: the charge settled
//! when the body has been sent (or refunded when it is dropped before), an empty
//! body served at once, the actual cost from the response's extensions, and a gRPC
//! call over its quota answered `RESOURCE_EXHAUSTED` with a `RetryInfo`.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use axum::{body::Body, routing::get, Router};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use tenancy_core::{
    quota::{ActualCost, LocalQuota, Period, QuotaManager, QuotaPlan, QuotaPlans},
    registry::InMemoryRegistry,
    Moment, SourceKind, TenantContext, TenantId, TenantRecord,
};
use tower::{Layer as _, ServiceExt as _};
use tower_tenancy::{Source, TenancyLayer, TenantQuota};

fn plans() -> QuotaPlans {
    QuotaPlans::builder()
        .tier("pro", QuotaPlan::unlimited().budget(10, Period::Day))
        .build()
        .unwrap()
}

/// A layer over `quota`, refunds on.
fn layer(quota: Arc<LocalQuota>) -> TenancyLayer {
    let registry =
        InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
    TenancyLayer::builder(registry)
        .source(Source::header())
        .quota(
            TenantQuota::builder(quota)
                .refund_server_errors(true)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn get_(uri: &str) -> Request<Body> {
    Request::builder()
        .uri(uri)
        .header("x-tenant-id", "acme")
        .body(Body::empty())
        .unwrap()
}

/// The units acme has left today, asked of the manager itself: a check of one unit,
/// given back at once.
fn left(quota: &LocalQuota) -> u64 {
    let id = TenantId::parse("acme").unwrap();
    let acme = TenantContext::new(
        id.clone(),
        SourceKind::Header,
        Arc::new(TenantRecord::new(id, "pro")),
        None,
    );
    let d = quota
        .check(&acme, 1, &mut Moment::now())
        .now()
        .unwrap()
        .unwrap();
    if !d.allowed {
        return 0;
    }
    quota.settle(&acme, d.charge(1), 0).now().unwrap().unwrap();
    d.budget.unwrap().remaining + 1
}

/// A streamed body: its chunks as the test sends them, and its end when the test
/// drops the sender.
type Chunks = Arc<Mutex<Option<tokio::sync::mpsc::Receiver<Bytes>>>>;

fn streamed(chunks: &Chunks) -> Body {
    let rx = chunks
        .lock()
        .unwrap()
        .take()
        .expect("one request a receiver");
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }))
}

#[tokio::test]
async fn a_body_dropped_before_its_end_is_refunded_and_one_sent_whole_is_not() {
    let quota = Arc::new(LocalQuota::new(plans()));
    let chunks: Chunks = Arc::default();
    let app = {
        let chunks = Arc::clone(&chunks);
        Router::new()
            .route(
                "/stream",
                get(move || {
                    let body = streamed(&chunks);
                    async move { Response::new(body) }
                }),
            )
            .layer(layer(Arc::clone(&quota)))
    };
    assert_eq!(left(&quota), 10);

    // The client goes away after the first chunk: refunded.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    *chunks.lock().unwrap() = Some(rx);
    let res = app.clone().oneshot(get_("/stream")).await.unwrap();
    assert_eq!(res.status(), 200);
    tx.send(Bytes::from_static(b"one ")).await.unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"one ");
    assert_eq!(left(&quota), 9, "charged while the body is being sent");
    drop(body);
    assert_eq!(left(&quota), 10, "refunded: the body never reached its end");

    // Sent to its end: charged.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    *chunks.lock().unwrap() = Some(rx);
    let res = app.clone().oneshot(get_("/stream")).await.unwrap();
    tx.send(Bytes::from_static(b"one ")).await.unwrap();
    tx.send(Bytes::from_static(b"two")).await.unwrap();
    drop(tx);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"one two");
    assert_eq!(left(&quota), 9);
}

#[tokio::test]
async fn the_actual_cost_from_the_response_is_settled_even_for_an_empty_body() {
    let quota = Arc::new(LocalQuota::new(plans()));
    let app = Router::new()
        .route(
            "/tokens",
            get(|| async {
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::NO_CONTENT;
                res.extensions_mut().insert(ActualCost(4));
                res
            }),
        )
        .layer(layer(Arc::clone(&quota)));
    // The response is never polled (a 204 has no body to send): its head settles it.
    let res = app.oneshot(get_("/tokens")).await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(left(&quota), 6, "charged 1, corrected to the 4 it cost");
}

#[tokio::test]
async fn a_server_error_and_a_failing_service_are_refunded() {
    let quota = Arc::new(LocalQuota::new(plans()));
    let app = Router::new()
        .route("/fail", get(|| async { StatusCode::BAD_GATEWAY }))
        .layer(layer(Arc::clone(&quota)));
    let res = app.oneshot(get_("/fail")).await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(left(&quota), 10);

    // A service that fails (no response at all): the charge goes back too.
    let failing = tower::service_fn(|_: Request<Body>| async {
        Err::<Response<Body>, _>(std::io::Error::other("the upstream is gone"))
    });
    let svc = layer(Arc::clone(&quota)).layer(failing);
    assert!(svc.oneshot(get_("/")).await.is_err());
    assert_eq!(left(&quota), 10);
}

#[path = "../examples/tonic.rs"]
#[allow(dead_code, unreachable_pub)]
mod example;

#[tokio::test]
async fn a_grpc_call_over_its_quota_is_resource_exhausted_with_retry_info() {
    let svc = example::layer().layer(tower::service_fn(example::greeter));
    let call = || {
        let mut frame = vec![0u8, 0, 0, 0, 2];
        frame.extend_from_slice(b"hi");
        Request::builder()
            .method("POST")
            .uri("/greet.Greeter/Hello")
            .header("content-type", "application/grpc")
            .header("x-tenant-id", "acme")
            .body(Body::from(frame))
            .unwrap()
    };
    for _ in 0..10 {
        let res = svc.clone().oneshot(call()).await.unwrap();
        let trailers = res.into_body().collect().await.unwrap().trailers().cloned();
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
    }
    let res = svc.oneshot(call()).await.unwrap();
    let status = tonic::Status::from_header_map(res.headers()).expect("a gRPC status");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::ResourceExhausted, "quota_exceeded")
    );
    let retry = b"google.rpc.RetryInfo";
    assert!(status.details().windows(retry.len()).any(|w| w == retry));
}

#[tokio::test]
async fn a_cost_in_a_header_is_charged_and_a_bad_one_refused() {
    let quota = Arc::new(LocalQuota::new(plans()));
    let registry =
        InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
    let stage = TenantQuota::builder(Arc::clone(&quota))
        .cost(tenancy_core::quota::HeaderCost::new("x-token-count").unwrap())
        .build()
        .unwrap();
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        TenancyLayer::builder(registry)
            .source(Source::header())
            .quota(stage)
            .build()
            .unwrap(),
    );
    let with = |count: &str| {
        Request::builder()
            .uri("/")
            .header("x-tenant-id", "acme")
            .header("x-token-count", count)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(app.clone().oneshot(with("3")).await.unwrap().status(), 200);
    assert_eq!(left(&quota), 7, "charged the 3 the header named");
    let bad = app.clone().oneshot(with("3e2")).await.unwrap();
    assert_eq!(bad.status(), 400);
    let body = bad.into_body().collect().await.unwrap().to_bytes();
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains(r#""code":"cost_invalid""#));
    assert_eq!(
        left(&quota),
        7,
        "a bad cost is never a credit, nor a charge"
    );
}

/// Route costs by the template axum matched, with the layer inside the router; and
/// with the layer around the router, where no route is known yet, the highest cost
/// bound to the method.
#[tokio::test]
async fn route_costs_follow_the_template_axum_matched() {
    use tower_tenancy::quota::RouteCost;
    let cost = || {
        RouteCost::builder()
            .route(
                http::Method::GET,
                "/items/{id}",
                |_: &http::request::Parts| 3,
            )
            .route(
                http::Method::GET,
                "/items/export",
                |_: &http::request::Parts| 5,
            )
            .otherwise(|_: &http::request::Parts| 1)
            .build()
            .unwrap()
    };
    let stage = |quota: &Arc<LocalQuota>| {
        TenantQuota::builder(Arc::clone(quota))
            .cost(cost())
            .build()
            .unwrap()
    };
    let registry =
        || InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
    let routes = || {
        Router::new()
            .route("/items/{id}", get(|| async { "item" }))
            .route("/items/export", get(|| async { "export" }))
            .route("/", get(|| async { "home" }))
    };
    let tenancy = |quota: &Arc<LocalQuota>| {
        TenancyLayer::builder(registry())
            .source(Source::header())
            .quota(stage(quota))
            .build()
            .unwrap()
    };

    // Inside the router: each request is charged its route's cost.
    let quota = Arc::new(LocalQuota::new(plans()));
    let app = routes().layer(tenancy(&quota));
    for (uri, left_after) in [("/items/7", 7), ("/items/export", 2), ("/", 1)] {
        let res = app.clone().oneshot(get_(uri)).await.unwrap();
        assert_eq!(res.status(), 200, "{uri}");
        assert_eq!(left(&quota), left_after, "{uri}");
    }
    // axum runs the GET handler for HEAD: it costs what GET is bound to (3 > 1 left).
    let mut head = get_("/items/7");
    *head.method_mut() = http::Method::HEAD;
    assert_eq!(app.clone().oneshot(head).await.unwrap().status(), 429);
    // An encoded spelling is charged where axum routes it, `/items/{id}` (3 units,
    // more than the 1 left), not as the export it decodes to.
    let res = app.clone().oneshot(get_("/items/%65xport")).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(left(&quota), 1, "a refusal charges nothing");

    // Around the router: the route is not known yet, so a GET costs the highest bound
    // GET cost (or `otherwise`'s, when higher), 5, whatever route runs.
    let quota = Arc::new(LocalQuota::new(plans()));
    let app = tenancy(&quota).layer(routes());
    let res = app.clone().oneshot(get_("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(left(&quota), 5, "charged the highest bound cost");

    // A template bound twice is refused.
    let twice = RouteCost::builder()
        .route(http::Method::GET, "/x", |_: &http::request::Parts| 1)
        .route(http::Method::GET, "/x", |_: &http::request::Parts| 2)
        .build();
    assert!(twice.is_err());
    assert!(RouteCost::builder()
        .route(http::Method::GET, "x", |_: &http::request::Parts| 1)
        .build()
        .is_err());
}

/// A `HEAD` bound itself costs its own; around the router, `otherwise` counts in the
/// highest cost when it is the highest.
#[tokio::test]
async fn a_bound_head_costs_its_own_and_otherwise_counts_around_the_router() {
    use tower_tenancy::quota::RouteCost;
    let cost = |otherwise: u32| {
        RouteCost::builder()
            .route(
                http::Method::GET,
                "/items/{id}",
                |_: &http::request::Parts| 3,
            )
            .route(
                http::Method::HEAD,
                "/items/{id}",
                |_: &http::request::Parts| 1,
            )
            .otherwise(move |_: &http::request::Parts| otherwise)
            .build()
            .unwrap()
    };
    let tenancy = |quota: &Arc<LocalQuota>, otherwise: u32| {
        let registry = InMemoryRegistry::new()
            .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
        TenancyLayer::builder(registry)
            .source(Source::header())
            .quota(
                TenantQuota::builder(Arc::clone(quota))
                    .cost(cost(otherwise))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let routes = || Router::new().route("/items/{id}", get(|| async { "item" }));
    let head = || {
        let mut req = get_("/items/7");
        *req.method_mut() = http::Method::HEAD;
        req
    };

    let quota = Arc::new(LocalQuota::new(plans()));
    let app = routes().layer(tenancy(&quota, 1));
    assert_eq!(app.clone().oneshot(head()).await.unwrap().status(), 200);
    assert_eq!(left(&quota), 9, "HEAD is bound: 1, not GET's 3");

    let quota = Arc::new(LocalQuota::new(plans()));
    let app = tenancy(&quota, 4).layer(routes());
    assert_eq!(
        app.clone()
            .oneshot(get_("/items/7"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        left(&quota),
        6,
        "no route known: otherwise's 4 is the highest"
    );
}
