//! Tokens from a real OpenID provider (feature `oidc`): `tests/oidc/provider.mjs`
//! (oauth2-mock-server, pinned) runs as its own process on loopback, one per provider
//! a test needs. Tokens come from its token endpoint, its keys from discovery and its
//! JWKS endpoint; the test rotates, withdraws and counts through its `/_test/` routes.
//!
//! They run when `OIDC_PROVIDER_SCRIPT` names the script (`.ci/run` sets it after
//! `npm ci` in `tests/oidc`); under `CI=true` a provider that does not start fails.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use actix_tenancy::{
    prelude::*,
    session::{
        oidc::{Binding, RemoteKeys, TenantIssuers},
        SessionConfig, SessionManager, TenantAuth,
    },
};
use actix_web::{dev::Service, test, web, App, HttpResponse};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
    pub mod stack;
}

/// One provider process; killed when dropped.
struct Provider {
    child: Child,
    issuer: String,
    port: u16,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    /// A new provider, or `None` (the test skips) without `OIDC_PROVIDER_SCRIPT`.
    fn start(kid_prefix: &str) -> Option<Self> {
        let script = common::services::service_url("OIDC_PROVIDER_SCRIPT")?;
        let mut child = Command::new("node")
            .arg(&script)
            .env("PORT", "0")
            .env("KID_PREFIX", kid_prefix)
            .env("EXIT_ON_STDIN_CLOSE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {script}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the provider did not start ({e}): {line:?}"));
        let issuer = ready["issuer"].as_str().unwrap().to_owned();
        let port = issuer.rsplit(':').next().unwrap().parse().unwrap();
        Some(Self {
            child,
            issuer,
            port,
        })
    }

    /// One HTTP/1.1 exchange with the provider: the status and the JSON body.
    async fn call(&self, method: &str, target: &str, form: &str) -> (u16, Value) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            self.port,
            form.len()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let status = text[9..12].parse().unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        // The library may answer chunked; its JSON bodies are one chunk.
        let json = body
            .find('{')
            .and_then(|start| body.rfind('}').map(|end| &body[start..=end]))
            .unwrap_or("null");
        (status, serde_json::from_str(json).unwrap_or(Value::Null))
    }

    /// A token from the token endpoint (client credentials) with these form fields.
    async fn token(&self, fields: &str) -> String {
        let form = format!("grant_type=client_credentials&{fields}");
        let (status, body) = self.call("POST", "/token", &form).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn rotate(&self) -> String {
        let (_, body) = self.call("POST", "/_test/rotate", "").await;
        body["kid"].as_str().unwrap().to_owned()
    }

    async fn withdraw(&self, kid: &str) {
        let (status, _) = self
            .call("POST", &format!("/_test/withdraw?kid={kid}"), "")
            .await;
        assert_eq!(status, 200);
    }

    /// How many JWKS requests the provider has served.
    async fn jwks_fetches(&self) -> u64 {
        let (_, body) = self.call("GET", "/_test/stats", "").await;
        body["jwks"].as_u64().unwrap()
    }

    /// Stops the process (the port closes).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry() -> InMemoryRegistry {
    InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
        .with(TenantRecord::new(
            TenantId::parse("globex").unwrap(),
            "free",
        ))
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// An app whose one route answers the resolved tenant, behind `sessions`.
macro_rules! app {
    ($sessions:expr) => {
        app!(registry(), $sessions)
    };
    ($registry:expr, $sessions:expr $(, $audit:expr)?) => {
        test::init_service(
            App::new()
                .wrap(
                    common::stack::on_claim($registry)
                        .auth(TenantAuth::new($sessions))
                        $(.audit($audit))?
                        .build()
                        .unwrap(),
                )
                .route(
                    "/whoami",
                    web::get()
                        .to(|t: Tenant| async move { HttpResponse::Ok().body(t.id().to_string()) }),
                ),
        )
        .await
    };
}

async fn get<S, B>(app: &S, token: &str) -> (u16, String)
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(("Authorization", format!("Bearer {token}")))
        .to_request();
    let res = test::call_service(app, req).await;
    let status = res.status().as_u16();
    let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    (status, body)
}

/// Short timings, so that a test sees a cooldown end.
fn keys(issuer: &str) -> actix_tenancy::session::oidc::RemoteKeysBuilder {
    RemoteKeys::issuer(issuer)
        .cooldown(Duration::from_millis(300))
        .timeouts(Duration::from_secs(2), Duration::from_secs(3))
        .allow_plain_loopback(true)
}

/// `p`'s keys, fetched, and sessions verifying its tokens for audience `api`.
async fn remote_sessions(p: &Provider) -> (RemoteKeys, SessionManager) {
    let remote = keys(&p.issuer).fetch().await.unwrap();
    let config = SessionConfig::new(&p.issuer, "api");
    let sessions = SessionManager::remote(config, remote.clone()).unwrap();
    (remote, sessions)
}

#[actix_web::test]
async fn a_provider_token_passes_and_rotation_needs_one_refetch() {
    let Some(p) = Provider::start("k") else {
        return;
    };
    let (remote, sessions) = remote_sessions(&p).await;
    let app = app!(sessions);

    let old = p.token("tenant=acme&aud=api").await;
    assert_eq!(get(&app, &old).await, (200, "acme".into()));
    // Another audience, a token without jti, a tenant not in the registry.
    assert_eq!(
        get(&app, &p.token("tenant=acme&aud=other").await).await.0,
        401
    );
    assert_eq!(
        get(&app, &p.token("tenant=acme&aud=api&no_jti=1").await)
            .await
            .0,
        401
    );
    assert_eq!(
        get(&app, &p.token("tenant=nobody&aud=api").await).await.0,
        403
    );

    // Rotation: new tokens carry the new kid; after the startup fetch's cooldown, one
    // refetch finds it, and the old key, still published, still verifies.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fetched = p.jwks_fetches().await;
    let new_kid = p.rotate().await;
    let new = p.token("tenant=acme&aud=api").await;
    assert_eq!(kid_of(&new), new_kid);
    assert_eq!(get(&app, &new).await, (200, "acme".into()));
    assert_eq!(p.jwks_fetches().await, fetched + 1, "one refetch");
    assert_eq!(get(&app, &old).await.0, 200);
    let again = p.token("tenant=acme&aud=api").await;
    assert_eq!(get(&app, &again).await.0, 200);
    assert_eq!(p.jwks_fetches().await, fetched + 1, "the new set is held");
    assert_eq!(remote.keys().unwrap().len(), 2);

    // Withdrawn: the old key's tokens fail after the next refresh.
    p.withdraw(&kid_of(&old)).await;
    remote.refresh_now().await.unwrap();
    assert_eq!(get(&app, &old).await.0, 401);
    assert_eq!(get(&app, &new).await.0, 200);
}

#[actix_web::test]
async fn the_refresh_task_drops_a_withdrawn_key_on_its_own() {
    let Some(p) = Provider::start("k") else {
        return;
    };
    // The provider's Cache-Control sets the refresh interval (kept within the bounds).
    p.call("POST", "/_test/cache-control?value=max-age%3D1", "")
        .await;
    let remote = keys(&p.issuer)
        .refresh_bounds(Duration::from_millis(500), Duration::from_secs(5))
        .fetch()
        .await
        .unwrap();
    let sessions = SessionManager::remote(SessionConfig::new(&p.issuer, "api"), remote).unwrap();
    let app = app!(sessions);
    let old = p.token("tenant=acme&aud=api").await;
    p.rotate().await;
    let new = p.token("tenant=acme&aud=api").await;
    assert_eq!(get(&app, &old).await.0, 200);
    assert_eq!(get(&app, &new).await.0, 200);
    let fetched = p.jwks_fetches().await;
    p.withdraw(&kid_of(&old)).await;
    // No request causes it: the task refreshes after max-age (1 s).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(p.jwks_fetches().await > fetched, "the task refreshed");
    assert_eq!(get(&app, &old).await.0, 401, "withdrawn after the refresh");
    assert_eq!(get(&app, &new).await.0, 200);
}

#[actix_web::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown() {
    let Some(p) = Provider::start("k") else {
        return;
    };
    let remote = keys(&p.issuer)
        .cooldown(Duration::from_secs(30))
        .fetch()
        .await
        .unwrap();
    let sessions = SessionManager::remote(SessionConfig::new(&p.issuer, "api"), remote).unwrap();
    let app = app!(sessions);
    let genuine = p.token("tenant=acme&aud=api").await;
    let before = p.jwks_fetches().await;
    // A genuine token's header and body with a random kid each time: all unknown.
    let (_, rest) = genuine.split_once('.').unwrap();
    let mut answers = Vec::new();
    for i in 0..200 {
        let header = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"forged-{i}"}}"#);
        let forged = format!("{}.{rest}", b64(header.as_bytes()));
        answers.push(get(&app, &forged).await.0);
    }
    assert!(answers.iter().all(|s| *s == 401), "{answers:?}");
    let fetched = p.jwks_fetches().await - before;
    assert!(
        fetched <= 1,
        "{fetched} fetches for 200 unknown kids in one cooldown"
    );
    // The genuine token never needed a fetch.
    assert_eq!(get(&app, &genuine).await.0, 200);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[actix_web::test]
async fn a_stopped_provider_keeps_held_keys_and_refuses_new_kids() {
    let Some(mut p) = Provider::start("k") else {
        return;
    };
    let (remote, sessions) = remote_sessions(&p).await;
    let app = app!(sessions);
    let held = p.token("tenant=acme&aud=api").await;
    p.rotate().await;
    let unseen = p.token("tenant=acme&aud=api").await;
    p.stop();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        get(&app, &held).await,
        (200, "acme".into()),
        "held keys keep working"
    );
    // The refetch fails: the unknown kid is refused as an invalid token.
    assert_eq!(get(&app, &unseen).await.0, 401);
    assert!(remote.refresh_now().await.is_err());
    assert_eq!(
        get(&app, &held).await.0,
        200,
        "a failed refresh keeps the set"
    );
}

#[actix_web::test]
async fn started_without_keys_answers_503_until_they_arrive() {
    // Nothing listens on this port: `start` returns, every token is 503.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let issuer = format!("http://127.0.0.1:{port}");
    let remote = keys(&issuer).start().unwrap();
    let sessions = SessionManager::remote(SessionConfig::new(&issuer, "api"), remote).unwrap();
    let app = app!(sessions);
    let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4In0.c2ln";
    assert_eq!(get(&app, token).await.0, 503);
    // Discovery's issuer must be the configured one.
    assert!(matches!(
        SessionManager::remote(
            SessionConfig::new("https://other.example.com", "api"),
            keys(&issuer).start().unwrap()
        ),
        Err(actix_tenancy::error::ConfigError::Conflict(_))
    ));
}

#[actix_web::test]
async fn two_tenants_on_two_providers_and_the_cross_tenant_token_is_refused_and_audited() {
    let Some(a) = Provider::start("a") else {
        return;
    };
    let Some(b) = Provider::start("b") else {
        return;
    };
    let issuers = TenantIssuers::map()
        .bind(TenantId::parse("acme").unwrap(), Binding::new(&a.issuer))
        .bind(
            TenantId::parse("globex").unwrap(),
            Binding::new(&b.issuer).audience("globex-api"),
        )
        .keys(keys);
    let sessions = SessionManager::tenant_issuers(SessionConfig::new("unused", "api"), issuers);
    let direct = sessions.clone();
    let audited = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&audited);
    let app = app!(
        registry(),
        sessions,
        move |e: &actix_tenancy::observe::AuditEvent<'_>| {
            let line = format!("{:?} {:?} {}", e.stage, e.outcome, e.reason);
            sink.lock().unwrap().push(line);
        }
    );

    // Each tenant's own provider; the first request of each waits for discovery.
    assert_eq!(
        get(&app, &a.token("tenant=acme&aud=api").await).await,
        (200, "acme".into())
    );
    let g = b.token("tenant=globex&aud=globex-api").await;
    assert_eq!(get(&app, &g).await, (200, "globex".into()));
    // globex's binding names its own audience: the configuration's is not enough.
    assert_eq!(
        get(&app, &b.token("tenant=globex&aud=api").await).await.0,
        401
    );

    // acme's provider signs a token naming globex: valid, wrong tenant. Answered as an
    // unknown or suspended tenant is; audited as a cross-tenant token.
    let cross = a.token("tenant=globex&aud=api").await;
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(("Authorization", format!("Bearer {cross}")))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status().as_u16(), 403);
    let body: Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(body["code"], "tenant_forbidden");
    assert!(
        !body.to_string().contains("issuer"),
        "no detail for the client"
    );
    let conflicts: Vec<String> = audited
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("cross-tenant"))
        .cloned()
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert!(conflicts[0].contains("TenantForbidden"), "{conflicts:?}");
    assert!(
        conflicts[0].contains("authentication")
            && conflicts[0].contains("identity provider of the tenant"),
        "{conflicts:?}"
    );
    // A jti is unique per issuer only: the principal's token id names its issuer, so
    // one tenant's provider cannot name (or log out) another tenant's token.
    let p = direct.verify(&g).await.unwrap();
    assert!(
        p.token_id().unwrap().starts_with(&format!("{}#", b.issuer)),
        "{:?}",
        p.token_id()
    );
    // A tenant bound to no provider is no different.
    assert_eq!(
        get(&app, &a.token("tenant=initech&aud=api").await).await.0,
        403
    );
    // A token whose iss is no bound provider's is not verified at all: 401.
    let stranger = a
        .token(&format!(
            "tenant=acme&aud=api&extra={}",
            urlencode(r#"{"iss":"https://evil.example"}"#)
        ))
        .await;
    assert_eq!(get(&app, &stranger).await.0, 401);
}

#[actix_web::test]
async fn per_tenant_providers_from_registry_records() {
    let Some(a) = Provider::start("a") else {
        return;
    };
    let registry = Arc::new(
        InMemoryRegistry::new()
            .with(
                TenantRecord::new(TenantId::parse("acme").unwrap(), "pro").with_attribute(
                    "oidc",
                    serde_json::json!({"issuer": a.issuer, "audience": "api"}),
                ),
            )
            .with(TenantRecord::new(
                TenantId::parse("globex").unwrap(),
                "free",
            )),
    );
    let records = Arc::clone(&registry);
    let issuers = TenantIssuers::registry(registry.clone(), "oidc").keys(keys);
    let sessions = SessionManager::tenant_issuers(SessionConfig::new("unused", "api"), issuers);
    let app = app!(registry, sessions);
    let token = a.token("tenant=acme&aud=api").await;
    assert_eq!(get(&app, &token).await, (200, "acme".into()));
    assert_eq!(get(&app, &token).await, (200, "acme".into()), "cached");
    // The record's binding changes: the cached token is checked again, and refused.
    let moved = serde_json::json!({"issuer": a.issuer, "audience": "api2"});
    records.insert(
        TenantRecord::new(TenantId::parse("acme").unwrap(), "pro").with_attribute("oidc", moved),
    );
    assert_eq!(
        get(&app, &token).await.0,
        401,
        "the cache follows the binding"
    );
    assert_eq!(
        get(&app, &a.token("tenant=acme&aud=api2").await).await.0,
        200
    );
    // globex has no provider in its record: acme's (held) provider cannot vouch for
    // it, and its valid token naming globex is refused as an unknown tenant is.
    let cross = a.token("tenant=globex&aud=api2").await;
    assert_eq!(get(&app, &cross).await.0, 403);
    // A token for the audience acme's binding no longer takes is no valid token of
    // that provider any more: a plain 401, whatever tenant it names.
    let stale = a.token("tenant=globex&aud=api").await;
    assert_eq!(get(&app, &stale).await.0, 401);
}

/// A registry that hangs or panics, for the per-tenant provider lookups.
struct Broken {
    panic: bool,
}

impl actix_tenancy::registry::TenantRegistry for Broken {
    fn lookup<'a>(
        &'a self,
        _: &'a str,
        _: &mut actix_tenancy::Moment,
    ) -> actix_tenancy::Answer<
        'a,
        Result<actix_tenancy::registry::Lookup, actix_tenancy::registry::RegistryError>,
    > {
        assert!(!self.panic, "a registry bug");
        actix_tenancy::Answer::later(std::future::pending())
    }
}

/// A token of the right shape naming `tenant`, from `iss`, with a signature no key
/// makes: enough to reach the provider lookup.
fn forged(tenant: &str, iss: &str) -> String {
    let header = b64(br#"{"alg":"RS256","kid":"k1"}"#);
    let body = serde_json::json!({"iss": iss, "sub": "x", "aud": "api", "tenant_id": tenant});
    format!("{header}.{}.c2ln", b64(body.to_string().as_bytes()))
}

#[actix_web::test]
async fn a_registry_that_hangs_or_panics_is_503_in_time() {
    for panic in [false, true] {
        let registry: Arc<dyn actix_tenancy::registry::TenantRegistry> = Arc::new(Broken { panic });
        let issuers =
            TenantIssuers::registry(registry, "oidc").registry_timeout(Duration::from_millis(100));
        let sessions = SessionManager::tenant_issuers(SessionConfig::new("unused", "api"), issuers);
        let app = app!(sessions);
        let answer = tokio::time::timeout(
            Duration::from_secs(3),
            get(&app, &forged("acme", "https://sso.example.com")),
        )
        .await
        .expect("answered in time");
        assert_eq!(answer.0, 503, "panic: {panic}");
    }
}

#[actix_web::test]
async fn a_flood_naming_many_tenants_cannot_evict_providers_in_use() {
    // Three tenants, each with its own provider; none answers (closed ports), which
    // does not matter here: only how many are held.
    let mut registry = InMemoryRegistry::new();
    let mut bound = Vec::new();
    for t in ["t0", "t1", "t2"] {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
        drop(closed);
        registry = registry.with(
            TenantRecord::new(TenantId::parse(t).unwrap(), "free")
                .with_attribute("oidc", issuer.as_str()),
        );
        bound.push(issuer);
    }
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&made);
    let issuers = TenantIssuers::registry(Arc::new(registry), "oidc")
        .keys(move |issuer| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            keys(issuer)
        })
        .max_providers(2);
    let sessions = SessionManager::tenant_issuers(SessionConfig::new("unused", "api"), issuers);
    let app = app!(sessions);
    for round in 0..10 {
        for (t, issuer) in ["t0", "t1", "t2"].iter().zip(&bound) {
            let status = get(&app, &forged(t, issuer)).await.0;
            assert_eq!(status, 503, "round {round}, {t}: no keys, or no slot");
        }
    }
    assert_eq!(
        made.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "t2 never evicts t0 or t1"
    );
}

#[actix_web::test]
async fn a_provider_that_never_answers_is_503_within_the_key_timeout() {
    // Connections are accepted (the backlog) and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", silent.local_addr().unwrap());
    let remote = keys(&issuer).start().unwrap();
    let sessions = SessionManager::remote(SessionConfig::new(&issuer, "api"), remote).unwrap();
    let auth = TenantAuth::builder(sessions)
        .key_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(
                common::stack::on_claim(registry())
                    .auth(auth)
                    .build()
                    .unwrap(),
            )
            .route("/whoami", web::get().to(|| async { "unreachable" })),
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(get(&app, &forged("acme", &issuer)).await.0, 503);
    // The key timeout (200 ms) answers, not the fetch's own (3 s).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

/// The answer the client sees, every byte of it that could tell two refusals apart:
/// status, headers (sorted), body.
async fn answer<S, B>(app: &S, token: &str) -> (u16, Vec<(String, String)>, String)
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(("Authorization", format!("Bearer {token}")))
        .to_request();
    let res = test::call_service(app, req).await;
    let status = res.status().as_u16();
    let mut headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    headers.sort();
    let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    (status, headers, body)
}

/// A genuine token with its signature replaced: the right shape, issuer, tenant and
/// `kid`, signed by nobody.
fn resigned(token: &str) -> String {
    let (signed, _) = token.rsplit_once('.').unwrap();
    format!("{signed}.{}", b64(&[7u8; 256]))
}

/// A genuine token's header and claims under another `kid`.
fn rekeyed(token: &str, kid: &str) -> String {
    let (_, rest) = token.split_once('.').unwrap();
    let header = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#);
    format!("{}.{rest}", b64(header.as_bytes()))
}

#[actix_web::test]
async fn refresh_all_now_takes_a_rotation_and_a_withdrawal_at_once() {
    let Some(a) = Provider::start("a") else {
        return;
    };
    let Some(mut b) = Provider::start("b") else {
        return;
    };
    // A long cooldown: no token may cause a refetch during the test.
    let issuers = Arc::new(
        TenantIssuers::map()
            .bind(TenantId::parse("acme").unwrap(), Binding::new(&a.issuer))
            .bind(TenantId::parse("globex").unwrap(), Binding::new(&b.issuer))
            .keys(|issuer| keys(issuer).cooldown(Duration::from_secs(60))),
    );
    assert_eq!(issuers.refresh_all_now().await, Ok(0), "nothing held yet");
    let sessions =
        SessionManager::tenant_issuers(SessionConfig::new("unused", "api"), Arc::clone(&issuers));
    let app = app!(sessions);
    let old_a = a.token("tenant=acme&aud=api").await;
    let old_b = b.token("tenant=globex&aud=api").await;
    assert_eq!(get(&app, &old_a).await, (200, "acme".into()));
    assert_eq!(get(&app, &old_b).await, (200, "globex".into()));
    // An unknown kid uses up each provider's one refetch of the cooldown (if the
    // first fetch did not already).
    assert_eq!(get(&app, &rekeyed(&old_a, "unknown")).await.0, 401);
    assert_eq!(get(&app, &rekeyed(&old_b, "unknown")).await.0, 401);

    // Both rotate; A withdraws its old key (it leaked). Until the keys are fetched
    // again, the new keys are unknown and the withdrawn one still verifies.
    a.rotate().await;
    b.rotate().await;
    a.withdraw(&kid_of(&old_a)).await;
    let new_a = a.token("tenant=acme&aud=api").await;
    let new_b = b.token("tenant=globex&aud=api").await;
    assert_eq!(get(&app, &new_a).await.0, 401, "in the cooldown");
    assert_eq!(get(&app, &new_b).await.0, 401, "in the cooldown");
    assert_eq!(get(&app, &old_a).await.0, 200, "not refreshed yet");

    assert_eq!(issuers.refresh_all_now().await, Ok(2));
    assert_eq!(get(&app, &new_a).await, (200, "acme".into()));
    assert_eq!(get(&app, &new_b).await, (200, "globex".into()));
    assert_eq!(get(&app, &old_a).await.0, 401, "withdrawn: refused at once");
    assert_eq!(get(&app, &old_b).await.0, 200, "still published");

    // A provider that cannot be reached is named; the others are refreshed, and the
    // unreachable one keeps its keys.
    b.stop();
    let failed = issuers.refresh_all_now().await.unwrap_err();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, b.issuer);
    assert_eq!(
        get(&app, &a.token("tenant=acme&aud=api").await).await.0,
        200
    );
    assert_eq!(
        get(&app, &new_b).await.0,
        200,
        "B's last good keys are kept"
    );
}

#[actix_web::test]
async fn tokens_that_do_not_verify_cannot_hold_provider_slots() {
    let (Some(a), Some(b), Some(c)) = (
        Provider::start("a"),
        Provider::start("b"),
        Provider::start("c"),
    ) else {
        return;
    };
    let mut registry = InMemoryRegistry::new();
    for (t, p) in [("t0", &a), ("t1", &b), ("t2", &c)] {
        registry = registry.with(
            TenantRecord::new(TenantId::parse(t).unwrap(), "free")
                .with_attribute("oidc", p.issuer.as_str()),
        );
    }
    let registry = Arc::new(registry);
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&made);
    let idle = Duration::from_millis(500);
    let issuers = Arc::new(
        TenantIssuers::registry(registry.clone(), "oidc")
            .keys(move |issuer| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                keys(issuer)
            })
            .max_providers(2)
            .idle_after(idle),
    );
    let sessions =
        SessionManager::tenant_issuers(SessionConfig::new("unused", "api"), Arc::clone(&issuers));
    let app = app!(registry, sessions);

    // t0 and t1 take the two slots with valid tokens.
    let t0 = a.token("tenant=t0&aud=api").await;
    let t1 = b.token("tenant=t1&aud=api").await;
    assert_eq!(get(&app, &t0).await, (200, "t0".into()));
    assert_eq!(get(&app, &t1).await, (200, "t1".into()));
    assert_eq!(issuers.held(), 2);

    // Then only forged tokens naming t0 and t1 (their issuers, their kids or unknown
    // ones, signed by nobody), for three idle periods, the last just before t2 comes.
    let forged = [
        resigned(&t0),
        resigned(&t1),
        rekeyed(&t0, "forged"),
        rekeyed(&t1, "forged"),
    ];
    let flood_until = std::time::Instant::now() + idle * 3;
    let mut sent = 0;
    while std::time::Instant::now() < flood_until {
        for token in &forged {
            assert_eq!(get(&app, token).await.0, 401);
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(sent >= 40, "{sent} forged tokens");

    // Neither provider verified a token for longer than the idle time: t2's valid
    // token gets a slot.
    let t2 = c.token("tenant=t2&aud=api").await;
    assert_eq!(get(&app, &t2).await, (200, "t2".into()));
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(issuers.held(), 2);

    // A token that verifies does keep its provider: t1 (held) verifies a new token,
    // t2 just did, so t0 (evicted, the least recently used) finds no idle slot.
    assert_eq!(
        get(&app, &b.token("tenant=t1&aud=api").await).await,
        (200, "t1".into())
    );
    assert_eq!(get(&app, &a.token("tenant=t0&aud=api").await).await.0, 503);
    // Once they have been idle for the idle time, it does.
    tokio::time::sleep(idle + Duration::from_millis(100)).await;
    assert_eq!(
        get(&app, &a.token("tenant=t0&aud=api").await).await,
        (200, "t0".into())
    );
}

#[actix_web::test]
async fn a_trusted_issuers_token_cannot_tell_unknown_from_suspended_tenants() {
    let Some(a) = Provider::start("a") else {
        return;
    };
    let Some(b) = Provider::start("b") else {
        return;
    };
    // acme (active) and initech (suspended) trust A, and so does soylent (suspended)
    // for its own audience; globex (active, its own audience) and umbrella (suspended)
    // trust B; hooli has a record and no provider; nobody has no record.
    let bindings = [
        ("acme", Binding::new(&a.issuer), TenantStatus::Active),
        ("initech", Binding::new(&a.issuer), TenantStatus::Suspended),
        (
            "soylent",
            Binding::new(&a.issuer).audience("soylent-api"),
            TenantStatus::Suspended,
        ),
        (
            "globex",
            Binding::new(&b.issuer).audience("globex-api"),
            TenantStatus::Active,
        ),
        ("umbrella", Binding::new(&b.issuer), TenantStatus::Suspended),
    ];
    for from_registry in [false, true] {
        let mut registry = InMemoryRegistry::new()
            .with(TenantRecord::new(TenantId::parse("hooli").unwrap(), "free"));
        let mut issuers = TenantIssuers::map();
        for (id, binding, status) in &bindings {
            let id = TenantId::parse(id).unwrap();
            let mut record = TenantRecord::new(id.clone(), "pro").with_status(*status);
            if from_registry {
                let audience = binding.audiences().first().cloned();
                record = record.with_attribute(
                    "oidc",
                    serde_json::json!({"issuer": binding.issuer(), "audience": audience.unwrap_or_else(|| "api".into())}),
                );
            } else {
                issuers = issuers.bind(id, binding.clone());
            }
            registry = registry.with(record);
        }
        let registry = Arc::new(registry);
        if from_registry {
            issuers = TenantIssuers::registry(registry.clone(), "oidc");
        }
        let sessions =
            SessionManager::tenant_issuers(SessionConfig::new("unused", "api"), issuers.keys(keys));
        let audited = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&audited);
        let app = app!(
            registry,
            sessions,
            move |e: &actix_tenancy::observe::AuditEvent<'_>| {
                let line = format!("{:?} {:?} {}", e.stage, e.outcome, e.reason);
                sink.lock().unwrap().push(line);
            }
        );
        let mode = if from_registry { "registry" } else { "map" };

        // A's own tenant passes (with registry bindings this is also what makes A's
        // keys held, and A trusted).
        let acme = a.token("tenant=acme&aud=api").await;
        assert_eq!(get(&app, &acme).await, (200, "acme".into()), "{mode}");

        // The suspended tenant bound to A, refused by the resolver: the reference.
        let suspended = answer(&app, &a.token("tenant=initech&aud=api").await).await;
        assert_eq!(suspended.0, 403, "{mode}");
        assert!(
            suspended.2.contains("tenant_forbidden"),
            "{mode}: {suspended:?}"
        );
        // The same token naming anything else: A's tenant that takes another audience
        // (suspended), an id no tenant has, a tenant without a provider, B's tenants
        // (active or suspended); and a token for that other audience of A's naming
        // its tenant (suspended), A's other suspended tenant, an unknown id. Every
        // byte the same.
        let probes = [
            ("soylent", "api"),
            ("soylent", "soylent-api"),
            ("initech", "soylent-api"),
            ("nobody", "soylent-api"),
            ("nobody", "api"),
            ("hooli", "api"),
            ("globex", "api"),
            ("umbrella", "api"),
        ];
        for (other, aud) in probes {
            let token = a.token(&format!("tenant={other}&aud={aud}")).await;
            assert_eq!(
                answer(&app, &token).await,
                suspended,
                "{mode}: {other} (aud {aud}) must look like a suspended tenant"
            );
        }
        // Operators still tell them apart.
        let lines = audited.lock().unwrap().clone();
        let reasons = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(reasons("tenant is suspended"), 2, "{mode}: {lines:#?}");
        assert_eq!(
            reasons("bound to no identity provider"),
            3,
            "{mode}: {lines:#?}"
        );
        assert_eq!(
            reasons("is not the identity provider"),
            2,
            "{mode}: {lines:#?}"
        );
        assert_eq!(
            reasons("for an audience of its identity provider"),
            2,
            "{mode}: {lines:#?}"
        );
        assert_eq!(reasons("TenantConflict"), 0, "{mode}: {lines:#?}");
        assert_eq!(reasons("TenantForbidden"), 9, "{mode}: {lines:#?}");

        // Nothing is a cross-tenant token unless it is a valid token: another audience,
        // expired, or signed by nobody is a plain 401, whatever tenant it names, and it
        // is not audited as cross-tenant.
        audited.lock().unwrap().clear();
        for other in ["initech", "soylent", "nobody", "globex"] {
            let tokens = [
                a.token(&format!("tenant={other}&aud=elsewhere")).await,
                a.token(&format!("tenant={other}&aud=api&expires_in=-3600"))
                    .await,
                resigned(&a.token(&format!("tenant={other}&aud=api")).await),
            ];
            for token in tokens {
                assert_eq!(get(&app, &token).await.0, 401, "{mode}: {other}");
            }
        }
        let lines = audited.lock().unwrap().clone();
        assert!(
            lines
                .iter()
                .all(|l| l.contains("Unauthenticated") && !l.contains("cross-tenant")),
            "{mode}: {lines:#?}"
        );
        // globex's audience is valid for B's tokens only: A's token for it is 401.
        for other in ["nobody", "soylent", "globex"] {
            let token = a.token(&format!("tenant={other}&aud=globex-api")).await;
            assert_eq!(get(&app, &token).await.0, 401, "{mode}: {other}");
        }
    }
}
