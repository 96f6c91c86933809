//! The resolver's per-worker record under a `CachedRegistry` lease: it must never
//! outlive an invalidation, a TTL, or a record replaced in the cache.

use std::{sync::Arc, time::Duration};

use actix_tenancy::Moment;
use actix_tenancy::{prelude::*, registry::TenantRegistry};
use actix_web::{http::StatusCode, test, web, App};

fn rec(id: &str, tier: &str) -> TenantRecord {
    TenantRecord::new(TenantId::parse(id).unwrap(), tier)
}

type Cache = CachedRegistry<Arc<InMemoryRegistry>>;

fn setup(ttl: Duration) -> (Arc<InMemoryRegistry>, Arc<Cache>, TenantResolver) {
    let backend = Arc::new(InMemoryRegistry::new().with(rec("acme", "pro")));
    let cache = Arc::new(CachedRegistry::new(
        Arc::clone(&backend),
        CacheConfig::default().ttl(ttl),
    ));
    let resolver = TenantResolver::builder(Arc::clone(&cache))
        .source(Source::header())
        .build()
        .unwrap();
    (backend, cache, resolver)
}

macro_rules! app {
    ($resolver:expr) => {
        test::init_service(App::new().wrap($resolver).route(
            "/tier",
            web::get().to(|t: Tenant| async move { t.tier().to_owned() }),
        ))
        .await
    };
}

macro_rules! tier {
    ($app:expr) => {{
        let req = test::TestRequest::get()
            .uri("/tier")
            .insert_header(("x-tenant-id", "acme"))
            .to_request();
        let res = test::call_service(&$app, req).await;
        let status = res.status();
        let body = test::read_body(res).await;
        (status, String::from_utf8(body.to_vec()).unwrap())
    }};
}

#[actix_web::test]
async fn invalidation_ends_the_lease_at_once() {
    let (backend, cache, resolver) = setup(Duration::from_secs(60));
    let app = app!(resolver);
    for _ in 0..3 {
        assert_eq!(tier!(app), (StatusCode::OK, "pro".to_owned()));
    }
    backend.insert(rec("acme", "free"));
    assert_eq!(tier!(app).1, "pro", "cached until invalidated");
    cache.invalidate("acme");
    assert_eq!(tier!(app), (StatusCode::OK, "free".to_owned()));

    backend.insert(rec("acme", "pro").with_status(TenantStatus::Suspended));
    cache.invalidate_all();
    assert_eq!(tier!(app).0, StatusCode::FORBIDDEN);

    backend.insert(rec("acme", "enterprise"));
    cache.invalidate("acme");
    assert_eq!(tier!(app), (StatusCode::OK, "enterprise".to_owned()));
    backend.remove("acme");
    cache.invalidate("acme");
    assert_eq!(tier!(app).0, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn the_lease_ends_with_the_ttl() {
    let (backend, _cache, resolver) = setup(Duration::from_millis(100));
    let app = app!(resolver);
    assert_eq!(tier!(app).1, "pro");
    backend.insert(rec("acme", "free"));
    assert_eq!(tier!(app).1, "pro");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(tier!(app).1, "free");
}

#[actix_web::test]
async fn a_record_replaced_in_the_cache_ends_the_lease() {
    // Another caller refreshes the cache directly (a lookup racing an expiry); the
    // replaced record must not be served from the resolver's lease afterwards.
    let (backend, cache, resolver) = setup(Duration::from_millis(100));
    let app = app!(resolver);
    assert_eq!(tier!(app).1, "pro");
    tokio::time::sleep(Duration::from_millis(150)).await;
    backend.insert(rec("acme", "free"));
    let id = TenantId::parse("acme").unwrap();
    let fresh = cache
        .lookup(&id, &mut Moment::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.tier(), "free");
    assert_eq!(tier!(app).1, "free");
}
