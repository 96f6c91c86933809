//! Tenant resolution: the [`TenantResolver`] middleware and its [`Source`]s.
//!
//! The resolver settles the tenant of a request at the boundary, before routing,
//! exactly once:
//!
//! 1. Exempt paths (e.g. `/health`) skip resolution; handlers there see no tenant.
//! 2. Every configured source is consulted, in the order given. A source whose input is
//!    present but malformed rejects the request: `400 tenant_invalid`.
//! 3. All sources that named a tenant must name the same one; otherwise `403
//!    tenant_conflict`. A verified source (a token claim, a client certificate) ranks
//!    first: it wins, and it must be agreed with, never overridden.
//! 4. No source named one: `401 tenant_missing`, unless `allow_missing` is set.
//! 5. The registry is asked (the warm path does not wait), and the record's status
//!    decides (see [`StatusRules`]); a record for another region is `421`.
//! 6. The outcome, one `Arc<TenantContext>`, goes into the request extensions, where the
//!    [`Tenant`](crate::Tenant) extractor reads it.
//!
//! Rejections are responses, not errors, so outer middleware (Logger, CORS) still sees
//! and decorates them.
//!
//! ```
//! use std::sync::Arc;
//! use actix_tenancy::{registry::{InMemoryRegistry, TenantRecord}, resolve::{Source, TenantResolver}, Tenant, TenantId};
//! use actix_web::{test, web, App, HttpResponse};
//!
//! # actix_web::rt::System::new().block_on(async {
//! let registry = InMemoryRegistry::new()
//!     .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"));
//! // Build once, outside `HttpServer::new`'s closure; clone it into each worker.
//! let resolver = TenantResolver::builder(registry)
//!     .source(Source::header())
//!     .source(Source::subdomain(["example.com"]))
//!     .exempt("/health")
//!     .build()
//!     .unwrap();
//!
//! let app = test::init_service(
//!     App::new()
//!         .wrap(resolver.clone())
//!         .route("/whoami", web::get().to(|t: Tenant| async move { t.id().to_string() }))
//!         .route("/health", web::get().to(HttpResponse::Ok)),
//! )
//! .await;
//!
//! let req = test::TestRequest::get().uri("/whoami").insert_header(("host", "acme.example.com")).to_request();
//! assert_eq!(test::call_and_read_body(&app, req).await, "acme");
//!
//! let req = test::TestRequest::get().uri("/whoami").insert_header(("x-tenant-id", "nobody")).to_request();
//! assert_eq!(test::call_service(&app, req).await.status(), 403);
//!
//! let req = test::TestRequest::get().uri("/health").to_request();
//! assert_eq!(test::call_service(&app, req).await.status(), 200);
//! # });
//! ```
//!
//! [`StatusRules`]: crate::registry::StatusRules

mod source;
mod stage;
#[cfg(feature = "tls")]
pub mod tls;

pub use crate::core::SourceKind;
pub use source::{Source, SourceError, SourceResult, TENANT_HEADER};
pub use stage::{TenantResolver, TenantResolverBuilder};
