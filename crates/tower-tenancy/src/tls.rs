//! Client certificates (feature `tls`): the tenant from the verified peer certificate,
//! read by [`Source::certificate`](crate::Source::certificate).
//!
//! Tower has no one TLS server: the code that accepts the connection (tokio-rustls,
//! axum-server, your own hyper loop) knows the client's certificate, and hands it to
//! each request of the connection with [`attach_peer_certificate`], as a
//! [`PeerCertificate`] (tenancy-core's, parsed once per connection). The source then
//! reads the tenant from it by a [`CertificateRule`], the same rules and answers as
//! actix-tenancy's.
//!
//! A certificate is a verified identity: the source ranks with the claim source, above
//! every unverified source, and any source naming another tenant is a `403
//! tenant_conflict`. **It trusts the TLS layer**: attach only a certificate the
//! handshake verified (rustls with a client-certificate verifier such as
//! `WebPkiClientVerifier`).
//!
//! ```
//! use tower_tenancy::tls::{attach_peer_certificate, PeerCertificate};
//!
//! // Per connection, after the handshake: the verified leaf, parsed once.
//! # let leaf_der: &[u8] = &[];
//! let cert = Some(PeerCertificate::from_der(leaf_der));
//! // Per request of that connection (a `tower::util::MapRequest`, say):
//! let mut req = http::Request::new(());
//! attach_peer_certificate(req.extensions_mut(), cert.clone());
//! ```

pub use tenancy_core::resolve::{CertificateRule, PeerCertificate};

/// Gives a request what its connection's TLS layer verified: the client's leaf
/// certificate, or `None` when the connection has none (plain TCP, or a client without
/// one where the verifier allows that). Call it for every request of a connection the
/// layer serves with [`Source::certificate`](crate::Source::certificate), always: a
/// request it was not called for cannot tell "no certificate" from "not attached", and
/// is refused `500` (the audit names the missing call) rather than left to the other
/// sources.
///
/// Only attach a certificate the TLS layer has verified: the resolver trusts it.
pub fn attach_peer_certificate(extensions: &mut http::Extensions, cert: Option<PeerCertificate>) {
    extensions.insert(Attached);
    match cert {
        Some(cert) => {
            extensions.insert(cert);
        }
        None => {
            extensions.remove::<PeerCertificate>();
        }
    }
}

/// Marks a request whose connection's certificate, if any, was attached.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attached;
