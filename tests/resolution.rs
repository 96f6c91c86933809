//! Tenant resolution through a real actix `App`: every source alone, their ranking and
//! conflicts, the fail-closed defaults, hostile input, the registry's answers, and the
//! shape of every rejection.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix_tenancy::{
    error::{ConfigError, DEFAULT_TYPE_BASE},
    prelude::*,
    registry::{Access, Lookup, RegistryError, StatusRules, TenantRegistry},
    resolve::{SourceError, TenantResolverBuilder},
};
use actix_tenancy::{Answer, Moment};
use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderMap, HeaderValue},
        Method, StatusCode,
    },
    middleware::{from_fn, DefaultHeaders, Next},
    test, web,
    web::Bytes,
    App, HttpRequest, HttpResponse,
};
use serde_json::Value;

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

/// A header the test-only authentication middleware turns into a verified principal.
const PRINCIPAL_HEADER: &str = "x-test-principal-tenant";

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn rec(id: &str, tier: &str) -> TenantRecord {
    TenantRecord::new(tid(id), tier)
}

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::new()
        .with(rec("acme", "pro"))
        .with(rec("globex", "free"))
        .with(rec("initech", "pro").with_status(TenantStatus::Suspended))
        .with(rec("hooli", "pro").with_status(TenantStatus::Deleted))
        .with(rec("umbrella", "pro").with_status(TenantStatus::Provisioning))
        .with(rec("stark", "pro").with_status(TenantStatus::Maintenance))
        .with(rec("wayne", "pro").with_status(TenantStatus::ReadOnly))
        .with(rec("oscorp", "pro").with_status(TenantStatus::Offboarding))
        .with(rec("cyberdyne", "pro").with_status(TenantStatus::InArrears))
        .with(rec("soylent", "pro").with_region("eu"))
        .with(rec("tyrell", "pro").with_region("us"))
        .with(rec(&"a".repeat(64), "free"))
}

fn builder() -> TenantResolverBuilder {
    TenantResolver::builder(registry())
}

/// `X-Tenant-ID` only, `/health` exempt.
fn header_resolver() -> TenantResolver {
    builder()
        .source(Source::header())
        .exempt("/health")
        .build()
        .unwrap()
}

async fn whoami(t: Tenant) -> String {
    t.id().to_string()
}

async fn source_of(t: Tenant) -> &'static str {
    t.source().as_str()
}

async fn optional(t: Option<Tenant>) -> String {
    t.map_or_else(|| "none".to_owned(), |t| t.id().to_string())
}

async fn param_and_tenant(p: web::Path<String>, t: Tenant) -> String {
    format!("{}|{}", p.into_inner(), t.id())
}

/// Stands in for an authentication stage: a verified principal for the tenant named in
/// [`PRINCIPAL_HEADER`].
async fn attach_test_principal(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let tenant = req
        .headers()
        .get(PRINCIPAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(t) = tenant {
        Principal::new("u").with_tenant(tid(&t)).attach(&req);
    }
    next.call(req).await
}

/// The app every test uses: `$mw` inside the test authentication middleware.
///
/// | route | answers |
/// | --- | --- |
/// | `/health`, `/public/...` | 200, no tenant needed |
/// | `/source`, `/t/{tenant}/source` | the source that named the tenant |
/// | `/optional` | the tenant id, or `none` (`Option<Tenant>`) |
/// | `/t/{tenant}/x` | `{path param}|{tenant id}` |
/// | anything else, any method | the tenant id (`Tenant`) |
macro_rules! app {
    ($mw:expr) => {
        test::init_service(
            App::new()
                .wrap($mw)
                .wrap(from_fn(attach_test_principal))
                .route("/health", web::get().to(HttpResponse::Ok))
                .route("/public/{tail:.*}", web::get().to(HttpResponse::Ok))
                .route("/source", web::to(source_of))
                .route("/t/{tenant}/source", web::to(source_of))
                .route("/optional", web::to(optional))
                .route("/t/{tenant}/x", web::to(param_and_tenant))
                .default_service(web::to(whoami)),
        )
        .await
    };
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Sends a `TestRequest` to the app and collects the reply.
macro_rules! call {
    ($app:expr, $req:expr) => {
        call(&$app, $req.to_request())
    };
}

async fn call<S, R, B>(app: &S, req: R) -> Reply
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req).await;
    let status = res.status();
    let headers = res.headers().clone();
    let body = test::read_body(res).await;
    Reply {
        status,
        headers,
        body,
    }
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// A 2xx with exactly this body.
    #[track_caller]
    fn assert_ok(&self, body: &str) {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        assert_eq!(self.text(), body);
    }

    /// A problem+json rejection with this status and code.
    #[track_caller]
    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let json = self.json();
        assert_eq!(json["code"], code, "{json}");
        assert_eq!(json["status"], status, "{json}");
        assert!(json["type"].is_string(), "{json}");
        assert!(
            json["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{json}"
        );
    }

    /// The body names none of the submitted values and no internals.
    #[track_caller]
    fn assert_reveals_nothing(&self, submitted: &[&str]) {
        // A problem's `type` is its code's fixed URI, which holds no request data (and
        // may hold a "." or a word a test submits): checked for that, then left out.
        let text = match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(mut problem)) if problem.contains_key("type") => {
                let code = problem["code"].as_str().unwrap_or_default().to_owned();
                assert_eq!(
                    problem["type"],
                    format!("{DEFAULT_TYPE_BASE}{code}"),
                    "the type is the code's fixed URI"
                );
                problem.remove("type");
                Value::Object(problem).to_string()
            }
            _ => self.text(),
        }
        .to_ascii_lowercase();
        for word in [
            "suspended",
            "deleted",
            "unknown",
            "registry",
            "x-tenant-id",
            "header",
        ]
        .iter()
        .chain(submitted)
        {
            let word = word.to_ascii_lowercase();
            if word.is_empty() {
                continue;
            }
            assert!(!text.contains(&word), "body reveals {word:?}: {text}");
        }
    }
}

fn get(uri: &str) -> test::TestRequest {
    test::TestRequest::get().uri(uri)
}

/// `GET /whoami` with one `X-Tenant-ID`.
fn with_tenant(value: impl Into<Vec<u8>>) -> test::TestRequest {
    let value = HeaderValue::from_bytes(&value.into()).expect("a buildable header value");
    get("/whoami").insert_header(("x-tenant-id", value))
}

/// `GET /whoami` with this `Host`.
fn with_host(host: &str) -> test::TestRequest {
    get("/whoami").insert_header(("host", host))
}

fn subdomain_resolver() -> TenantResolver {
    builder()
        .source(Source::subdomain(["example.com"]))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------
// 1. Each source alone
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn header_source_reads_x_tenant_id() {
    let app = app!(header_resolver());
    call!(app, with_tenant("acme")).await.assert_ok("acme");
    call!(app, with_tenant("globex")).await.assert_ok("globex");
    // Header names are case-insensitive.
    let req = get("/whoami").insert_header(("X-Tenant-ID", "acme"));
    call!(app, req).await.assert_ok("acme");
}

#[actix_web::test]
async fn header_source_with_a_custom_name_reads_only_that_header() {
    let resolver = builder()
        .source(Source::header_named("X-Org-Id"))
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/whoami").insert_header(("x-org-id", "acme"));
    call!(app, req).await.assert_ok("acme");

    // The default header is not read any more.
    let r = call!(app, with_tenant("acme")).await;
    r.assert_problem(401, "tenant_missing");

    let req = get("/whoami").insert_header(("x-org-id", "Acme"));
    let r = call!(app, req).await;
    r.assert_problem(400, "tenant_invalid");
    r.assert_reveals_nothing(&["x-org-id", "Acme"]);
}

#[actix_web::test]
async fn subdomain_source_reads_the_leftmost_label() {
    let app = app!(subdomain_resolver());
    call!(app, with_host("acme.example.com"))
        .await
        .assert_ok("acme");
    call!(app, with_host("globex.example.com"))
        .await
        .assert_ok("globex");
}

#[actix_web::test]
async fn subdomain_source_lowercases_the_host() {
    let app = app!(subdomain_resolver());
    call!(app, with_host("ACME.Example.COM"))
        .await
        .assert_ok("acme");
}

#[actix_web::test]
async fn subdomain_source_drops_the_port() {
    let app = app!(subdomain_resolver());
    call!(app, with_host("acme.example.com:8080"))
        .await
        .assert_ok("acme");
    call!(app, with_host("acme.example.com.:8443"))
        .await
        .assert_ok("acme");
}

#[actix_web::test]
async fn subdomain_source_drops_one_trailing_dot() {
    let app = app!(subdomain_resolver());
    call!(app, with_host("acme.example.com."))
        .await
        .assert_ok("acme");
}

#[actix_web::test]
async fn subdomain_source_apex_yields_no_tenant() {
    let app = app!(subdomain_resolver());
    for host in [
        "example.com",
        "EXAMPLE.com",
        "example.com.",
        "example.com:8080",
    ] {
        let r = call!(app, with_host(host)).await;
        r.assert_problem(401, "tenant_missing");
    }
}

#[actix_web::test]
async fn subdomain_source_host_outside_base_domains_yields_no_tenant() {
    let app = app!(subdomain_resolver());
    for host in [
        "acme.example.org",
        "acme.notexample.com",
        "acmeexample.com",
        "localhost",
        "127.0.0.1",
        "127.0.0.1:8080",
        "",
    ] {
        let r = call!(app, with_host(host)).await;
        r.assert_problem(401, "tenant_missing");
    }
}

#[actix_web::test]
async fn subdomain_source_nested_labels_are_invalid() {
    let app = app!(subdomain_resolver());
    for host in ["a.b.example.com", "acme.evil.example.com"] {
        let r = call!(app, with_host(host)).await;
        r.assert_problem(400, "tenant_invalid");
        r.assert_reveals_nothing(&["evil", "host"]);
    }
}

#[actix_web::test]
async fn subdomain_source_ipv6_literal_yields_no_tenant() {
    let app = app!(subdomain_resolver());
    for host in ["[::1]", "[::1]:8080", "[2001:db8::1]:443"] {
        let r = call!(app, with_host(host)).await;
        r.assert_problem(401, "tenant_missing");
    }
}

#[actix_web::test]
async fn subdomain_source_without_host_header_reads_the_uri_authority() {
    let app = app!(subdomain_resolver());
    let req = get("http://acme.example.com/whoami");
    call!(app, req).await.assert_ok("acme");
    // Neither a Host header nor an authority: no tenant.
    let r = call!(app, get("/whoami")).await;
    r.assert_problem(401, "tenant_missing");
}

#[actix_web::test]
async fn hostile_forwarded_host_is_never_read() {
    let app = app!(subdomain_resolver());
    // Client-controlled unless a trusted proxy rewrites it: never a tenant source.
    for name in ["x-forwarded-host", "forwarded"] {
        let value = if name == "forwarded" {
            "host=acme.example.com"
        } else {
            "acme.example.com"
        };
        let req = get("/whoami").insert_header((name, value));
        call!(app, req).await.assert_problem(401, "tenant_missing");
        let req = with_host("globex.example.com").insert_header((name, value));
        call!(app, req).await.assert_ok("globex");
    }
}

#[actix_web::test]
async fn hostile_absolute_form_target_disagreeing_with_host_is_invalid() {
    let app = app!(subdomain_resolver());
    // `GET http://acme.example.com/whoami` with `Host: globex.example.com`: a proxy
    // routing by one and the app reading the other would serve the wrong tenant.
    let req = get("http://acme.example.com/whoami").insert_header(("host", "globex.example.com"));
    call!(app, req).await.assert_problem(400, "tenant_invalid");
    // The same host twice, in any case, is one host.
    let req = get("http://acme.example.com/whoami").insert_header(("host", "ACME.example.com"));
    call!(app, req).await.assert_ok("acme");
}

#[actix_web::test]
async fn subdomain_source_prefers_the_most_specific_base_domain() {
    let resolver = builder()
        .source(Source::subdomain(["example.com", "eu.example.com"]))
        .build()
        .unwrap();
    let app = app!(resolver);
    call!(app, with_host("acme.eu.example.com"))
        .await
        .assert_ok("acme");
    // `eu.example.com` is an apex of its own.
    let r = call!(app, with_host("eu.example.com")).await;
    r.assert_problem(401, "tenant_missing");
}

fn path_resolver() -> TenantResolver {
    builder()
        .source(Source::path_prefix("/t/"))
        .build()
        .unwrap()
}

#[actix_web::test]
async fn path_source_reads_the_segment_after_the_prefix() {
    let app = app!(path_resolver());
    call!(app, get("/t/acme/items")).await.assert_ok("acme");
    call!(app, get("/t/globex")).await.assert_ok("globex");
    // Outside the prefix: no tenant.
    let r = call!(app, get("/items")).await;
    r.assert_problem(401, "tenant_missing");
    let r = call!(app, get("/t")).await;
    r.assert_problem(401, "tenant_missing");
}

#[actix_web::test]
async fn path_source_empty_segment_is_invalid() {
    let app = app!(path_resolver());
    for uri in ["/t//items", "/t/"] {
        let r = call!(app, get(uri)).await;
        r.assert_problem(400, "tenant_invalid");
    }
}

#[actix_web::test]
async fn path_source_reads_the_path_the_router_reads() {
    let app = app!(path_resolver());
    // The router decodes `%61` to `a`; the resolver sees the same spelling.
    call!(app, get("/t/%61cme/x")).await.assert_ok("acme|acme");
    // `%2e%2e` decodes to `..`, which is not an id; `%2F` stays encoded.
    for uri in ["/t/%2e%2e/x", "/t/ac%2Fme/x", "/t/ACME/x", "/t/ac%20me/x"] {
        let r = call!(app, get(uri)).await;
        r.assert_problem(400, "tenant_invalid");
    }
}

/// `?tenant=...`: none, one, or a refusal when repeated.
fn query_source() -> Source {
    Source::custom(|req| {
        let found: Vec<_> = req
            .query_string()
            .split('&')
            .filter_map(|kv| kv.strip_prefix("tenant="))
            .collect();
        match found[..] {
            [] => Ok(None),
            [one] => Ok(Some(one.to_owned())),
            _ => Err(SourceError::new("several tenant parameters")),
        }
    })
}

#[actix_web::test]
async fn custom_sync_source_some_none_and_err() {
    let resolver = builder().source(query_source()).build().unwrap();
    let app = app!(resolver);
    // Ok(Some)
    call!(app, get("/whoami?tenant=acme"))
        .await
        .assert_ok("acme");
    // Ok(None)
    let r = call!(app, get("/whoami")).await;
    r.assert_problem(401, "tenant_missing");
    // Err
    let r = call!(app, get("/whoami?tenant=acme&tenant=globex")).await;
    r.assert_problem(400, "tenant_invalid");
    r.assert_reveals_nothing(&["several", "parameters"]);
    // Ok(Some(malformed)) is validated like any other source.
    let r = call!(app, get("/whoami?tenant=../x")).await;
    r.assert_problem(400, "tenant_invalid");
}

/// `X-Api-Key: key-{tenant}`, answered after a real await.
fn api_key_source() -> Source {
    Source::custom_async(|req| {
        let key = req
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            match key {
                None => Ok(None),
                Some(k) => match k.strip_prefix("key-") {
                    Some(t) => Ok(Some(t.to_owned())),
                    None => Err(SourceError::new("api key not recognised")),
                },
            }
        })
    })
}

#[actix_web::test]
async fn custom_async_source_some_none_and_err() {
    let resolver = builder().source(api_key_source()).build().unwrap();
    let app = app!(resolver);
    let req = get("/source").insert_header(("x-api-key", "key-acme"));
    call!(app, req).await.assert_ok("custom");
    let req = get("/whoami").insert_header(("x-api-key", "key-globex"));
    call!(app, req).await.assert_ok("globex");

    let r = call!(app, get("/whoami")).await;
    r.assert_problem(401, "tenant_missing");

    let req = get("/whoami").insert_header(("x-api-key", "bogus"));
    let r = call!(app, req).await;
    r.assert_problem(400, "tenant_invalid");
    r.assert_reveals_nothing(&["bogus", "api key"]);

    let req = get("/whoami").insert_header(("x-api-key", "key-ACME"));
    call!(app, req).await.assert_problem(400, "tenant_invalid");
}

#[actix_web::test]
async fn claim_source_reads_the_verified_principal() {
    let resolver = builder().source(Source::claim()).build().unwrap();
    let app = app!(resolver);
    let req = get("/source").insert_header((PRINCIPAL_HEADER, "acme"));
    call!(app, req).await.assert_ok("claim");
    let req = get("/whoami").insert_header((PRINCIPAL_HEADER, "globex"));
    call!(app, req).await.assert_ok("globex");

    // No principal: no tenant. A principal without a tenant: no tenant either.
    let r = call!(app, get("/whoami")).await;
    r.assert_problem(401, "tenant_missing");

    // The claim is validated against the registry like any other source.
    let req = get("/whoami").insert_header((PRINCIPAL_HEADER, "initech"));
    call!(app, req)
        .await
        .assert_problem(403, "tenant_forbidden");
}

#[actix_web::test]
async fn claim_source_principal_without_tenant_yields_no_tenant() {
    let resolver = builder().source(Source::claim()).build().unwrap();
    let app = test::init_service(
        App::new()
            .wrap(resolver)
            .wrap_fn(|req, srv| {
                Principal::new("u").attach(&req);
                srv.call(req)
            })
            .default_service(web::to(whoami)),
    )
    .await;
    let r = call!(app, get("/whoami")).await;
    r.assert_problem(401, "tenant_missing");
}

#[actix_web::test]
async fn handler_sees_the_principal_through_the_context() {
    let resolver = builder().source(Source::claim()).build().unwrap();
    let app = test::init_service(
        App::new()
            .wrap(resolver)
            .wrap(from_fn(attach_test_principal))
            .default_service(web::to(|t: Tenant| async move {
                t.principal().map(|p| p.subject().to_owned()).unwrap()
            })),
    )
    .await;
    let req = get("/x").insert_header((PRINCIPAL_HEADER, "acme"));
    call!(app, req).await.assert_ok("u");
}

// ---------------------------------------------------------------------------------
// 2. Order
// ---------------------------------------------------------------------------------

fn all_sources_claim_last() -> TenantResolver {
    builder()
        .source(Source::header())
        .source(Source::subdomain(["example.com"]))
        .source(Source::path_prefix("/t/"))
        .source(Source::claim())
        .build()
        .unwrap()
}

#[actix_web::test]
async fn order_verified_claim_wins_when_all_agree() {
    let app = app!(all_sources_claim_last());
    let req = get("/t/acme/source")
        .insert_header(("x-tenant-id", "acme"))
        .insert_header(("host", "acme.example.com"))
        .insert_header((PRINCIPAL_HEADER, "acme"));
    call!(app, req).await.assert_ok("claim");
}

#[actix_web::test]
async fn order_first_configured_wins_without_a_claim() {
    let app = app!(all_sources_claim_last());
    let req = get("/t/acme/source")
        .insert_header(("x-tenant-id", "acme"))
        .insert_header(("host", "acme.example.com"));
    call!(app, req).await.assert_ok("header");

    let req = get("/t/acme/source").insert_header(("host", "acme.example.com"));
    call!(app, req).await.assert_ok("host");

    let req = get("/t/acme/source");
    call!(app, req).await.assert_ok("path");
}

#[actix_web::test]
async fn order_follows_configuration_not_source_kind() {
    let resolver = builder()
        .source(Source::path_prefix("/t/"))
        .source(Source::subdomain(["example.com"]))
        .source(Source::header())
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/t/acme/source")
        .insert_header(("x-tenant-id", "acme"))
        .insert_header(("host", "acme.example.com"));
    call!(app, req).await.assert_ok("path");

    let req = get("/source")
        .insert_header(("x-tenant-id", "acme"))
        .insert_header(("host", "acme.example.com"));
    call!(app, req).await.assert_ok("host");
}

#[actix_web::test]
async fn order_async_source_configured_first_wins_over_later_sync_sources() {
    // Async sources run after the sync ones, but rank by configuration order.
    let resolver = builder()
        .source(api_key_source())
        .source(Source::header())
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/source")
        .insert_header(("x-api-key", "key-acme"))
        .insert_header(("x-tenant-id", "acme"));
    call!(app, req).await.assert_ok("custom");

    let resolver = builder()
        .source(Source::header())
        .source(api_key_source())
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/source")
        .insert_header(("x-api-key", "key-acme"))
        .insert_header(("x-tenant-id", "acme"));
    call!(app, req).await.assert_ok("header");
}

#[actix_web::test]
async fn order_claim_configured_first_still_reports_claim() {
    let resolver = builder()
        .source(Source::claim())
        .source(Source::header())
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/source")
        .insert_header(("x-tenant-id", "acme"))
        .insert_header((PRINCIPAL_HEADER, "acme"));
    call!(app, req).await.assert_ok("claim");
}

// ---------------------------------------------------------------------------------
// 3. Conflicts
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn conflict_principal_vs_header() {
    for claim_first in [true, false] {
        let b = builder();
        let b = if claim_first {
            b.source(Source::claim()).source(Source::header())
        } else {
            b.source(Source::header()).source(Source::claim())
        };
        let app = app!(b.build().unwrap());
        let req = get("/whoami")
            .insert_header((PRINCIPAL_HEADER, "acme"))
            .insert_header(("x-tenant-id", "globex"));
        let r = call!(app, req).await;
        r.assert_problem(403, "tenant_conflict");
        r.assert_reveals_nothing(&["acme", "globex", "claim"]);
    }
}

#[actix_web::test]
async fn conflict_header_vs_subdomain() {
    let resolver = builder()
        .source(Source::header())
        .source(Source::subdomain(["example.com"]))
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/whoami")
        .insert_header(("x-tenant-id", "acme"))
        .insert_header(("host", "globex.example.com"));
    let r = call!(app, req).await;
    r.assert_problem(403, "tenant_conflict");
    r.assert_reveals_nothing(&["acme", "globex"]);
}

#[actix_web::test]
async fn conflict_path_vs_header() {
    let resolver = builder()
        .source(Source::path_prefix("/t/"))
        .source(Source::header())
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/t/acme/items").insert_header(("x-tenant-id", "globex"));
    let r = call!(app, req).await;
    r.assert_problem(403, "tenant_conflict");
    r.assert_reveals_nothing(&["acme", "globex"]);
}

#[actix_web::test]
async fn conflict_with_an_unknown_tenant_is_still_a_conflict() {
    // A conflict is decided before the registry is asked.
    let resolver = builder()
        .source(Source::header())
        .source(Source::path_prefix("/t/"))
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/t/nobody/items").insert_header(("x-tenant-id", "acme"));
    call!(app, req).await.assert_problem(403, "tenant_conflict");
}

#[actix_web::test]
async fn conflict_async_source_vs_header() {
    let resolver = builder()
        .source(Source::header())
        .source(api_key_source())
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/whoami")
        .insert_header(("x-tenant-id", "acme"))
        .insert_header(("x-api-key", "key-globex"));
    call!(app, req).await.assert_problem(403, "tenant_conflict");
}

#[actix_web::test]
async fn malformed_source_is_400_even_when_others_agree() {
    let resolver = builder()
        .source(Source::header())
        .source(Source::subdomain(["example.com"]))
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/whoami")
        .insert_header(("x-tenant-id", "acme"))
        .insert_header(("host", "a.b.example.com"));
    call!(app, req).await.assert_problem(400, "tenant_invalid");
}

/// The docs of `Source` promise that a malformed input rejects the request with
/// `400 tenant_invalid` "whatever the other sources say". When two earlier sources
/// disagree, the resolver stops at the conflict and answers 403 instead.
#[actix_web::test]
async fn malformed_source_is_400_even_when_earlier_sources_conflict() {
    let resolver = builder()
        .source(Source::header())
        .source(Source::subdomain(["example.com"]))
        .source(Source::path_prefix("/t/"))
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/t/ACME/items")
        .insert_header(("x-tenant-id", "acme"))
        .insert_header(("host", "globex.example.com"));
    call!(app, req).await.assert_problem(400, "tenant_invalid");
}

// ---------------------------------------------------------------------------------
// 4. Missing
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn missing_tenant_is_401() {
    let resolver = builder()
        .source(Source::claim())
        .source(Source::header())
        .source(Source::subdomain(["example.com"]))
        .source(Source::path_prefix("/t/"))
        .source(query_source())
        .source(api_key_source())
        .build()
        .unwrap();
    let app = app!(resolver);
    let req = get("/whoami").insert_header(("host", "example.com"));
    let r = call!(app, req).await;
    r.assert_problem(401, "tenant_missing");
    // The request never reaches a handler, whatever it takes.
    let r = call!(app, get("/optional")).await;
    r.assert_problem(401, "tenant_missing");
}

fn allow_missing_resolver() -> TenantResolver {
    builder()
        .source(Source::header())
        .allow_missing(true)
        .build()
        .unwrap()
}

#[actix_web::test]
async fn allow_missing_gives_option_tenant_none() {
    let app = app!(allow_missing_resolver());
    call!(app, get("/optional")).await.assert_ok("none");
    let req = get("/optional").insert_header(("x-tenant-id", "acme"));
    call!(app, req).await.assert_ok("acme");
}

#[actix_web::test]
async fn allow_missing_tenant_extractor_still_401() {
    let app = app!(allow_missing_resolver());
    let r = call!(app, get("/whoami")).await;
    r.assert_problem(401, "tenant_missing");
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[actix_web::test]
async fn allow_missing_still_rejects_malformed_and_unknown() {
    let app = app!(allow_missing_resolver());
    for bad in ["Acme", "../x", ""] {
        let req = get("/optional").insert_header(("x-tenant-id", bad));
        call!(app, req).await.assert_problem(400, "tenant_invalid");
    }
    let req = get("/optional").insert_header(("x-tenant-id", "nobody"));
    call!(app, req)
        .await
        .assert_problem(403, "tenant_forbidden");
    let req = get("/optional")
        .append_header(("x-tenant-id", "acme"))
        .append_header(("x-tenant-id", "acme"));
    call!(app, req).await.assert_problem(400, "tenant_invalid");
}

// ---------------------------------------------------------------------------------
// 5. Exempt paths
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn exempt_path_needs_no_tenant_and_ignores_garbage() {
    let app = app!(header_resolver());
    let r = call!(app, get("/health")).await;
    assert_eq!(r.status, 200);
    let r = call!(app, with_health_header(b"../../etc/passwd")).await;
    assert_eq!(r.status, 200);
    let r = call!(app, with_health_header(&[0xff, 0xfe])).await;
    assert_eq!(r.status, 200);
    let req = get("/health")
        .append_header(("x-tenant-id", "acme"))
        .append_header(("x-tenant-id", "globex"));
    assert_eq!(call!(app, req).await.status, 200);
}

fn with_health_header(value: &[u8]) -> test::TestRequest {
    get("/health").insert_header(("x-tenant-id", HeaderValue::from_bytes(value).unwrap()))
}

#[actix_web::test]
async fn exempt_path_is_an_exact_match() {
    let app = app!(header_resolver());
    for uri in ["/health/x", "/health/", "/healthz", "/Health"] {
        let r = call!(app, get(uri)).await;
        r.assert_problem(401, "tenant_missing");
    }
    // A query string is not part of the path.
    let r = call!(app, get("/health?x=1")).await;
    assert_eq!(r.status, 200);
    // Not exempt, so resolved normally.
    let req = get("/health/x").insert_header(("x-tenant-id", "acme"));
    call!(app, req).await.assert_ok("acme");
}

#[actix_web::test]
async fn exempt_prefix_covers_everything_under_it() {
    let resolver = builder()
        .source(Source::header())
        .exempt_prefix("/public/")
        .build()
        .unwrap();
    let app = app!(resolver);
    for uri in ["/public/", "/public/logo.png", "/public/a/b/c"] {
        let r = call!(app, get(uri)).await;
        assert_eq!(r.status, 200, "{uri}: {}", r.text());
    }
    let req = get("/public/x").insert_header(("x-tenant-id", "Not Valid"));
    assert_eq!(call!(app, req).await.status, 200);
    for uri in ["/public", "/publicity", "/x/public/"] {
        let r = call!(app, get(uri)).await;
        r.assert_problem(401, "tenant_missing");
    }
}

#[actix_web::test]
async fn exempt_path_matches_the_routed_spelling() {
    // `/%68ealth` is routed as `/health`, and exempted as `/health`.
    let app = app!(header_resolver());
    let r = call!(app, get("/%68ealth")).await;
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------------------------
// 6. Hostile ids
// ---------------------------------------------------------------------------------

#[track_caller]
fn assert_invalid(r: &Reply, submitted: &str) {
    r.assert_problem(400, "tenant_invalid");
    r.assert_reveals_nothing(&[submitted]);
}

#[actix_web::test]
async fn hostile_empty_header_value() {
    let app = app!(header_resolver());
    assert_invalid(&call!(app, with_tenant("")).await, "");
}

#[actix_web::test]
async fn hostile_65_byte_id() {
    let app = app!(header_resolver());
    let long = "a".repeat(65);
    assert_invalid(&call!(app, with_tenant(long.clone())).await, &long);
}

#[actix_web::test]
async fn boundary_64_byte_id_known_passes_and_unknown_is_403() {
    let app = app!(header_resolver());
    let known = "a".repeat(64);
    call!(app, with_tenant(known.clone()))
        .await
        .assert_ok(&known);
    let unknown = "b".repeat(64);
    let r = call!(app, with_tenant(unknown.clone())).await;
    r.assert_problem(403, "tenant_forbidden");
    r.assert_reveals_nothing(&[&unknown]);
}

#[actix_web::test]
async fn hostile_uppercase_id_is_not_normalised() {
    let app = app!(header_resolver());
    for bad in ["Acme", "ACME", "acmE"] {
        assert_invalid(&call!(app, with_tenant(bad)).await, bad);
    }
}

#[actix_web::test]
async fn hostile_spaces_are_not_trimmed() {
    let app = app!(header_resolver());
    for bad in ["ac me", " acme", "acme ", "ac\tme", "\tacme"] {
        let r = call!(app, with_tenant(bad)).await;
        r.assert_problem(400, "tenant_invalid");
    }
}

#[actix_web::test]
async fn hostile_path_traversal_and_encodings() {
    let app = app!(header_resolver());
    for bad in [
        "../x",
        "..",
        ".",
        "acme/../globex",
        "%2e%2e",
        "%61cme",
        "acme%00",
        "-acme",
        "_acme",
        "acme.example",
        "acme;globex",
        "acme,globex",
    ] {
        assert_invalid(&call!(app, with_tenant(bad)).await, bad);
    }
}

#[actix_web::test]
async fn hostile_control_bytes() {
    // The header value type refuses NUL, C0 controls other than tab, and DEL outright:
    // such a request cannot even be built.
    for bytes in [
        &b"acme\0"[..],
        b"\0",
        b"\x01",
        b"acme\x01",
        b"\x7f",
        b"acme\r\n",
    ] {
        assert!(HeaderValue::from_bytes(bytes).is_err(), "{bytes:?}");
    }
    // Tab is the one control byte a header value may hold; it is still not an id.
    let app = app!(header_resolver());
    for bad in ["\t", "acme\t", "ac\tme"] {
        let r = call!(app, with_tenant(bad)).await;
        r.assert_problem(400, "tenant_invalid");
    }
}

#[actix_web::test]
async fn hostile_non_utf8_and_obs_text_bytes() {
    let app = app!(header_resolver());
    for bytes in [&[0xff, 0xfe][..], b"acme\x80", b"\xc3\xa9", b"acme\xff"] {
        let r = call!(app, with_tenant(bytes.to_vec())).await;
        r.assert_problem(400, "tenant_invalid");
    }
}

#[actix_web::test]
async fn hostile_duplicate_tenant_headers() {
    let app = app!(header_resolver());
    for (a, b) in [("acme", "acme"), ("acme", "globex"), ("acme", "")] {
        let req = get("/whoami")
            .append_header(("x-tenant-id", a))
            .append_header(("x-tenant-id", b));
        let r = call!(app, req).await;
        r.assert_problem(400, "tenant_invalid");
    }
}

#[actix_web::test]
async fn hostile_unicode_look_alikes() {
    let app = app!(header_resolver());
    // Cyrillic а (U+0430), fullwidth ａｃｍｅ, a zero-width space, a combining mark.
    for bad in ["аcme", "ａｃｍｅ", "ac\u{200b}me", "acme\u{301}"] {
        let r = call!(app, with_tenant(bad)).await;
        r.assert_problem(400, "tenant_invalid");
    }
}

#[actix_web::test]
async fn hostile_64_kib_header_is_rejected_quickly() {
    let app = app!(header_resolver());
    let huge = "a".repeat(64 * 1024);
    let started = Instant::now();
    let r = call!(app, with_tenant(huge.clone())).await;
    let took = started.elapsed();
    r.assert_problem(400, "tenant_invalid");
    assert!(r.body.len() < 512, "the body does not echo the input");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[actix_web::test]
async fn hostile_two_host_headers() {
    let app = app!(subdomain_resolver());
    for (a, b) in [
        ("acme.example.com", "acme.example.com"),
        ("acme.example.com", "globex.example.com"),
        ("acme.example.com", "evil.com"),
    ] {
        let req = get("/whoami")
            .append_header(("host", a))
            .append_header(("host", b));
        let r = call!(app, req).await;
        r.assert_problem(400, "tenant_invalid");
    }
}

#[actix_web::test]
async fn hostile_host_with_base_domain_as_a_prefix() {
    let app = app!(subdomain_resolver());
    for host in [
        "acme.example.com.evil.com",
        "acme.example.com.evil.com.",
        "acme.example.com@evil.com",
    ] {
        let r = call!(app, with_host(host)).await;
        r.assert_problem(401, "tenant_missing");
    }
}

#[actix_web::test]
async fn hostile_host_bytes() {
    let app = app!(subdomain_resolver());
    for bad in [
        "ac!me.example.com",
        "-acme.example.com",
        "ac_me.example.com:80x",
    ] {
        let r = call!(app, with_host(bad)).await;
        r.assert_problem(400, "tenant_invalid");
    }
    let req = get("/whoami").insert_header((
        "host",
        HeaderValue::from_bytes(b"\xd0\xb0cme.example.com").unwrap(),
    ));
    let r = call!(app, req).await;
    r.assert_problem(400, "tenant_invalid");
}

// ---------------------------------------------------------------------------------
// 7. Problem+json bodies
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn problem_bodies_have_the_rfc9457_shape_and_reveal_nothing() {
    let resolver = builder()
        .source(Source::header())
        .source(Source::subdomain(["example.com"]))
        .build()
        .unwrap();
    let app = app!(resolver);
    let secret = "zz-secret-tenant-7";

    let cases: Vec<(test::TestRequest, u16, &str, Vec<&str>)> = vec![
        (
            with_tenant("Zz-Secret-Tenant-7"),
            400,
            "tenant_invalid",
            vec!["Zz-Secret-Tenant-7"],
        ),
        (get("/whoami"), 401, "tenant_missing", vec![]),
        (with_tenant(secret), 403, "tenant_forbidden", vec![secret]),
        (
            with_tenant("initech"),
            403,
            "tenant_forbidden",
            vec!["initech"],
        ),
        (
            get("/whoami")
                .insert_header(("x-tenant-id", "acme"))
                .insert_header(("host", "globex.example.com")),
            403,
            "tenant_conflict",
            vec!["acme", "globex", "host"],
        ),
    ];
    for (req, status, code, submitted) in cases {
        let r = call!(app, req).await;
        r.assert_problem(status, code);
        r.assert_reveals_nothing(&submitted);
        assert_eq!(r.header("cache-control"), Some("no-store"), "{code}");
        let json = r.json();
        assert_eq!(json["type"], format!("{DEFAULT_TYPE_BASE}{code}"));
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 4, "only type, title, status, code: {json}");
    }
}

#[actix_web::test]
async fn unknown_suspended_and_deleted_tenants_are_indistinguishable() {
    let app = app!(header_resolver());
    let unknown = call!(app, with_tenant("nobody")).await;
    unknown.assert_problem(403, "tenant_forbidden");
    for who in ["initech", "hooli"] {
        let other = call!(app, with_tenant(who)).await;
        assert_eq!(other.status, unknown.status, "{who}");
        for h in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
            assert_eq!(other.headers.get(&h), unknown.headers.get(&h), "{who}: {h}");
        }
        let mut a: Vec<_> = other.headers.iter().collect();
        let mut b: Vec<_> = unknown.headers.iter().collect();
        a.sort_by_key(|(k, _)| k.as_str());
        b.sort_by_key(|(k, _)| k.as_str());
        assert_eq!(a, b, "{who}: every header is the same");
        assert_eq!(other.body, unknown.body, "{who}: the same bytes");
    }
    // Writes too: a suspended tenant is not mistaken for a read-only one.
    let req = test::TestRequest::post()
        .uri("/whoami")
        .insert_header(("x-tenant-id", "initech"));
    let r = call!(app, req).await;
    assert_eq!(r.body, unknown.body);
}

// ---------------------------------------------------------------------------------
// 8. Registry statuses
// ---------------------------------------------------------------------------------

fn request(method: Method, tenant: &str) -> test::TestRequest {
    test::TestRequest::default()
        .method(method)
        .uri("/whoami")
        .insert_header(("x-tenant-id", tenant))
}

#[actix_web::test]
async fn status_active_serves_every_method() {
    let app = app!(header_resolver());
    for m in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
        call!(app, request(m, "acme")).await.assert_ok("acme");
    }
}

#[actix_web::test]
async fn status_provisioning_and_maintenance_are_503_with_retry_after() {
    let app = app!(header_resolver());
    for who in ["umbrella", "stark"] {
        for m in [Method::GET, Method::POST] {
            let r = call!(app, request(m, who)).await;
            r.assert_problem(503, "tenant_unavailable");
            assert_eq!(r.header("retry-after"), Some("30"), "{who}");
            r.assert_reveals_nothing(&[who, "provisioning", "maintenance"]);
        }
    }
}

#[actix_web::test]
async fn status_read_only_offboarding_in_arrears_allow_reads_only() {
    let app = app!(header_resolver());
    for who in ["wayne", "oscorp", "cyberdyne"] {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            let r = call!(app, request(m.clone(), who)).await;
            assert_eq!(r.status, 200, "{who} {m}");
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let r = call!(app, request(m.clone(), who)).await;
            r.assert_problem(403, "tenant_read_only");
            r.assert_reveals_nothing(&[who, "arrears", "offboarding"]);
        }
    }
}

#[actix_web::test]
async fn status_suspended_and_deleted_are_403_forbidden() {
    let app = app!(header_resolver());
    for who in ["initech", "hooli"] {
        for m in [Method::GET, Method::POST] {
            let r = call!(app, request(m, who)).await;
            r.assert_problem(403, "tenant_forbidden");
        }
    }
}

#[actix_web::test]
async fn custom_status_rules_change_one_answer() {
    let rules = StatusRules::default()
        .set(TenantStatus::InArrears, Access::Allow)
        .set(
            TenantStatus::Maintenance,
            Access::Unavailable {
                retry_after: Duration::from_millis(90_500),
            },
        );
    let resolver = builder()
        .source(Source::header())
        .status_rules(rules)
        .build()
        .unwrap();
    let app = app!(resolver);
    call!(app, request(Method::POST, "cyberdyne"))
        .await
        .assert_ok("cyberdyne");
    // The rest keep their defaults.
    call!(app, request(Method::POST, "wayne"))
        .await
        .assert_problem(403, "tenant_read_only");
    call!(app, request(Method::GET, "initech"))
        .await
        .assert_problem(403, "tenant_forbidden");
    // Retry-After is whole seconds, rounded up.
    let r = call!(app, request(Method::GET, "stark")).await;
    r.assert_problem(503, "tenant_unavailable");
    assert_eq!(r.header("retry-after"), Some("91"));
}

#[actix_web::test]
async fn custom_status_rules_can_forbid_a_status() {
    let rules = StatusRules::default().set(TenantStatus::ReadOnly, Access::Forbidden);
    let resolver = builder()
        .source(Source::header())
        .status_rules(rules)
        .build()
        .unwrap();
    let app = app!(resolver);
    let unknown = call!(app, with_tenant("nobody")).await;
    let r = call!(app, request(Method::GET, "wayne")).await;
    r.assert_problem(403, "tenant_forbidden");
    assert_eq!(r.body, unknown.body);
}

#[actix_web::test]
async fn region_mismatch_is_421_and_regionless_tenants_pass() {
    let resolver = builder()
        .source(Source::header())
        .region("us")
        .build()
        .unwrap();
    let app = app!(resolver);
    let r = call!(app, with_tenant("soylent")).await;
    r.assert_problem(421, "tenant_misdirected");
    r.assert_reveals_nothing(&["soylent", "eu"]);
    call!(app, with_tenant("acme")).await.assert_ok("acme");
    call!(app, with_tenant("tyrell")).await.assert_ok("tyrell");
}

#[actix_web::test]
async fn without_a_configured_region_every_region_passes() {
    let app = app!(header_resolver());
    call!(app, with_tenant("soylent"))
        .await
        .assert_ok("soylent");
}

// ---------------------------------------------------------------------------------
// 9. Registry failures
// ---------------------------------------------------------------------------------

/// A registry that cannot answer.
struct FailingRegistry;

impl TenantRegistry for FailingRegistry {
    fn lookup<'a>(
        &'a self,
        _: &'a str,
        _: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>> {
        Answer::later(async { Err(RegistryError::new("connection refused: db-7.internal")) })
    }
}

/// A registry that answers "active" for everyone, far too late.
struct HangingRegistry;

impl TenantRegistry for HangingRegistry {
    fn lookup<'a>(
        &'a self,
        id: &'a str,
        _: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>> {
        Answer::later(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Some(Arc::new(TenantRecord::new(tid(id), "pro"))))
        })
    }
}

/// A registry that answers after a real await (the non-warm path).
struct SlowRegistry;

impl TenantRegistry for SlowRegistry {
    fn lookup<'a>(
        &'a self,
        id: &'a str,
        _: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>> {
        Answer::later(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(registry().get(id))
        })
    }
}

#[actix_web::test]
async fn registry_error_is_503_never_a_pass() {
    let resolver = TenantResolver::builder(FailingRegistry)
        .source(Source::header())
        .build()
        .unwrap();
    let app = app!(resolver);
    for who in ["acme", "nobody"] {
        for m in [Method::GET, Method::POST] {
            let r = call!(app, request(m, who)).await;
            r.assert_problem(503, "tenant_unavailable");
            r.assert_reveals_nothing(&[who, "db-7", "refused", "connection"]);
        }
    }
}

#[actix_web::test]
async fn registry_timeout_is_503() {
    let resolver = TenantResolver::builder(HangingRegistry)
        .source(Source::header())
        .registry_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let app = app!(resolver);
    let started = Instant::now();
    let r = call!(app, with_tenant("acme")).await;
    let took = started.elapsed();
    r.assert_problem(503, "tenant_unavailable");
    assert!(took >= Duration::from_millis(50), "took {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[actix_web::test]
async fn async_registry_answers_are_honoured() {
    let resolver = TenantResolver::builder(SlowRegistry)
        .source(Source::header())
        .build()
        .unwrap();
    let app = app!(resolver);
    call!(app, with_tenant("acme")).await.assert_ok("acme");
    call!(app, with_tenant("nobody"))
        .await
        .assert_problem(403, "tenant_forbidden");
    call!(app, with_tenant("initech"))
        .await
        .assert_problem(403, "tenant_forbidden");
}

// ---------------------------------------------------------------------------------
// 10. The extractor without middleware
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn tenant_extractor_without_middleware_is_500() {
    let app = test::init_service(
        App::new()
            .route("/whoami", web::get().to(whoami))
            .route("/optional", web::get().to(optional)),
    )
    .await;
    let req = get("/whoami").insert_header(("x-tenant-id", "acme"));
    let r = call!(app, req).await;
    r.assert_problem(500, "internal_error");
    r.assert_reveals_nothing(&["acme", "TenantResolver", "middleware"]);
}

#[actix_web::test]
async fn option_tenant_without_middleware_is_none() {
    let app = test::init_service(App::new().route("/optional", web::get().to(optional))).await;
    let req = get("/optional").insert_header(("x-tenant-id", "acme"));
    call!(app, req).await.assert_ok("none");
}

// ---------------------------------------------------------------------------------
// 11. Rejections are responses
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn outer_middleware_decorates_rejections() {
    let app = test::init_service(
        App::new()
            .wrap(header_resolver())
            .wrap(DefaultHeaders::new().add(("x-outer", "seen")))
            .default_service(web::to(whoami)),
    )
    .await;
    let r = call!(app, get("/whoami")).await;
    r.assert_problem(401, "tenant_missing");
    assert_eq!(r.header("x-outer"), Some("seen"));

    for (who, status) in [("Bad", 400), ("nobody", 403), ("acme", 200)] {
        let r = call!(app, with_tenant(who)).await;
        assert_eq!(r.status, status, "{who}");
        assert_eq!(r.header("x-outer"), Some("seen"), "{who}");
    }
}

// ---------------------------------------------------------------------------------
// 12. Custom responder
// ---------------------------------------------------------------------------------

fn custom_responder(err: &TenancyError, _req: &HttpRequest) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(err.status()).unwrap())
        .insert_header(("x-custom-responder", "1"))
        .json(serde_json::json!({ "error": { "code": err.code().as_str() } }))
}

#[track_caller]
fn assert_custom(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-custom-responder"), Some("1"));
    assert_eq!(
        r.json(),
        serde_json::json!({ "error": { "code": code } }),
        "{}",
        r.text()
    );
}

#[actix_web::test]
async fn custom_responder_shapes_middleware_and_extractor_rejections() {
    let tenancy = Tenancy::builder()
        .resolver(
            builder()
                .source(Source::header())
                .exempt("/exempt-whoami")
                .build()
                .unwrap(),
        )
        .responder(custom_responder)
        .build()
        .unwrap();
    let app = app!(tenancy);
    // Middleware rejections.
    assert_custom(&call!(app, get("/whoami")).await, 401, "tenant_missing");
    assert_custom(&call!(app, with_tenant("Bad")).await, 400, "tenant_invalid");
    assert_custom(
        &call!(app, with_tenant("initech")).await,
        403,
        "tenant_forbidden",
    );
    assert_custom(
        &call!(app, with_tenant("stark")).await,
        503,
        "tenant_unavailable",
    );
    // The extractor's 401 on an exempt path that still asks for a tenant.
    let r = call!(app, get("/exempt-whoami")).await;
    assert_custom(&r, 401, "tenant_missing");
}

#[actix_web::test]
async fn custom_responder_shapes_the_allow_missing_extractor_401() {
    let tenancy = Tenancy::builder()
        .resolver(
            builder()
                .source(Source::header())
                .allow_missing(true)
                .build()
                .unwrap(),
        )
        .responder(custom_responder)
        .build()
        .unwrap();
    let app = app!(tenancy);
    let r = call!(app, get("/whoami")).await;
    assert_custom(&r, 401, "tenant_missing");
}

#[actix_web::test]
async fn the_pipelines_responder_answers_an_invalid_id_and_a_missing_one() {
    let tenancy = Tenancy::builder()
        .resolver(
            builder()
                .source(Source::header())
                .allow_missing(true)
                .build()
                .unwrap(),
        )
        .responder(custom_responder)
        .build()
        .unwrap();
    let app = app!(tenancy);
    assert_custom(&call!(app, with_tenant("Bad")).await, 400, "tenant_invalid");
    assert_custom(&call!(app, get("/whoami")).await, 401, "tenant_missing");
}

#[actix_web::test]
async fn a_handlers_tenancy_error_and_a_missing_principal_answer_as_the_middleware_does() {
    async fn refuse() -> Result<HttpResponse, TenancyError> {
        Err(TenancyError::InvalidRequest {
            reason: "the body is not JSON (secret detail)".into(),
        })
    }
    async fn me(p: Principal) -> String {
        p.subject().to_owned()
    }
    macro_rules! app_with {
        ($($mw:expr)?) => {
            test::init_service(
                App::new()
                    $(.wrap($mw))?
                    .route("/refuse", web::post().to(refuse))
                    .route("/me", web::get().to(me)),
            )
            .await
        };
    }
    let custom = Tenancy::builder()
        .resolver(header_resolver())
        .responder(custom_responder)
        .build()
        .unwrap();
    let app = app_with!(custom);
    let post = || test::TestRequest::post().uri("/refuse");
    let r = call!(app, post().insert_header(("x-tenant-id", "acme"))).await;
    assert_custom(&r, 400, "invalid_request");
    let r = call!(app, get("/me").insert_header(("x-tenant-id", "acme"))).await;
    assert_custom(&r, 401, "unauthenticated");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    // The default responder, inside the middleware and without it: the problem body.
    let plain = Tenancy::builder()
        .resolver(header_resolver())
        .build()
        .unwrap();
    async fn answers_the_problem<S, B>(app: &S)
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let req = test::TestRequest::post().uri("/refuse");
        let r = call(app, req.insert_header(("x-tenant-id", "acme")).to_request()).await;
        assert_eq!(r.status.as_u16(), 400, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json()["code"], "invalid_request");
        assert!(!r.text().contains("secret"), "{}", r.text());
        let req = get("/me").insert_header(("x-tenant-id", "acme"));
        let r = call(app, req.to_request()).await;
        assert_eq!(r.status.as_u16(), 401);
        assert_eq!(r.json()["code"], "unauthenticated");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    answers_the_problem(&app_with!(plain)).await;
    answers_the_problem(&app_with!()).await;
}

// ---------------------------------------------------------------------------------
// 13. Tenancy and configuration errors
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn tenancy_with_a_resolver_behaves_like_the_resolver() {
    let tenancy = Tenancy::builder()
        .resolver(header_resolver())
        .build()
        .unwrap();
    let app = app!(tenancy);
    call!(app, with_tenant("acme")).await.assert_ok("acme");
    call!(app, get("/source").insert_header(("x-tenant-id", "acme")))
        .await
        .assert_ok("header");
    assert_eq!(call!(app, get("/health")).await.status, 200);
    call!(app, get("/whoami"))
        .await
        .assert_problem(401, "tenant_missing");
    call!(app, with_tenant("../x"))
        .await
        .assert_problem(400, "tenant_invalid");
    call!(app, with_tenant("initech"))
        .await
        .assert_problem(403, "tenant_forbidden");
}

#[actix_web::test]
async fn tenancy_without_a_resolver_is_a_config_error() {
    let err = Tenancy::builder().build().unwrap_err();
    assert!(matches!(err, ConfigError::Missing(_)), "{err:?}");
}

/// Whether `err` is an invalid value of `setting`.
fn invalid(err: &ConfigError, setting: &str) -> bool {
    matches!(err, ConfigError::Invalid { setting: s, .. } if *s == setting)
}

#[actix_web::test]
async fn resolver_without_sources_is_a_config_error() {
    let err = builder().build().unwrap_err();
    assert_eq!(err, ConfigError::Missing("a tenant source"));
    assert_eq!(err.to_string(), "a tenant source is required");
}

#[actix_web::test]
async fn resolver_with_a_bad_header_name_is_a_config_error() {
    let err = builder()
        .source(Source::header_named("bad header"))
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { setting: "header name", value, .. } if value == "bad header"),
        "{err:?}"
    );
    let err = builder()
        .source(Source::header_named(""))
        .build()
        .unwrap_err();
    assert!(invalid(&err, "header name"), "{err:?}");
}

#[actix_web::test]
async fn resolver_with_a_bad_base_domain_is_a_config_error() {
    for bases in [
        vec![""],
        vec!["."],
        vec!["example.com", ""],
        vec!["exa mple.com"],
        vec!["example..com"],
        vec!["*.example.com"],
    ] {
        let err = builder()
            .source(Source::subdomain(bases.clone()))
            .build()
            .unwrap_err();
        assert!(invalid(&err, "base domain"), "{bases:?}: {err:?}");
    }
    let err = builder()
        .source(Source::subdomain(Vec::<String>::new()))
        .build()
        .unwrap_err();
    assert!(invalid(&err, "base domain"), "{err:?}");
}

#[actix_web::test]
async fn resolver_with_a_bad_path_prefix_is_a_config_error() {
    for prefix in ["t", "/t", "t/", "/", ""] {
        let err = builder()
            .source(Source::path_prefix(prefix))
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { setting: "path prefix", value, .. } if value == prefix),
            "{prefix:?}: {err:?}"
        );
    }
}

#[actix_web::test]
async fn resolver_with_other_mistakes_is_a_config_error() {
    let err = builder()
        .source(Source::claim())
        .source(Source::header())
        .source(Source::claim())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Duplicate { what: "source", .. }),
        "{err:?}"
    );

    let err = builder()
        .source(Source::header())
        .exempt("health")
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid exempt path "health": it must start with '/'"#
    );

    let err = builder()
        .source(Source::header())
        .exempt_prefix("public/")
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { setting: "exempt path", value, .. } if value == "public/"),
        "{err:?}"
    );

    for (a, b) in [
        (Source::header(), Source::header()),
        (Source::header(), Source::header_named("X-Tenant-Id")),
        (Source::subdomain(["a.com"]), Source::subdomain(["b.com"])),
        (Source::path_prefix("/t/"), Source::path_prefix("/u/")),
    ] {
        let err = builder().source(a).source(b).build().unwrap_err();
        assert!(
            matches!(err, ConfigError::Duplicate { what: "source", .. }),
            "{err:?}"
        );
    }
    // Different headers, and custom sources, may be combined.
    assert!(builder()
        .source(Source::header())
        .source(Source::header_named("x-org-id"))
        .source(Source::custom(|_| Ok(None)))
        .source(Source::custom(|_| Ok(None)))
        .build()
        .is_ok());

    // A numeric "top-level domain" could make IPv4 addresses name tenants.
    let err = builder()
        .source(Source::subdomain(["0.0.1"]))
        .build()
        .unwrap_err();
    assert!(invalid(&err, "base domain"), "{err:?}");
}

#[actix_web::test]
async fn ipv4_hosts_name_no_tenant() {
    let app = test::init_service(
        App::new()
            .wrap(
                builder()
                    .source(Source::subdomain(["example.com"]))
                    .allow_missing(true)
                    .build()
                    .unwrap(),
            )
            .route(
                "/",
                web::get().to(|t: Option<Tenant>| async move {
                    t.map(|t| t.id().to_string()).unwrap_or_default()
                }),
            ),
    )
    .await;
    for host in ["127.0.0.1", "127.0.0.1:8080", "10.0.0.1."] {
        let req = test::TestRequest::get()
            .uri("/")
            .insert_header(("host", host))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), 200, "{host}");
        assert_eq!(test::read_body(res).await, "", "{host}");
    }
}

/// A registry that answers every lookup with acme's record.
struct Liar(Arc<TenantRecord>);

impl TenantRegistry for Liar {
    fn lookup<'a>(
        &'a self,
        _: &'a str,
        _: &mut Moment,
    ) -> Answer<'a, Result<Lookup, RegistryError>> {
        Answer::Now(Ok(Some(Arc::clone(&self.0))))
    }
}

#[actix_web::test]
async fn a_registry_answering_with_another_tenants_record_fails_closed() {
    let liar = Liar(Arc::new(TenantRecord::new(tid("acme"), "pro")));
    let app = test::init_service(
        App::new()
            .wrap(
                TenantResolver::builder(liar)
                    .source(Source::header())
                    .build()
                    .unwrap(),
            )
            .route(
                "/whoami",
                web::get().to(|t: Tenant| async move { t.id().to_string() }),
            ),
    )
    .await;
    let ok = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(("x-tenant-id", "acme"))
        .to_request();
    assert_eq!(test::call_and_read_body(&app, ok).await, "acme");
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(("x-tenant-id", "globex"))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), 503, "never served as acme");
}
