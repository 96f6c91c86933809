//! Client certificates (feature `tls`) over real TLS connections: a CA, a server
//! certificate and client certificates made here with `rcgen`, an actix-web rustls
//! server on an ephemeral loopback port with `capture_peer_certificate`, and a rustls
//! client speaking HTTP/1.1 by hand.

use std::{io, net::TcpListener, sync::Arc, time::Duration};

use actix_tenancy::{
    error::ConfigError,
    prelude::*,
    tls::{capture_peer_certificate, store_peer_certificate, CertificateRule, PeerCertificate},
};
use actix_web::{
    body::MessageBody,
    dev::{ServerHandle, ServiceRequest, ServiceResponse},
    middleware::{from_fn, Next},
    web, App, HttpRequest, HttpServer,
};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
    server::WebPkiClientVerifier,
    ClientConfig, RootCertStore, ServerConfig,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------

const SPIFFE_PREFIX: &str = "spiffe://example.org/tenant/";

/// A header the test authentication middleware turns into a verified principal.
const PRINCIPAL_HEADER: &str = "x-test-principal-tenant";

/// A certificate authority, made fresh for each test.
struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        Arc::new(roots)
    }

    /// A leaf certificate and its key.
    fn issue(&self, params: CertificateParams) -> Identity {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    fn server_identity(&self) -> Identity {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with these subject alternative names and common name.
    fn client(&self, sans: &[SanType], cn: Option<DnValue>) -> Identity {
        self.client_with(sans, cn, Vec::new())
    }

    fn client_with(
        &self,
        sans: &[SanType],
        cn: Option<DnValue>,
        custom_extensions: Vec<CustomExtension>,
    ) -> Identity {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans.to_vec();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Tests");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.custom_extensions = custom_extensions;
        self.issue(params)
    }
}

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn spiffe(tenant: &str) -> SanType {
    uri(&format!("{SPIFFE_PREFIX}{tenant}"))
}

// ---------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------

fn registry() -> InMemoryRegistry {
    let tid = |s: &str| TenantId::parse(s).unwrap();
    InMemoryRegistry::new()
        .with(TenantRecord::new(tid("acme"), "pro"))
        .with(TenantRecord::new(tid("globex"), "free"))
        .with(TenantRecord::new(tid("initech"), "pro").with_status(TenantStatus::Suspended))
}

/// Attaches a verified principal for the tenant in [`PRINCIPAL_HEADER`], standing in
/// for a token-verifying middleware.
async fn attach_test_principal(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let tenant = req
        .headers()
        .get(PRINCIPAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| TenantId::parse(t).ok());
    if let Some(t) = tenant {
        Principal::new("user").with_tenant(t).attach(&req);
    }
    next.call(req).await
}

/// `GET /whoami` answers `{tenant} {source}`; `GET /peer` answers the captured
/// certificate's DER length, or `none`.
async fn whoami(t: Tenant) -> String {
    format!("{} {}", t.id(), t.source())
}

async fn peer(req: HttpRequest) -> String {
    match req.conn_data::<PeerCertificate>() {
        Some(cert) => format!("{} bytes", cert.der().len()),
        None => "none".to_owned(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Tls,
    Plain,
}

struct Server {
    port: u16,
    handle: ServerHandle,
    ca: Ca,
}

/// `resolver` as the only stage of a pipeline.
fn alone(resolver: TenantResolver) -> Tenancy {
    Tenancy::builder().resolver(resolver).build().unwrap()
}

impl Server {
    /// Starts a one-worker rustls server on an ephemeral loopback port, with a fresh
    /// test CA (`server.ca`) that client certificates must chain to; with
    /// `optional_client_auth`, a client may present none.
    fn start(resolver: TenantResolver, optional_client_auth: bool) -> Self {
        Self::start_with(alone(resolver), optional_client_auth, Transport::Tls, true)
    }

    fn start_with(
        resolver: Tenancy,
        optional_client_auth: bool,
        transport: Transport,
        hook: bool,
    ) -> Self {
        let ca = Ca::new("Test CA");
        let server_id = ca.server_identity();
        let verifier = WebPkiClientVerifier::builder(ca.roots());
        let verifier = if optional_client_auth {
            verifier.allow_unauthenticated()
        } else {
            verifier
        }
        .build()
        .unwrap();
        let config = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(server_id.chain, server_id.key)
            .unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(resolver.clone())
                .wrap(from_fn(attach_test_principal))
                .route("/whoami", web::get().to(whoami))
                .route("/peer", web::get().to(peer))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1);
        if hook {
            server = server.on_connect(capture_peer_certificate);
        }
        let server = match transport {
            Transport::Tls => server.listen_rustls_0_23(listener, config),
            Transport::Plain => server.listen(listener),
        }
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { port, handle, ca }
    }

    fn with_rule(rule: CertificateRule, header_too: bool) -> Self {
        let mut builder = TenantResolver::builder(registry())
            .source(Source::claim())
            .source(Source::certificate(rule));
        if header_too {
            builder = builder.source(Source::header());
        }
        Self::start(builder.build().unwrap(), false)
    }

    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(5), self.handle.stop(false))
            .await
            .expect("the server stops in time");
    }

    /// `GET path` with `headers`, presenting `client` (or no certificate).
    async fn get(
        &self,
        client: Option<&Identity>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Reply> {
        let roots = self.ca.roots();
        let builder = ClientConfig::builder().with_root_certificates(roots);
        let config = match client {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let connector = TlsConnector::from(Arc::new(config));
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            let tls = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await?;
            exchange(tls, path, headers).await
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))?
    }

    /// `GET path` over plain TCP.
    async fn get_plain(&self, path: &str, headers: &[(&str, &str)]) -> io::Result<Reply> {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            exchange(tcp, path, headers).await
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))?
    }
}

/// One HTTP/1.1 request and its response, on a connection that then closes.
async fn exchange<S>(mut stream: S, path: &str, headers: &[(&str, &str)]) -> io::Result<Reply>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    // The server may close without a TLS close_notify; what arrived counts.
    match stream.read_to_end(&mut raw).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    Reply::parse(&raw)
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn parse(raw: &[u8]) -> io::Result<Self> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let text = std::str::from_utf8(raw).map_err(|_| bad("response is not UTF-8"))?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| bad("no head"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status"))?;
        let chunked = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        let body = if chunked {
            let mut out = String::new();
            let mut rest = body;
            loop {
                let (size, after) = rest.split_once("\r\n").ok_or_else(|| bad("chunk"))?;
                let size = usize::from_str_radix(size.trim(), 16).map_err(|_| bad("chunk"))?;
                if size == 0 {
                    break;
                }
                out.push_str(after.get(..size).ok_or_else(|| bad("chunk"))?);
                rest = after.get(size + 2..).ok_or_else(|| bad("chunk"))?;
            }
            out
        } else {
            body.to_owned()
        };
        Ok(Self { status, body })
    }

    fn assert_ok(&self, body: &str) {
        assert_eq!((self.status, self.body.as_str()), (200, body), "{self:?}");
    }

    fn assert_rejected(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let json: Value = serde_json::from_str(&self.body).expect("a problem+json body");
        assert_eq!(json["code"], code, "{self:?}");
    }
}

fn san_rule() -> CertificateRule {
    CertificateRule::san_uri_prefix(SPIFFE_PREFIX)
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[actix_web::test]
async fn san_uri_names_the_tenant() {
    let server = Server::with_rule(san_rule(), true);
    let acme = server
        .ca
        .client(&[uri("https://acme.example.com/"), spiffe("acme")], None);
    let reply = server.get(Some(&acme), "/whoami", &[]).await.unwrap();
    reply.assert_ok("acme certificate");

    let globex = server.ca.client(&[spiffe("globex")], None);
    let reply = server.get(Some(&globex), "/whoami", &[]).await.unwrap();
    reply.assert_ok("globex certificate");
    server.stop().await;
}

#[actix_web::test]
async fn subject_cn_names_the_tenant() {
    let server = Server::with_rule(CertificateRule::subject_cn(), false);
    let acme = server.ca.client(&[spiffe("globex")], Some("acme".into()));
    let reply = server.get(Some(&acme), "/whoami", &[]).await.unwrap();
    reply.assert_ok("acme certificate");

    let printable = server.ca.client(
        &[],
        Some(DnValue::PrintableString("globex".try_into().unwrap())),
    );
    let reply = server.get(Some(&printable), "/whoami", &[]).await.unwrap();
    reply.assert_ok("globex certificate");

    // One tenant, one spelling: the CN is validated, not normalised.
    for cn in ["ACME", "acme ", "acmé", "a/b", ""] {
        let id = server.ca.client(&[], Some(cn.into()));
        let reply = server.get(Some(&id), "/whoami", &[]).await.unwrap();
        reply.assert_rejected(400, "tenant_invalid");
    }

    // No CN: the source yields nothing.
    let none = server.ca.client(&[spiffe("acme")], None);
    let reply = server.get(Some(&none), "/whoami", &[]).await.unwrap();
    reply.assert_rejected(401, "tenant_missing");
    server.stop().await;
}

#[actix_web::test]
async fn a_certificate_without_a_tenant_yields_none() {
    let server = Server::with_rule(san_rule(), true);
    for sans in [
        vec![],
        vec![SanType::DnsName("acme.example.com".try_into().unwrap())],
        vec![uri("spiffe://other.org/tenant/acme")],
        vec![uri("SPIFFE://EXAMPLE.ORG/tenant/acme")],
        vec![uri("spiffe://example.org/tenants/acme")],
    ] {
        let id = server.ca.client(&sans, Some("acme".into()));
        let reply = server.get(Some(&id), "/whoami", &[]).await.unwrap();
        reply.assert_rejected(401, "tenant_missing");
        // Another source may then name the tenant.
        let reply = server
            .get(Some(&id), "/whoami", &[("x-tenant-id", "globex")])
            .await
            .unwrap();
        reply.assert_ok("globex header");
    }
    server.stop().await;
}

#[actix_web::test]
async fn a_certificate_ranks_like_a_claim() {
    let server = Server::with_rule(san_rule(), true);
    let acme = server.ca.client(&[spiffe("acme")], None);

    // An unverified header must agree with the certificate.
    let reply = server
        .get(Some(&acme), "/whoami", &[("x-tenant-id", "globex")])
        .await
        .unwrap();
    reply.assert_rejected(403, "tenant_conflict");
    let reply = server
        .get(Some(&acme), "/whoami", &[("x-tenant-id", "acme")])
        .await
        .unwrap();
    reply.assert_ok("acme certificate");

    // Two verified identities must agree too; the claim is configured first.
    let reply = server
        .get(Some(&acme), "/whoami", &[(PRINCIPAL_HEADER, "globex")])
        .await
        .unwrap();
    reply.assert_rejected(403, "tenant_conflict");
    let reply = server
        .get(Some(&acme), "/whoami", &[(PRINCIPAL_HEADER, "acme")])
        .await
        .unwrap();
    reply.assert_ok("acme claim");
    server.stop().await;
}

#[actix_web::test]
async fn hostile_san_uris_are_400_and_never_a_panic() {
    let server = Server::with_rule(san_rule(), true);
    let long = "a".repeat(65);
    let very_long = "a".repeat(4000);
    let hostile: Vec<Vec<SanType>> = vec![
        vec![spiffe("../admin")],
        vec![spiffe("..")],
        vec![spiffe("ACME")],
        vec![spiffe("a/b")],
        vec![spiffe("acme/")],
        vec![spiffe("acme?x=1")],
        vec![spiffe("acme#x")],
        vec![spiffe("")],
        vec![spiffe("%61cme")],
        vec![spiffe("ac%C3%A9me")],
        vec![spiffe(&long)],
        vec![spiffe(&very_long)],
        // Two tenants in one certificate: ambiguous.
        vec![spiffe("acme"), spiffe("globex")],
        // A malformed one next to a good one still rejects.
        vec![spiffe("acme"), spiffe("../acme")],
    ];
    for sans in &hostile {
        let id = server.ca.client(sans, None);
        let reply = server
            .get(Some(&id), "/whoami", &[("x-tenant-id", "acme")])
            .await
            .unwrap_or_else(|e| panic!("{sans:?}: {e}"));
        reply.assert_rejected(400, "tenant_invalid");
    }

    // Non-ASCII bytes in a SAN URI (an IA5String may not hold them): rcgen refuses to
    // write one, so the extension is encoded here by hand. GeneralNames is a SEQUENCE of
    // `[6] IA5String` (tag 0x86).
    let uri_bytes = "spiffe://example.org/tenant/acmé".as_bytes();
    let mut san = vec![0x86, u8::try_from(uri_bytes.len()).unwrap()];
    san.extend_from_slice(uri_bytes);
    let mut ext = vec![0x30, u8::try_from(san.len()).unwrap()];
    ext.extend(san);
    let raw = server.ca.client_with(
        &[],
        None,
        vec![CustomExtension::from_oid_content(&[2, 5, 29, 17], ext)],
    );
    // webpki does not read SAN URIs without name constraints; the source refuses it.
    let reply = server.get(Some(&raw), "/whoami", &[]).await.unwrap();
    reply.assert_rejected(400, "tenant_invalid");

    // The same tenant twice is one tenant.
    let twice = server.ca.client(&[spiffe("acme"), spiffe("acme")], None);
    let reply = server.get(Some(&twice), "/whoami", &[]).await.unwrap();
    reply.assert_ok("acme certificate");

    // The server survived all of it.
    let acme = server.ca.client(&[spiffe("acme")], None);
    let reply = server.get(Some(&acme), "/whoami", &[]).await.unwrap();
    reply.assert_ok("acme certificate");
    server.stop().await;
}

#[actix_web::test]
async fn unknown_and_suspended_tenants_are_403() {
    let server = Server::with_rule(san_rule(), false);
    for tenant in ["nobody", "initech"] {
        let id = server.ca.client(&[spiffe(tenant)], None);
        let reply = server.get(Some(&id), "/whoami", &[]).await.unwrap();
        reply.assert_rejected(403, "tenant_forbidden");
    }
    server.stop().await;
}

#[actix_web::test]
async fn a_client_without_a_certificate_gets_no_tenant_from_it() {
    // The header comes first in the configuration; the verified source still wins.
    let resolver = TenantResolver::builder(registry())
        .source(Source::header())
        .source(Source::certificate(san_rule()))
        .build()
        .unwrap();
    let server = Server::start(resolver, true);

    let reply = server.get(None, "/whoami", &[]).await.unwrap();
    reply.assert_rejected(401, "tenant_missing");
    let reply = server
        .get(None, "/whoami", &[("x-tenant-id", "acme")])
        .await
        .unwrap();
    reply.assert_ok("acme header");

    // With a certificate on the same server, the certificate speaks.
    let globex = server.ca.client(&[spiffe("globex")], None);
    let reply = server.get(Some(&globex), "/whoami", &[]).await.unwrap();
    reply.assert_ok("globex certificate");
    let reply = server
        .get(Some(&globex), "/whoami", &[("x-tenant-id", "globex")])
        .await
        .unwrap();
    reply.assert_ok("globex certificate");
    let reply = server
        .get(Some(&globex), "/whoami", &[("x-tenant-id", "acme")])
        .await
        .unwrap();
    reply.assert_rejected(403, "tenant_conflict");
    server.stop().await;
}

#[actix_web::test]
async fn handlers_read_the_captured_certificate() {
    let resolver = TenantResolver::builder(registry())
        .source(Source::certificate(san_rule()))
        .allow_missing(true)
        .build()
        .unwrap();
    let server = Server::start(resolver, true);
    let acme = server.ca.client(&[spiffe("acme")], None);
    let expected = format!("{} bytes", acme.chain[0].len());
    let reply = server.get(Some(&acme), "/peer", &[]).await.unwrap();
    reply.assert_ok(&expected);
    let reply = server.get(None, "/peer", &[]).await.unwrap();
    reply.assert_ok("none");
    server.stop().await;
}

#[actix_web::test]
async fn a_certificate_from_another_ca_never_reaches_the_source() {
    let server = Server::with_rule(san_rule(), true);
    let rogue = Ca::new("Rogue CA").client(&[spiffe("acme")], None);
    let err = server
        .get(Some(&rogue), "/whoami", &[])
        .await
        .expect_err("the handshake fails");
    assert_ne!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    // A required client certificate: no certificate, no connection.
    assert!(server.get(None, "/whoami", &[]).await.is_err());
    server.stop().await;
}

#[actix_web::test]
async fn a_custom_rule_reads_the_certificate() {
    let rule = CertificateRule::custom(|cert| {
        let names = cert
            .subject_common_names()
            .map_err(actix_tenancy::resolve::SourceError::new)?;
        match names.iter().find_map(|cn| cn.strip_prefix("tenant-")) {
            Some("evil") => Err(actix_tenancy::resolve::SourceError::new("refused")),
            found => Ok(found.map(str::to_owned)),
        }
    });
    let server = Server::with_rule(rule, false);
    let acme = server.ca.client(&[], Some("tenant-acme".into()));
    let reply = server.get(Some(&acme), "/whoami", &[]).await.unwrap();
    reply.assert_ok("acme certificate");
    let other = server.ca.client(&[], Some("acme".into()));
    let reply = server.get(Some(&other), "/whoami", &[]).await.unwrap();
    reply.assert_rejected(401, "tenant_missing");
    let evil = server.ca.client(&[], Some("tenant-evil".into()));
    let reply = server.get(Some(&evil), "/whoami", &[]).await.unwrap();
    reply.assert_rejected(400, "tenant_invalid");
    server.stop().await;
}

#[actix_web::test]
async fn a_custom_rule_that_panics_is_a_500_and_the_server_goes_on() {
    let rule = CertificateRule::custom(|cert| {
        let names = cert
            .subject_common_names()
            .map_err(actix_tenancy::resolve::SourceError::new)?;
        if names.iter().any(|cn| cn == "tenant-bug") {
            panic!("a bug in the application's rule");
        }
        Ok(names
            .iter()
            .find_map(|cn| cn.strip_prefix("tenant-"))
            .map(str::to_owned))
    });
    let server = Server::with_rule(rule, false);
    let bug = server.ca.client(&[], Some("tenant-bug".into()));
    let reply = server.get(Some(&bug), "/whoami", &[]).await.unwrap();
    reply.assert_rejected(500, "internal_error");
    let acme = server.ca.client(&[], Some("tenant-acme".into()));
    let reply = server.get(Some(&acme), "/whoami", &[]).await.unwrap();
    reply.assert_ok("acme certificate");
    server.stop().await;
}

#[actix_web::test]
async fn a_server_without_the_hook_fails_closed() {
    let reasons: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let sink = {
        let reasons = Arc::clone(&reasons);
        move |e: &actix_tenancy::observe::AuditEvent<'_>| {
            reasons.lock().unwrap().push(e.reason.to_owned())
        }
    };
    let resolver = Tenancy::builder()
        .resolver(
            TenantResolver::builder(registry())
                .source(Source::certificate(san_rule()))
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .audit(sink)
        .build()
        .unwrap();
    let server = Server::start_with(resolver, false, Transport::Tls, false);
    let acme = server.ca.client(&[spiffe("acme")], None);
    // Neither the certificate nor, silently, the header alone decides.
    for headers in [&[][..], &[("x-tenant-id", "globex")][..]] {
        let reply = server.get(Some(&acme), "/whoami", headers).await.unwrap();
        reply.assert_rejected(500, "internal_error");
    }
    // The audit log names the missing hook, for each request.
    let reasons = reasons.lock().unwrap().clone();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("on_connect(capture_peer_certificate)")),
        "{reasons:?}"
    );
    server.stop().await;
}

#[actix_web::test]
async fn plain_connections_with_the_hook_have_no_certificate() {
    let resolver = TenantResolver::builder(registry())
        .source(Source::certificate(san_rule()))
        .source(Source::header())
        .build()
        .unwrap();
    let server = Server::start_with(alone(resolver), false, Transport::Plain, true);
    let reply = server.get_plain("/whoami", &[]).await.unwrap();
    reply.assert_rejected(401, "tenant_missing");
    let reply = server
        .get_plain("/whoami", &[("x-tenant-id", "acme")])
        .await
        .unwrap();
    reply.assert_ok("acme header");
    server.stop().await;
}

#[test]
fn bad_rules_fail_at_build() {
    for prefix in [
        "",
        "spiffe://example.org/tenant",
        "tenant/",
        "spiffe://a b/",
    ] {
        let err = TenantResolver::builder(registry())
            .source(Source::certificate(CertificateRule::san_uri_prefix(prefix)))
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { setting: "SAN URI prefix", value, .. } if value == prefix),
            "{prefix:?}: {err:?}"
        );
    }
}

#[test]
fn capture_ignores_connections_that_are_not_rustls() {
    let mut data = actix_web::dev::Extensions::new();
    capture_peer_certificate(&42_u32, &mut data);
    capture_peer_certificate(&"plain", &mut data);
    assert!(data.get::<PeerCertificate>().is_none());

    let cert = PeerCertificate::from_der(b"not a certificate");
    store_peer_certificate(&mut data, Some(cert));
    assert_eq!(
        data.get::<PeerCertificate>().unwrap().der(),
        b"not a certificate"
    );
}

#[test]
fn peer_certificate_reads_names() {
    let ca = Ca::new("Test CA");
    let id = ca.client(
        &[
            spiffe("acme"),
            SanType::DnsName("x.example".try_into().unwrap()),
        ],
        Some("globex".into()),
    );
    let cert = PeerCertificate::from_der(&id.chain[0]);
    assert_eq!(cert.san_uris().unwrap(), [format!("{SPIFFE_PREFIX}acme")]);
    assert_eq!(cert.subject_common_names().unwrap(), ["globex"]);
    assert_eq!(cert.der(), &id.chain[0][..]);

    // Truncated DER: kept as an error, never a panic.
    let cut = PeerCertificate::from_der(&id.chain[0][..id.chain[0].len() / 2]);
    assert!(cut.san_uris().is_err());
    assert!(cut.subject_common_names().is_err());
}
