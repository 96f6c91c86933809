//! The tonic example over a real HTTP/2 connection: a gRPC call with the tenant in its
//! metadata is answered by the tonic handler; calls the layer refuses get gRPC statuses
//! in a trailers-only answer, which tonic reads.

#![cfg(feature = "axum")]

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::{Code, Status};

#[allow(dead_code, unreachable_pub)]
mod example {
    include!("../examples/tonic.rs");
}

/// A gRPC call over a fresh HTTP/2 connection (h2c): the response's head, its data
/// and its trailers.
async fn call(
    addr: std::net::SocketAddr,
    tenant: Option<&str>,
    message: &[u8],
) -> (http::response::Parts, Bytes, Option<http::HeaderMap>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/greet.Greeter/Hello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = tenant {
        req = req.header("x-tenant-id", t);
    }
    let res = send
        .send_request(req.body(Full::new(Bytes::from(frame))).unwrap())
        .await
        .unwrap();
    let (head, body) = res.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (head, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn the_tonic_example_answers_and_refuses_over_http2() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(example::serve(listener));

    let (head, data, trailers) = call(addr, Some("acme"), b"hi").await;
    assert_eq!(head.version, http::Version::HTTP_2);
    assert_eq!(head.status, 200);
    assert_eq!(&data[5..], b"hello acme: hi");
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");

    let refused = [
        (None, Code::Unauthenticated),
        (Some("nobody"), Code::PermissionDenied),
        (Some("globex"), Code::PermissionDenied),
        (Some("ACME"), Code::InvalidArgument),
        (Some("hooli"), Code::Unavailable),
    ];
    for (tenant, code) in refused {
        let (head, data, trailers) = call(addr, tenant, b"hi").await;
        // Trailers-only: the status is in the head, and there is nothing after it.
        let status = Status::from_header_map(&head.headers).expect("a gRPC status");
        assert_eq!(status.code(), code, "{tenant:?}");
        assert!(data.is_empty() && trailers.is_none(), "{tenant:?}");
    }
    server.abort();
}
