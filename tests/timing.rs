//! Unknown and suspended tenants look the same from outside: the same bytes (tested in
//! `tests/resolution.rs`), and statistically the same time. Method: 4,000 requests of
//! each, interleaved (so drift and noise hit both alike) through a real `App`, each
//! timed on its own; the medians and the 90th percentiles are compared. The bound is
//! loose on purpose (a shared 2-core machine), and the figures are printed.

use std::time::{Duration, Instant};

use actix_web::{test as actix_test, web, App, HttpResponse};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod stack;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[actix_web::test]
async fn unknown_and_suspended_tenants_take_the_same_time() {
    let tenancy = common::stack::on_header(common::stack::acme_and_initech())
        .build()
        .unwrap();
    let app = actix_test::init_service(
        App::new()
            .wrap(tenancy)
            .default_service(web::to(HttpResponse::Ok)),
    )
    .await;
    let time = |tenant: &'static str| {
        let app = &app;
        async move {
            let req = actix_test::TestRequest::get()
                .uri("/x")
                .insert_header(("x-tenant-id", tenant))
                .to_request();
            let start = Instant::now();
            let res = actix_test::call_service(app, req).await;
            let took = start.elapsed();
            assert_eq!(res.status(), 403);
            took
        }
    };
    // Warm up both paths.
    for _ in 0..200 {
        time("nobody").await;
        time("initech").await;
    }
    let (mut unknown, mut suspended) = (Vec::new(), Vec::new());
    for i in 0..4_000 {
        // Alternate which goes first, so neither always follows the other.
        if i % 2 == 0 {
            unknown.push(time("nobody").await);
            suspended.push(time("initech").await);
        } else {
            suspended.push(time("initech").await);
            unknown.push(time("nobody").await);
        }
    }
    unknown.sort();
    suspended.sort();
    let (u50, s50) = (percentile(&unknown, 0.5), percentile(&suspended, 0.5));
    let (u90, s90) = (percentile(&unknown, 0.9), percentile(&suspended, 0.9));
    let ratio = s50.as_secs_f64() / u50.as_secs_f64();
    eprintln!(
        "unknown: median {u50:?}, p90 {u90:?}; suspended: median {s50:?}, p90 {s90:?}; \
         median ratio {ratio:.3}"
    );
    assert!(
        (0.75..=1.33).contains(&ratio),
        "suspended/unknown median ratio {ratio:.3}: the two can be told apart by time"
    );
}
