//! The quota is settled when the response's body ends, not when its head is ready: a
//! streamed body (model output as server-sent events, say) records its `ActualCost` at
//! its end and is charged that; a body that fails mid-way counts as a failure, and one
//! the client drops mid-way as abandoned; an error from a middleware inside the
//! `Tenancy` is settled as the status it becomes, not as abandoned.

use std::pin::Pin;

use actix_tenancy::{
    prelude::*,
    quota::{ActualCost, LocalQuota, Period, QuotaPlan, QuotaPlans, TenantQuota},
};
use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::{from_fn, Next},
    test, web,
    web::Bytes,
    App, HttpMessage as _, HttpRequest, HttpResponse,
};

fn tenancy(refunds: bool) -> Tenancy {
    let registry =
        InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
    let plans = QuotaPlans::builder()
        .tier(
            "pro",
            QuotaPlan::per_second(1_000)
                .budget(100, Period::Day)
                .rate_counts_requests(true),
        )
        .build()
        .unwrap();
    Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .quota(
            TenantQuota::builder(LocalQuota::new(plans))
                .refund_server_errors(refunds)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// Three chunks; then, at its end, the stream records that it used 50 units, or fails
/// instead of ending when `fail` is set.
async fn stream(req: HttpRequest, fail: web::Query<Fail>) -> HttpResponse {
    let fail = fail.fail.unwrap_or(false);
    let chunks = futures_util::stream::unfold(0u8, move |i| {
        let req = req.clone();
        async move {
            match i {
                0..=2 => Some((
                    Ok::<_, actix_web::Error>(Bytes::from("data: token\n\n")),
                    i + 1,
                )),
                3 if fail => Some((Err(actix_web::error::ErrorInternalServerError("cut")), 4)),
                3 => {
                    req.extensions_mut().insert(ActualCost(50));
                    None
                }
                _ => None,
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(chunks)
}

#[derive(serde::Deserialize)]
struct Fail {
    fail: Option<bool>,
}

fn acme(uri: &str) -> test::TestRequest {
    test::TestRequest::get()
        .uri(uri)
        .insert_header(("x-tenant-id", "acme"))
}

/// What the day budget has left, as the next request's `RateLimit` says (after its own
/// unit).
async fn day_left<S, B>(app: &S) -> String
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: MessageBody,
{
    let res = test::call_service(app, acme("/plain").to_request()).await;
    let field = res.headers().get("ratelimit").unwrap().to_str().unwrap();
    let day = field
        .split(", ")
        .find(|f| f.starts_with("\"day\""))
        .unwrap()
        .to_owned();
    test::read_body(res).await;
    day.split(';').nth(1).unwrap().to_owned()
}

/// An error from a middleware inside the Tenancy, for `/refused`.
async fn refuse_some(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.path() == "/refused" {
        return Err(actix_web::error::ErrorBadRequest("no"));
    }
    next.call(req).await
}

macro_rules! app {
    ($refunds:expr) => {
        test::init_service(
            App::new()
                .wrap(from_fn(refuse_some))
                .wrap(tenancy($refunds))
                .route("/stream", web::get().to(stream))
                .route("/plain", web::get().to(|| async { "ok" }))
                .route("/refused", web::get().to(|| async { "never" })),
        )
        .await
    };
}

#[actix_web::test]
async fn a_streamed_body_is_charged_the_cost_it_records_at_its_end() {
    let app = app!(false);
    let res = test::call_service(&app, acme("/stream").to_request()).await;
    assert_eq!(res.status(), 200);
    let body = test::read_body(res).await;
    assert_eq!(body.len(), 3 * "data: token\n\n".len());
    // 50 for the stream, 1 for the request that asks.
    assert_eq!(day_left(&app).await, "r=49");
}

#[actix_web::test]
async fn a_body_that_fails_mid_way_is_a_failure_and_refunded_when_asked() {
    for (refunds, left) in [(true, "r=99"), (false, "r=98")] {
        let app = app!(refunds);
        let res = test::call_service(&app, acme("/stream?fail=true").to_request()).await;
        assert_eq!(res.status(), 200, "the head was sent before the failure");
        let read = actix_web::body::to_bytes(res.into_body()).await;
        assert!(read.is_err(), "the body fails");
        assert_eq!(day_left(&app).await, left, "refunds: {refunds}");
    }
}

#[actix_web::test]
async fn a_body_dropped_mid_way_is_abandoned() {
    for (refunds, left) in [(true, "r=99"), (false, "r=98")] {
        let app = app!(refunds);
        let res = test::call_service(&app, acme("/stream").to_request()).await;
        // The client reads one chunk, then goes away.
        let mut body = Box::pin(res.into_body());
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).as_mut().poll_next(cx)).await;
        assert!(matches!(first, Some(Ok(_))));
        drop(body);
        assert_eq!(day_left(&app).await, left, "refunds: {refunds}");
    }
}

#[actix_web::test]
async fn an_error_from_an_inner_middleware_is_settled_as_its_status() {
    let app = app!(true);
    let err = test::try_call_service(&app, acme("/refused").to_request())
        .await
        .expect_err("the inner middleware's error passes through");
    assert_eq!(err.as_response_error().status_code(), 400);
    // A 4xx is no server error: charged, even with refunds on (was refunded as
    // abandoned).
    assert_eq!(day_left(&app).await, "r=98");
}

#[actix_web::test]
async fn a_head_request_is_charged_though_its_body_is_never_sent() {
    let app = test::init_service(
        App::new()
            .wrap(tenancy(true))
            .route("/plain", web::get().to(|| async { "ok" }))
            .route("/any", web::to(|| async { "a body actix will not send" })),
    )
    .await;
    let head = test::TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri("/any")
        .insert_header(("x-tenant-id", "acme"));
    let res = test::call_service(&app, head.to_request()).await;
    assert_eq!(res.status(), 200);
    // Dropped unread, as actix drops a HEAD response's body: charged all the same.
    drop(res);
    assert_eq!(day_left(&app).await, "r=98");
}

/// One HTTP/1.1 request on a connection of its own; the whole answer, as text.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Tenant-ID: acme\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

#[actix_web::test]
async fn a_real_server_settles_a_streamed_body_at_its_end() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tenancy = tenancy(false);
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .wrap(tenancy.clone())
            .route("/stream", web::get().to(stream))
            .route("/plain", web::get().to(|| async { "ok" }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let (streamed, after) = actix_web::rt::task::spawn_blocking(move || {
        (http_get(addr, "/stream"), http_get(addr, "/plain"))
    })
    .await
    .unwrap();
    handle.stop(true).await;
    assert!(streamed.starts_with("HTTP/1.1 200"), "{streamed}");
    assert_eq!(streamed.matches("data: token").count(), 3, "{streamed}");
    // The stream's 50 units, then this request's 1.
    let field = after
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("ratelimit:"))
        .unwrap_or_default();
    assert!(field.contains("\"day\";r=49"), "{after}");
}
