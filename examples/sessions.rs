// Login → token → tenant-scoped call, with JWT sessions (feature `jwt`).
//
//     cargo run --example sessions --features jwt
//     curl -s localhost:8080/login -H 'content-type: application/json' \
//          -d '{"tenant":"acme","username":"ada","password":"lovelace"}'
//     curl -s localhost:8080/notes -H "Authorization: Bearer $ACCESS_TOKEN"
//     curl -s localhost:8080/refresh -H 'content-type: application/json' \
//          -d "{\"refresh_token\":\"$REFRESH_TOKEN\"}"
//     curl -s -X POST localhost:8080/logout -H "Authorization: Bearer $ACCESS_TOKEN"
//
// The token names the tenant; the resolver's claim source makes it win, so an
// `X-Tenant-ID` naming another tenant is a 403. Set `SESSION_SECRET` (32+ bytes) in
// real use; `tests/sessions_example.rs` runs this flow against these routes.

use actix_tenancy::{
    prelude::*,
    session::{Grant, Key, KeySet, SessionConfig, SessionError, SessionManager, TenantAuth},
};
use actix_web::{web, App, HttpResponse, HttpServer};
use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// The demo's users: (tenant, username, password). A real service checks a password
/// hash in its user store.
const USERS: [(&str, &str, &str); 2] = [("acme", "ada", "lovelace"), ("globex", "hank", "scorpio")];

/// The session manager: HS256 with `SESSION_SECRET` (at least 32 bytes), or a
/// development secret, with a warning.
pub fn sessions() -> Result<SessionManager, Box<dyn std::error::Error>> {
    let secret = std::env::var("SESSION_SECRET").unwrap_or_else(|_| {
        eprintln!(
            "warning: SESSION_SECRET is not set: tokens are signed with a development \
             secret anyone can read in this file"
        );
        "development-only-secret-change-me-0123456789".to_owned()
    });
    let key = Key::hmac("dev-1", Algorithm::HS256, secret.as_bytes())?;
    Ok(SessionManager::new(
        SessionConfig::new("https://auth.example.com", "notes-api"),
        KeySet::signing(key)?,
    ))
}

/// Authentication, then resolution from the token's tenant claim (or a header, which
/// must agree); `/login` and `/refresh` need neither.
pub fn tenancy(sessions: &SessionManager) -> Result<Tenancy, Box<dyn std::error::Error>> {
    let registry = InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme")?, "pro"))
        .with(TenantRecord::new(TenantId::parse("globex")?, "free"));
    Ok(Tenancy::builder()
        .auth(TenantAuth::new(sessions.clone()))
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::claim())
                .source(Source::header())
                .exempt("/login")
                .exempt("/refresh")
                .build()?,
        )
        .build()?)
}

#[derive(Deserialize)]
struct Login {
    tenant: String,
    username: String,
    password: String,
}

/// The answer to every failed login or refresh: one problem+json `401`, no hint which
/// part was wrong.
fn invalid_grant() -> TenancyError {
    TenancyError::Unauthenticated {
        reason: "invalid credentials".into(),
    }
}

/// JSON ending in a newline, so a shell prompt after `curl` starts on its own line.
fn json(value: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(value.to_string() + "\n")
}

async fn login(
    sessions: web::Data<SessionManager>,
    body: web::Json<Login>,
) -> Result<HttpResponse, TenancyError> {
    let known = USERS
        .iter()
        .any(|(t, u, p)| *t == body.tenant && *u == body.username && *p == body.password);
    let tenant = TenantId::parse(&body.tenant);
    match (known, tenant) {
        (true, Ok(tenant)) => {
            match sessions.issue(&tenant, &body.username, Grant::new().scopes(["notes:read"])) {
                Ok(pair) => serde_json::to_value(pair)
                    .map(json)
                    .map_err(|_| TenancyError::Misconfigured("a token pair did not serialise")),
                Err(_) => Err(TenancyError::Misconfigured("the session key cannot sign")),
            }
        }
        _ => Err(invalid_grant()),
    }
}

#[derive(Deserialize)]
struct Refresh {
    refresh_token: String,
}

async fn refresh(
    sessions: web::Data<SessionManager>,
    body: web::Json<Refresh>,
) -> Result<HttpResponse, TenancyError> {
    match sessions.refresh(&body.refresh_token).await {
        Ok(pair) => serde_json::to_value(pair)
            .map(json)
            .map_err(|_| TenancyError::Misconfigured("a token pair did not serialise")),
        Err(SessionError::Store(e)) => Err(TenancyError::AuthUnavailable {
            reason: e.to_string().into(),
        }),
        Err(_) => Err(invalid_grant()),
    }
}

async fn notes(tenant: Tenant, user: Principal) -> HttpResponse {
    json(serde_json::json!({
        "tenant": tenant.id(),
        "user": user.subject(),
        "notes": [format!("{}'s first note", tenant.id())],
    }))
}

async fn logout(sessions: web::Data<SessionManager>, user: Principal) -> HttpResponse {
    // By jti; a token without one would revoke its subject's sessions in the tenant.
    match sessions.logout(&user).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

/// The routes; the app data must hold the `SessionManager`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::post().to(login))
        .route("/refresh", web::post().to(refresh))
        .route("/notes", web::get().to(notes))
        .route("/logout", web::post().to(logout));
}

#[actix_web::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sessions = sessions()?;
    let tenancy = tenancy(&sessions)?;
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(sessions.clone()))
            .wrap(tenancy.clone())
            .configure(routes)
    })
    .bind(&addr)
    .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    for bound in server.addrs() {
        println!("sessions example listening on http://{bound}");
    }
    server.run().await?;
    Ok(())
}
