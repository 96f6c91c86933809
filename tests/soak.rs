//! A concurrency soak: a real server (two workers) and many client connections at once,
//! for many tenants, bounded in count and time. Every tenant's admitted count must be
//! exactly its allowance: a burst of 20 and a daily budget of 15 units, so 15, however
//! the requests interleave across workers and connections; and every answer names the
//! tenant that asked.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use actix_tenancy::{
    prelude::*,
    quota::{LocalQuota, Period, QuotaPlan, QuotaPlans, TenantQuota},
};
use actix_web::{web, App, HttpResponse, HttpServer};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod stack;
}

const TENANTS: usize = 40;
const CONNECTIONS: usize = 16;
const PER_TENANT: usize = 30;
const ALLOWANCE: usize = 15;

/// Starts the server on a free loopback port in its own thread; returns the port and
/// a handle to stop it.
fn serve() -> (u16, actix_web::dev::ServerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let registry = (0..TENANTS).fold(InMemoryRegistry::new(), |r, i| {
        r.with(TenantRecord::new(
            TenantId::parse(&format!("t{i}")).unwrap(),
            "pro",
        ))
    });
    // One unit a minute with a burst of 20 and 15 a day: the budget binds, and no
    // refill can happen within the test's bound.
    let plans = QuotaPlans::builder()
        .tier(
            "pro",
            QuotaPlan::per_minute(1)
                .burst(20)
                .budget(ALLOWANCE as u64, Period::Day),
        )
        .build()
        .unwrap();
    let tenancy = common::stack::on_header(registry)
        .quota(TenantQuota::new(LocalQuota::new(plans)))
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .wrap(tenancy.clone())
                    .default_service(web::to(|t: Tenant| async move {
                        HttpResponse::Ok().body(t.id().as_str().to_owned())
                    }))
            })
            .workers(2)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
            tx.send(server.handle()).unwrap();
            server.await.unwrap();
        });
    });
    (port, rx.recv().unwrap())
}

/// Sends `GET /x` for each tenant in `tenants` over one keep-alive connection; returns
/// (tenant, status, body) for each.
fn client(port: u16, tenants: Vec<usize>) -> Vec<(usize, u16, String)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut out = Vec::with_capacity(tenants.len());
    for t in tenants {
        write!(
            writer,
            "GET /x HTTP/1.1\r\nHost: localhost\r\nX-Tenant-ID: t{t}\r\n\r\n"
        )
        .unwrap();
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        out.push((t, status, String::from_utf8(body).unwrap()));
    }
    out
}

#[test]
fn every_tenant_gets_exactly_its_allowance_under_concurrency() {
    let (port, server) = serve();
    let start = Instant::now();
    // Each connection asks for every tenant in its own order, so that requests for one
    // tenant race on both workers.
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let order: Vec<usize> = (0..TENANTS * PER_TENANT / CONNECTIONS)
                .map(|i| (i * 7 + c * 13) % TENANTS)
                .collect();
            thread::spawn(move || client(port, order))
        })
        .collect();
    let mut admitted = vec![0usize; TENANTS];
    let mut answers = 0;
    for c in clients {
        for (tenant, status, body) in c.join().unwrap() {
            answers += 1;
            match status {
                200 => {
                    assert_eq!(body, format!("t{tenant}"), "served as another tenant");
                    admitted[tenant] += 1;
                }
                429 => {}
                other => panic!("t{tenant}: {other} {body}"),
            }
        }
    }
    let took = start.elapsed();
    actix_web::rt::System::new().block_on(server.stop(true));
    assert_eq!(answers, TENANTS * PER_TENANT, "every request answered");
    assert!(took < Duration::from_secs(50), "bounded in time: {took:?}");
    for (t, n) in admitted.iter().enumerate() {
        assert_eq!(
            *n, ALLOWANCE,
            "t{t} admitted {n}, allowed exactly {ALLOWANCE}"
        );
    }
    eprintln!(
        "{answers} requests over {CONNECTIONS} connections and 2 workers in {took:?}: \
         each of {TENANTS} tenants admitted exactly {ALLOWANCE}"
    );
}
