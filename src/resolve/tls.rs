//! Client certificates (feature `tls`): the tenant from the verified peer certificate.
//!
//! With actix-web's rustls 0.23 server and a client-certificate verifier, the TLS
//! layer proves who the client is. This module carries that proof to the resolver:
//!
//! 1. [`capture_peer_certificate`], installed with `HttpServer::on_connect`, takes the
//!    client's leaf certificate from the rustls connection once per connection and
//!    stores it as a [`PeerCertificate`] in the connection data.
//! 2. [`Source::certificate`](crate::resolve::Source::certificate) reads it on every
//!    request of that connection and takes the tenant from it by a [`CertificateRule`]:
//!    a SAN URI under a prefix (`spiffe://example.org/tenant/acme` → `acme`), the
//!    subject common name, or your own function.
//!
//! [`PeerCertificate`] and [`CertificateRule`] are tenancy-core's
//! (`tenancy_core::resolve`, feature `x509`), re-exported: tower-tenancy reads the same
//! certificates the same way.
//!
//! A certificate is a verified identity: the source ranks with
//! [`Source::claim`](crate::resolve::Source::claim), above every unverified source, and
//! any source naming another tenant is a `403 tenant_conflict`.
//!
//! **The source trusts the TLS layer.** It never checks a signature itself: it relies on
//! rustls having verified the chain during the handshake, which is the case when the
//! server configuration uses a client-certificate verifier such as rustls'
//! `WebPkiClientVerifier`. A server that accepts any client certificate (a verifier that
//! skips verification) would let a client name any tenant.
//!
//! ```
//! use std::sync::Arc;
//! use actix_tenancy::{
//!     registry::InMemoryRegistry,
//!     tls::{capture_peer_certificate, CertificateRule},
//!     Source, Tenant, TenantResolver,
//! };
//! use actix_web::{web, App, HttpServer};
//! use rustls::{
//!     pki_types::{CertificateDer, PrivateKeyDer},
//!     server::WebPkiClientVerifier,
//!     RootCertStore, ServerConfig,
//! };
//!
//! async fn serve(
//!     client_roots: RootCertStore, // the CA that issues client certificates
//!     server_chain: Vec<CertificateDer<'static>>,
//!     server_key: PrivateKeyDer<'static>,
//! ) -> Result<(), Box<dyn std::error::Error>> {
//!     // Only certificates issued by `client_roots` get through the handshake.
//!     let verifier = WebPkiClientVerifier::builder(Arc::new(client_roots)).build()?;
//!     let config = ServerConfig::builder()
//!         .with_client_cert_verifier(verifier)
//!         .with_single_cert(server_chain, server_key)?;
//!
//!     let resolver = TenantResolver::builder(InMemoryRegistry::new())
//!         .source(Source::certificate(CertificateRule::san_uri_prefix(
//!             "spiffe://example.org/tenant/",
//!         )))
//!         .build()?;
//!
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(resolver.clone())
//!             .route("/whoami", web::get().to(|t: Tenant| async move { t.id().to_string() }))
//!     })
//!     .on_connect(capture_peer_certificate)
//!     .bind_rustls_0_23(("127.0.0.1", 8443), config)?
//!     .run()
//!     .await?;
//!     Ok(())
//! }
//! ```

use std::any::Any;

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::{dev::Extensions, rt::net::TcpStream};
pub use tenancy_core::resolve::{CertificateRule, PeerCertificate};

/// Installs the client's verified leaf certificate in the connection data; pass it to
/// `HttpServer::on_connect`.
///
/// On a rustls 0.23 connection (`actix_tls::accept::rustls_0_23::TlsStream<TcpStream>`)
/// whose client presented a certificate, it stores a [`PeerCertificate`]; on any other
/// connection (plain TCP, or a client without a certificate when the verifier allows
/// that) it records that there is none, and [`Source::certificate`] yields no tenant.
///
/// rustls only completes a handshake whose client certificate its verifier accepted, so
/// the certificate captured here is a verified one, provided the server configuration
/// verifies client certificates (see the [module docs](self)).
///
/// Without this hook, [`Source::certificate`] cannot tell "no certificate" from "not
/// captured", so it fails closed: every request is a `500` and the audit log names the
/// missing hook, rather than letting the other sources decide alone.
///
/// Handlers can read the certificate too: `req.conn_data::<PeerCertificate>()`.
///
/// [`Source::certificate`]: crate::resolve::Source::certificate
pub fn capture_peer_certificate(conn: &dyn Any, data: &mut Extensions) {
    let leaf = conn
        .downcast_ref::<TlsStream<TcpStream>>()
        .and_then(|stream| stream.get_ref().1.peer_certificates())
        .and_then(<[_]>::first)
        .map(|leaf| PeerCertificate::from_der(leaf.as_ref()));
    store_peer_certificate(data, leaf);
}

/// Stores what your own `on_connect` hook found (for a transport
/// [`capture_peer_certificate`] does not know): the client's verified leaf certificate,
/// or `None` when the connection has none. Call it once per connection, always, so that
/// [`Source::certificate`] knows the hook ran.
///
/// Only pass a certificate the TLS layer has verified: the resolver trusts it.
///
/// [`Source::certificate`]: crate::resolve::Source::certificate
pub fn store_peer_certificate(data: &mut Extensions, cert: Option<PeerCertificate>) {
    data.insert(Captured);
    if let Some(cert) = cert {
        data.insert(cert);
    }
}

/// Marks a connection whose certificate, if any, was captured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Captured;
