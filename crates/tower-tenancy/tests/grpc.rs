//! The layer in front of a tonic service (the example's method, through the layer
//! alone, without a server): the tenant from gRPC metadata, read in the
//! handler; and every rejection a gRPC status that tonic reads, never a problem body a
//! gRPC client cannot.

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt as _;
use tonic::{Code, Status};
use tower::{Layer as _, ServiceExt as _};

/// The tonic example's codec and method (`examples/tonic.rs`).
#[allow(dead_code, unreachable_pub)]
mod example {
    include!("../examples/tonic.rs");
}

use example::{greeter, layer};

/// A gRPC call as a client sends it: one length-prefixed message.
fn call(tenant: Option<&str>, message: &[u8]) -> Request<Body> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let mut b = Request::builder()
        .method("POST")
        .uri("/greet.Greeter/Hello")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = tenant {
        b = b.header("x-tenant-id", t);
    }
    b.body(Body::from(frame)).unwrap()
}

#[tokio::test]
async fn the_tenant_comes_from_metadata_and_reaches_the_tonic_handler() {
    let svc = layer().layer(tower::service_fn(greeter));
    let res = svc.oneshot(call(Some("acme"), b"hi")).await.unwrap();
    assert_eq!(res.status(), 200);
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    let body = collected.to_bytes();
    assert_eq!(&body[5..], b"hello acme: hi");
    assert_eq!(
        u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize,
        body.len() - 5
    );
}

#[tokio::test]
async fn every_rejection_is_a_grpc_status_tonic_reads() {
    let cases = [
        (None, Code::Unauthenticated, "tenant_missing"),
        (Some("ACME"), Code::InvalidArgument, "tenant_invalid"),
        (Some("globex"), Code::PermissionDenied, "tenant_forbidden"),
        (Some("nobody"), Code::PermissionDenied, "tenant_forbidden"),
        (Some("hooli"), Code::Unavailable, "tenant_unavailable"),
    ];
    for (tenant, code, message) in cases {
        let svc = layer().layer(tower::service_fn(greeter));
        let res = svc.oneshot(call(tenant, b"hi")).await.unwrap();
        assert_eq!(
            res.status(),
            200,
            "{tenant:?}: gRPC answers 200 and a status"
        );
        assert_eq!(res.headers()["content-type"], "application/grpc");
        let status = Status::from_header_map(res.headers()).expect("a gRPC status");
        assert_eq!(
            (status.code(), status.message()),
            (code, message),
            "{tenant:?}"
        );
        // The stable code again, in a google.rpc.ErrorInfo.
        let details = status.details();
        assert!(details
            .windows(message.len())
            .any(|w| w == message.as_bytes()));
        let retry = b"google.rpc.RetryInfo";
        let has_retry = details.windows(retry.len()).any(|w| w == retry);
        assert_eq!(
            has_retry,
            code == Code::Unavailable,
            "{tenant:?}: retry info when known"
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "a trailers-only answer has no body");
    }
}

#[tokio::test]
async fn a_plain_http_request_still_gets_the_problem_body() {
    let svc = layer().layer(tower::service_fn(greeter));
    let req = Request::builder()
        .uri("/greet.Greeter/Hello")
        .body(Body::empty())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}
