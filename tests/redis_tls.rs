//! The Redis backends over TLS (features `redis-tls` and `jwt`), against a
//! `redis-server` of the test's own with a certificate from a CA made here: the
//! quota and the revocation store through an `App` on a client trusting that CA,
//! and a client that does not trust it, or speaks plain TCP to the TLS port, fails
//! closed. Skipped without `redis-server`, except under `CI=true`.

use std::{net::TcpListener, process::Child, time::Duration};

use actix_tenancy::Moment;
use actix_tenancy::{
    prelude::*,
    quota::{QuotaManager, QuotaPlan, QuotaPlans, RedisQuota, TenantQuota},
    session::{Grant, Key, KeySet, RedisRevocations, SessionConfig, SessionManager, TenantAuth},
};
use actix_web::{http::header, test, web, App};
use jsonwebtoken::Algorithm;

#[allow(dead_code, unreachable_pub)]
mod common {
    pub mod services;
}

/// A TLS-only `redis-server` on a free loopback port, stopped when dropped.
struct TlsRedis {
    port: u16,
    ca_pem: String,
    child: Child,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsRedis {
    fn start() -> Option<Self> {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "tenancy test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let server_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let server_cert = params.signed_by(&server_key, &issuer).unwrap();

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // One directory per server: tests run side by side.
        let dir =
            std::env::temp_dir().join(format!("tenancy-redis-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        let write = |name: &str, pem: String| {
            let path = dir.0.join(name);
            std::fs::write(&path, pem).unwrap();
            path.to_string_lossy().into_owned()
        };
        let ca_pem = ca_cert.pem();
        let (cert, key, ca_file) = (
            write("server.pem", server_cert.pem()),
            write("server.key", server_key.serialize_pem()),
            write("ca.pem", ca_pem.clone()),
        );
        let port_arg = port.to_string();
        let child = common::services::spawn_redis(
            &[
                "--port",
                "0",
                "--tls-port",
                &port_arg,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca_file,
                "--tls-auth-clients",
                "no",
            ],
            port,
        )?;
        Some(Self {
            port,
            ca_pem,
            child,
            _dir: dir,
        })
    }

    /// A connection that trusts the test's CA.
    async fn trusted(&self) -> redis::aio::ConnectionManager {
        let client = redis::Client::build_with_tls(
            format!("rediss://127.0.0.1:{}", self.port),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(self.ca_pem.clone().into_bytes()),
            },
        )
        .unwrap();
        redis::aio::ConnectionManager::new(client).await.unwrap()
    }
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn plans() -> QuotaPlans {
    QuotaPlans::builder()
        .tier("pro", QuotaPlan::per_minute(2))
        .build()
        .unwrap()
}

#[actix_web::test]
async fn the_quota_and_the_revocations_work_over_tls() {
    let Some(server) = TlsRedis::start() else {
        return;
    };
    let conn = server.trusted().await;
    let store = RedisRevocations::with_connection(conn.clone(), "tls:rev:", Duration::from_secs(2));
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, &[5u8; 32]).unwrap()).unwrap();
    let sessions =
        SessionManager::new(SessionConfig::new("https://auth.test", "api"), keys).with_store(store);
    let quota = RedisQuota::with_connection(conn, plans())
        .prefix("tls:quota")
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let registry = InMemoryRegistry::new().with(TenantRecord::new(acme(), "pro"));
    let tenancy = Tenancy::builder()
        .auth(TenantAuth::new(sessions.clone()))
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::claim())
                .build()
                .unwrap(),
        )
        .quota(TenantQuota::new(quota))
        .build()
        .unwrap();
    let app = test::init_service(App::new().wrap(tenancy).route(
        "/me",
        web::get().to(|t: Tenant| async move { t.id().to_string() }),
    ))
    .await;
    let me = |token: &str| {
        test::TestRequest::get()
            .uri("/me")
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
            .to_request()
    };
    let pair = sessions.issue(&acme(), "user-1", Grant::new()).unwrap();
    for _ in 0..2 {
        assert_eq!(
            test::call_service(&app, me(&pair.access_token))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        test::call_service(&app, me(&pair.access_token))
            .await
            .status(),
        429,
        "the burst is counted in the TLS Redis"
    );
    let other = sessions.issue(&acme(), "user-2", Grant::new()).unwrap();
    sessions.revoke_subject(&acme(), "user-2").await.unwrap();
    assert_eq!(
        test::call_service(&app, me(&other.access_token))
            .await
            .status(),
        401
    );
}

#[actix_web::test]
async fn an_untrusted_certificate_or_plain_tcp_fails_closed() {
    let Some(server) = TlsRedis::start() else {
        return;
    };
    let tenant = TenantContext::new(
        acme(),
        actix_tenancy::resolve::SourceKind::Header,
        std::sync::Arc::new(TenantRecord::new(acme(), "pro")),
        None,
    );
    // The system's roots do not hold the test's CA; plain TCP to the TLS port is no
    // Redis at all. Both are a failure, never a pass.
    for url in [
        format!("rediss://127.0.0.1:{}", server.port),
        format!("redis://127.0.0.1:{}", server.port),
    ] {
        let quota = RedisQuota::builder(url.as_str(), plans())
            .prefix("tls:untrusted")
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let answer = quota.check(&tenant, 1, &mut Moment::now()).await;
        assert!(answer.is_err(), "{url}: must fail closed, was {answer:?}");
    }
    // And the trusted client still gets through, so the failures above were the trust.
    let mut conn = server.trusted().await;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}
