//! The server (and a keep-alive client) that `bench/load.sh` measures.
//!
//! ```sh
//! cargo run --release --example bench_server -- serve MODE [ADDR]    # one worker
//! cargo run --release --example bench_server -- client ADDR N TENANT # N requests, one connection
//! ```
//!
//! Modes, each serving `GET /hello` → `ok`:
//! - `bare`: actix-web with no middleware;
//! - `resolve`: the resolver on `X-Tenant-ID`, an in-memory registry of 10,000 tenants;
//! - `cached`: the same registry behind `CachedRegistry`, as a remote store would be
//!   (warm: every request is a cache hit);
//! - `quota`: `cached` plus the local quota stage (a rate far above the load, and a
//!   daily budget), with its response headers;
//! - `quota-quiet`: the same without quota headers on allowed responses.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
};

use actix_tenancy::{
    prelude::*,
    quota::{LocalQuota, Period, QuotaPlan, QuotaPlans, TenantQuota},
    registry::{Lookup, RegistryError, TenantRegistry},
};
use actix_web::{web, App, HttpResponse, HttpServer};

const TENANTS: usize = 10_000;

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::from_records((0..TENANTS).map(|i| {
        TenantRecord::new(
            TenantId::parse(&format!("t{i}")).expect("valid id"),
            if i % 2 == 0 { "pro" } else { "free" },
        )
    }))
}

/// A registry that can only answer asynchronously, like a database: the cache in
/// front of it is what keeps the hot path synchronous.
struct Remote(InMemoryRegistry);

#[async_trait::async_trait]
impl TenantRegistry for Remote {
    async fn lookup(&self, id: &TenantId) -> Result<Lookup, RegistryError> {
        Ok(self.0.get(id))
    }
}

async fn hello() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

fn tenancy(mode: &str) -> Option<Tenancy> {
    let builder = match mode {
        "bare" => return None,
        "resolve" => TenantResolver::builder(registry()),
        "cached" | "quota" | "quota-quiet" => TenantResolver::builder(CachedRegistry::new(
            Remote(registry()),
            CacheConfig::default(),
        )),
        other => panic!("unknown mode {other:?}; modes: bare resolve cached quota quota-quiet"),
    };
    let resolver = builder
        .source(Source::header())
        .build()
        .expect("valid configuration");
    let mut tenancy = Tenancy::builder().resolver(resolver);
    if mode.starts_with("quota") {
        let plan = || QuotaPlan::per_second(1_000_000).budget(1_000_000_000, Period::Day);
        let plans = QuotaPlans::builder()
            .tier("pro", plan())
            .tier("free", plan())
            .build()
            .expect("valid plans");
        let quota = TenantQuota::new(LocalQuota::new(plans)).headers_on_success(mode == "quota");
        tenancy = tenancy.quota(quota);
    }
    Some(tenancy.build().expect("valid configuration"))
}

fn serve(mode: &str, addr: &str) -> std::io::Result<()> {
    eprintln!("bench_server: {mode} on {addr}");
    let addr = addr.to_owned();
    let tenancy = tenancy(mode);
    actix_web::rt::System::new().block_on(async move {
        match tenancy {
            None => {
                HttpServer::new(|| App::new().route("/hello", web::get().to(hello)))
                    .workers(1)
                    .bind(addr)?
                    .run()
                    .await
            }
            Some(tenancy) => {
                HttpServer::new(move || {
                    App::new()
                        .wrap(tenancy.clone())
                        .route("/hello", web::get().to(hello))
                })
                .workers(1)
                .bind(addr)?
                .run()
                .await
            }
        }
    })
}

/// Sends `n` requests over one keep-alive connection and checks every answer.
fn client(addr: &str, n: usize, tenant: &str) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let request = format!("GET /hello HTTP/1.1\r\nHost: {addr}\r\nX-Tenant-ID: {tenant}\r\n\r\n");
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
        ),
        other => Err(std::io::Error::other(format!("unknown command {other:?}"))),
    }
}
