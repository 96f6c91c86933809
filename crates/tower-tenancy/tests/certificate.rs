//! The certificate source on the Tower side (feature `tls`): the tenant from the
//! client certificate attached to the request, the same rules and answers as
//! actix-tenancy's `Source::certificate` (whose own tests run a real TLS server).

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt as _;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use tenancy_core::{registry::InMemoryRegistry, TenantId, TenantRecord};
use tower::ServiceExt as _;
use tower_tenancy::{
    tls::{attach_peer_certificate, CertificateRule, PeerCertificate},
    Source, TenancyLayer, Tenant,
};

/// A certificate with these SAN URIs and common name, as the handshake would leave it.
fn cert(uris: &[&str], cn: Option<&str>) -> PeerCertificate {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    let key = KeyPair::generate().unwrap();
    PeerCertificate::from_der(params.self_signed(&key).unwrap().der())
}

fn router(rule: CertificateRule) -> Router {
    let registry = InMemoryRegistry::new()
        .with(TenantRecord::new(TenantId::parse("acme").unwrap(), "pro"))
        .with(TenantRecord::new(
            TenantId::parse("globex").unwrap(),
            "free",
        ));
    Router::new()
        .route(
            "/whoami",
            get(|t: Tenant| async move { format!("{} {}", t.id(), t.source().as_str()) }),
        )
        .layer(
            TenancyLayer::builder(registry)
                .source(Source::header())
                .source(Source::certificate(rule))
                .build()
                .unwrap(),
        )
}

/// The request, its certificate attached (`Some(None)`: attached, none), the header.
async fn ask(
    app: &Router,
    attached: Option<Option<PeerCertificate>>,
    header: Option<&str>,
) -> (u16, String) {
    let mut req = Request::builder().uri("/whoami");
    if let Some(h) = header {
        req = req.header("x-tenant-id", h);
    }
    let mut req = req.body(Body::empty()).unwrap();
    if let Some(cert) = attached {
        attach_peer_certificate(req.extensions_mut(), cert);
    }
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_tenant_comes_from_the_verified_certificate_and_outranks_a_header() {
    let spiffe = |t: &str| format!("spiffe://example.org/tenant/{t}");
    let app = router(CertificateRule::san_uri_prefix(
        "spiffe://example.org/tenant/",
    ));
    let acme = cert(&[&spiffe("acme")], Some("globex"));
    for (name, attached, header, status, needle) in [
        (
            "by its SAN URI",
            Some(Some(acme.clone())),
            None,
            200,
            "acme certificate",
        ),
        (
            "the header agrees",
            Some(Some(acme.clone())),
            Some("acme"),
            200,
            "acme certificate",
        ),
        // A verified identity wins; a header naming another tenant is a conflict.
        (
            "the header disagrees",
            Some(Some(acme.clone())),
            Some("globex"),
            403,
            "tenant_conflict",
        ),
        // No certificate on the connection: the other sources decide.
        (
            "no certificate",
            Some(None),
            Some("globex"),
            200,
            "globex header",
        ),
        ("nothing at all", Some(None), None, 401, "tenant_missing"),
        // Never attached: fail closed, not left to the header.
        ("not attached", None, Some("globex"), 500, "internal_error"),
        // Ambiguous or malformed certificates are refused.
        (
            "two tenants",
            Some(Some(cert(&[&spiffe("acme"), &spiffe("globex")], None))),
            None,
            400,
            "tenant_invalid",
        ),
        (
            "two segments",
            Some(Some(cert(&[&spiffe("acme/x")], None))),
            None,
            400,
            "tenant_invalid",
        ),
        (
            "not DER",
            Some(Some(PeerCertificate::from_der(b"\x30\x03"))),
            None,
            400,
            "tenant_invalid",
        ),
        // An id the rule refuses, and one the registry does not know.
        (
            "a bad id",
            Some(Some(cert(&[&spiffe("ACME")], None))),
            None,
            400,
            "tenant_invalid",
        ),
        (
            "unknown",
            Some(Some(cert(&[&spiffe("nobody")], None))),
            None,
            403,
            "tenant_forbidden",
        ),
    ] {
        let (got, body) = ask(&app, attached, header).await;
        assert_eq!(got, status, "{name}: {body}");
        assert!(body.contains(needle), "{name}: {body}");
    }

    let by_cn = router(CertificateRule::subject_cn());
    let (status, body) = ask(&by_cn, Some(Some(acme)), None).await;
    assert_eq!((status, body.as_str()), (200, "globex certificate"));
}

#[tokio::test]
async fn a_bad_rule_is_refused_when_built_and_a_panicking_one_is_a_500() {
    let bad = TenancyLayer::builder(InMemoryRegistry::new())
        .source(Source::certificate(CertificateRule::san_uri_prefix(
            "tenant/",
        )))
        .build();
    assert!(bad.is_err());
    let panics = router(CertificateRule::custom(|_| panic!("a rule bug")));
    let (status, body) = ask(&panics, Some(Some(cert(&[], Some("acme")))), None).await;
    assert_eq!(status, 500, "{body}");
}
