//! Every source's parser, through a real resolver: the header, the subdomain and the
//! path prefix, on arbitrary bytes. Never a panic; a tenant served is one the rule
//! accepts and the registry knows; any other answer is a rejection.
#![no_main]

use actix_tenancy::prelude::*;
use actix_web::{http::header::HeaderValue, test, web, App, HttpResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Three fields: the header value, the host, the path, split at 0xff bytes.
    let mut parts = data.splitn(3, |b| *b == 0xff);
    let (header, host, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    actix_web::rt::System::new().block_on(async {
        let registry = InMemoryRegistry::new()
            .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
        let resolver = TenantResolver::builder(registry)
            .source(Source::header())
            .source(Source::subdomain(["example.com"]))
            .source(Source::path_prefix("/t/"))
            .build()
            .unwrap();
        let app = test::init_service(App::new().wrap(resolver).default_service(web::to(
            |t: Tenant| async move { HttpResponse::Ok().body(t.id().as_str().to_owned()) },
        )))
        .await;
        let encoded: String = path.iter().map(|b| format!("%{b:02X}")).collect();
        let mut req = test::TestRequest::get().uri(&format!("/t/{encoded}"));
        if let Ok(v) = HeaderValue::from_bytes(header) {
            req = req.insert_header(("x-tenant-id", v));
        }
        if let Ok(v) = HeaderValue::from_bytes(host) {
            req = req.insert_header(("host", v));
        }
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status().as_u16();
        assert!(matches!(status, 200 | 400 | 401 | 403), "{status}");
        if status == 200 {
            let body = test::read_body(res).await;
            assert_eq!(&body[..], b"acme");
        }
    });
});
