// A gRPC service (tonic's server machinery, no protoc: messages as raw bytes) behind
// tower-tenancy's layer, served over HTTP/2 without TLS (h2c).
//
//     cargo run -p tower-tenancy --example tonic --features axum
//
// Listens on 127.0.0.1:50051 unless `BIND_ADDR` says otherwise. `/greet.Greeter/Hello`
// answers "hello TENANT: MESSAGE" for the tenant in the `x-tenant-id` metadata; a
// call the layer refuses gets a gRPC status (`UNAUTHENTICATED` without a tenant,
// `PERMISSION_DENIED` for an unknown or suspended one, `UNAVAILABLE` with a
// `RetryInfo` for one in maintenance, `RESOURCE_EXHAUSTED` with a `RetryInfo` past a
// tenant's ten calls a second). `tests/tonic_example.rs` calls it over a real
// HTTP/2 connection (it includes this file, so these comments are not `//!` docs).

use std::convert::Infallible;

use axum::body::Body;
use bytes::{Buf as _, BufMut as _, Bytes};
use tenancy_core::{
    quota::{LocalQuota, QuotaPlan, QuotaPlans},
    registry::InMemoryRegistry,
    TenantId, TenantRecord, TenantStatus,
};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    Status,
};
use tower::Layer as _;
use tower_tenancy::{Source, TenancyLayer, Tenant, TenantQuota};

/// Messages as raw bytes: a gRPC service without generated code.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// The one method: "hello {tenant}: {message}", the tenant read from the extensions
/// the layer filled. Any other path is `UNIMPLEMENTED`.
pub async fn greeter(
    req: http::Request<Body>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    if req.uri().path() != "/greet.Greeter/Hello" {
        return Ok(Status::unimplemented("no such method").into_http());
    }
    let hello = tower::service_fn(|r: tonic::Request<Bytes>| async move {
        let tenant = Tenant::of(r.extensions()).ok_or_else(|| Status::internal("no tenant"))?;
        let text = format!(
            "hello {}: {}",
            tenant.id(),
            String::from_utf8_lossy(r.get_ref())
        );
        Ok::<_, Status>(tonic::Response::new(Bytes::from(text)))
    });
    Ok(tonic::server::Grpc::new(Raw).unary(hello, req).await)
}

/// The layer: the tenant from `x-tenant-id` metadata; `acme` active, `globex`
/// suspended, `hooli` in maintenance; ten calls a second for each tenant.
pub fn layer() -> TenancyLayer {
    let registry = InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
        .with(
            TenantRecord::new(TenantId::parse("globex").unwrap(), "free")
                .with_status(TenantStatus::Suspended),
        )
        .with(
            TenantRecord::new(TenantId::parse("hooli").unwrap(), "free")
                .with_status(TenantStatus::Maintenance),
        );
    let plans = QuotaPlans::builder()
        .tier("pro", QuotaPlan::per_second(10))
        .build()
        .expect("valid plans");
    TenancyLayer::builder(registry)
        .source(Source::header())
        .quota(TenantQuota::new(LocalQuota::new(plans)))
        .build()
        .expect("a valid layer")
}

/// The app: the layer around the gRPC method.
pub fn app() -> axum::Router {
    axum::Router::new().fallback_service(layer().layer(tower::service_fn(greeter)))
}

/// Serves the app on `listener`: HTTP/2 without TLS for gRPC clients (and HTTP/1.1).
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, app()).await
}

#[tokio::main(flavor = "current_thread")]
pub async fn main() -> std::io::Result<()> {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "greeter (gRPC, h2c) listening on {}",
        listener.local_addr()?
    );
    serve(listener).await
}
