//! The handler runs inside a span that carries the tenant.
//!
//! Alone in its own test binary: tracing caches callsite interest process-wide, so a
//! concurrent test without a subscriber could make the span invisible here.

use actix_tenancy::prelude::*;
use actix_web::{test, web, App};

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::new().with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
}

/// A minimal subscriber that remembers the fields of every span created.
mod capture {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    };

    use tracing::{
        field::{Field, Visit},
        span, Event, Metadata, Subscriber,
    };

    #[derive(Default, Clone)]
    pub(super) struct Spans {
        pub(super) fields: Arc<Mutex<Vec<(String, String, String)>>>,
        next: Arc<AtomicU64>,
    }

    struct Recorder<'a>(&'a str, &'a Mutex<Vec<(String, String, String)>>);

    impl Visit for Recorder<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.1.lock().unwrap().push((
                self.0.to_owned(),
                field.name().to_owned(),
                format!("{value:?}"),
            ));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.1.lock().unwrap().push((
                self.0.to_owned(),
                field.name().to_owned(),
                value.to_owned(),
            ));
        }
    }

    impl Subscriber for Spans {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &span::Attributes<'_>) -> span::Id {
            attrs.record(&mut Recorder(attrs.metadata().name(), &self.fields));
            span::Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }
}

#[actix_web::test]
async fn handler_runs_in_a_span_with_the_tenant() {
    let spans = capture::Spans::default();
    let _guard = tracing::subscriber::set_default(spans.clone());

    let resolver = TenantResolver::builder(registry())
        .source(Source::header())
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(resolver)
            .route("/x", web::get().to(|_: Tenant| async { "ok" })),
    )
    .await;
    let req = test::TestRequest::get()
        .uri("/x")
        .insert_header(("x-tenant-id", "acme"))
        .to_request();
    assert_eq!(test::call_service(&app, req).await.status(), 200);

    let fields = spans.fields.lock().unwrap().clone();
    let of = |name: &str| {
        fields
            .iter()
            .find(|(span, field, _)| span == "tenant" && field == name)
            .map(|(_, _, v)| v.clone())
    };
    assert_eq!(of("tenant.id").as_deref(), Some("acme"), "{fields:?}");
    assert_eq!(of("tenant.tier").as_deref(), Some("pro"), "{fields:?}");
}
