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

use std::{any::Any, borrow::Cow, fmt, sync::Arc};

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::{dev::Extensions, rt::net::TcpStream};
use x509_cert::{
    der::{
        asn1::{Ia5StringRef, ObjectIdentifier, PrintableStringRef, Utf8StringRef},
        Decode, Tag, Tagged,
    },
    ext::pkix::{name::GeneralName, SubjectAltName},
    Certificate,
};

use super::SourceResult;
use crate::core::error::ConfigError;

/// The common name attribute (`2.5.4.3`).
const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// The subject alternative name extension (`2.5.29.17`).
const OID_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// The most names of one kind read from a certificate; more is refused as malformed.
const MAX_NAMES: usize = 64;

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

/// A client's leaf certificate, as captured by [`capture_peer_certificate`]: its DER
/// bytes and the names read from it, parsed once per connection.
///
/// Cloning is a reference-count increment.
#[derive(Clone)]
pub struct PeerCertificate(Arc<Parsed>);

struct Parsed {
    der: Box<[u8]>,
    san_uris: Result<Vec<String>, &'static str>,
    common_names: Result<Vec<String>, &'static str>,
}

impl fmt::Debug for PeerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCertificate")
            .field("der_len", &self.0.der.len())
            .field("san_uris", &self.0.san_uris)
            .field("common_names", &self.0.common_names)
            .finish()
    }
}

impl PeerCertificate {
    /// Reads the certificate in `der`. Never fails: what cannot be parsed is kept as an
    /// error, and a [`CertificateRule`] that needs that part rejects the request
    /// (`400 tenant_invalid`).
    ///
    /// Use it in your own `on_connect` hook (for another transport) only with a
    /// certificate the TLS layer has verified: the resolver trusts it.
    pub fn from_der(der: &[u8]) -> Self {
        let (san_uris, common_names) = match Certificate::from_der(der) {
            Ok(cert) => (read_san_uris(&cert), read_common_names(&cert)),
            Err(_) => {
                let err = "the certificate is not valid DER";
                (Err(err), Err(err))
            }
        };
        Self(Arc::new(Parsed {
            der: der.into(),
            san_uris,
            common_names,
        }))
    }

    /// The certificate's DER bytes, for your own parsing.
    pub fn der(&self) -> &[u8] {
        &self.0.der
    }

    /// The URIs among the subject alternative names, in certificate order; `Err` when
    /// the extension could not be read.
    pub fn san_uris(&self) -> Result<&[String], &'static str> {
        self.0.san_uris.as_deref().map_err(|e| *e)
    }

    /// The common names (`CN`) of the subject, in certificate order; `Err` when the
    /// subject could not be read.
    pub fn subject_common_names(&self) -> Result<&[String], &'static str> {
        self.0.common_names.as_deref().map_err(|e| *e)
    }
}

fn read_san_uris(cert: &Certificate) -> Result<Vec<String>, &'static str> {
    let mut sans = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == OID_SUBJECT_ALT_NAME);
    let Some(ext) = sans.next() else {
        return Ok(Vec::new());
    };
    if sans.next().is_some() {
        return Err("more than one subject alternative name extension");
    }
    let names = SubjectAltName::from_der(ext.extn_value.as_bytes())
        .map_err(|_| "malformed subject alternative names")?;
    let uris: Vec<String> = names
        .0
        .iter()
        .filter_map(|n| match n {
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.as_str().to_owned()),
            _ => None,
        })
        .collect();
    if uris.len() > MAX_NAMES {
        return Err("too many SAN URIs");
    }
    Ok(uris)
}

fn read_common_names(cert: &Certificate) -> Result<Vec<String>, &'static str> {
    let mut names = Vec::new();
    for rdn in &cert.tbs_certificate.subject.0 {
        for atv in rdn.0.iter().filter(|a| a.oid == OID_COMMON_NAME) {
            let value = &atv.value;
            let text = match value.tag() {
                Tag::Utf8String => value.decode_as::<Utf8StringRef<'_>>().map(|s| s.as_str()),
                Tag::PrintableString => value
                    .decode_as::<PrintableStringRef<'_>>()
                    .map(|s| s.as_str()),
                Tag::Ia5String => value.decode_as::<Ia5StringRef<'_>>().map(|s| s.as_str()),
                _ => return Err("a common name of an unsupported string type"),
            }
            .map_err(|_| "a malformed common name")?;
            if names.len() == MAX_NAMES {
                return Err("too many common names");
            }
            names.push(text.to_owned());
        }
    }
    Ok(names)
}

type CustomRule = Arc<dyn Fn(&PeerCertificate) -> SourceResult + Send + Sync>;

/// Which part of a client certificate names the tenant; give it to
/// [`Source::certificate`](crate::resolve::Source::certificate).
///
/// Whatever the rule reads is then validated by the resolver's
/// [`TenantIdRule`](crate::TenantIdRule), like every source's answer: ids are never
/// normalised, so `ACME` is a `400`, not `acme`.
#[derive(Clone)]
pub struct CertificateRule(pub(crate) Result<RuleImp, ConfigError>);

#[derive(Clone)]
pub(crate) enum RuleImp {
    SanUriPrefix(String),
    SubjectCn,
    Custom(CustomRule),
}

impl fmt::Debug for CertificateRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ok(RuleImp::SanUriPrefix(p)) => f.debug_tuple("SanUriPrefix").field(p).finish(),
            Ok(RuleImp::SubjectCn) => f.write_str("SubjectCn"),
            Ok(RuleImp::Custom(_)) => f.write_str("Custom"),
            Err(e) => f.debug_tuple("Invalid").field(e).finish(),
        }
    }
}

impl CertificateRule {
    /// The tenant is the rest of a subject-alternative-name URI that starts with
    /// `prefix`: with `"spiffe://example.org/tenant/"`,
    /// `spiffe://example.org/tenant/acme` → `acme`.
    ///
    /// `prefix` must be visible ASCII, contain `:` and end with `/`; it is compared byte
    /// for byte (no case folding, no percent-decoding). URIs that do not start with it
    /// are ignored; a certificate with none yields no tenant. The rest must be exactly
    /// one path segment (`.../tenant/acme/x`, `?` and `#` are a `400`), and when several
    /// URIs match they must all name the same tenant, or the request is a
    /// `400 tenant_invalid`: the certificate is ambiguous, and a guess would be a
    /// silent choice between two identities.
    pub fn san_uri_prefix(prefix: &str) -> Self {
        let ok = prefix.contains(':')
            && prefix.ends_with('/')
            && prefix.bytes().all(|b| b.is_ascii_graphic());
        Self(if ok {
            Ok(RuleImp::SanUriPrefix(prefix.to_owned()))
        } else {
            Err(ConfigError::invalid(
                "SAN URI prefix",
                prefix,
                "it must be visible ASCII, contain ':' and end with '/'",
            ))
        })
    }

    /// The tenant is the subject's common name (`CN=acme`). A subject without one
    /// yields no tenant; several different common names are a `400`.
    pub fn subject_cn() -> Self {
        Self(Ok(RuleImp::SubjectCn))
    }

    /// Your function over the certificate: `Ok(Some(id))`, `Ok(None)` when it names no
    /// tenant, `Err` to reject the request (`400`). Parse [`PeerCertificate::der`] with
    /// the X.509 library of your choice, or use the names already read.
    ///
    /// ```
    /// use actix_tenancy::tls::CertificateRule;
    ///
    /// // `CN=tenant-acme` → `acme`; other names yield nothing.
    /// let rule = CertificateRule::custom(|cert| {
    ///     let names = cert.subject_common_names().map_err(actix_tenancy::resolve::SourceError::new)?;
    ///     Ok(names.iter().find_map(|cn| cn.strip_prefix("tenant-")).map(str::to_owned))
    /// });
    /// ```
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&PeerCertificate) -> SourceResult + Send + Sync + 'static,
    {
        Self(Ok(RuleImp::Custom(Arc::new(f))))
    }
}

impl RuleImp {
    /// The raw tenant the rule reads from `cert`, not yet validated; `Err` with a reason
    /// for the logs when the certificate is malformed or ambiguous.
    pub(crate) fn tenant<'a>(
        &self,
        cert: &'a PeerCertificate,
    ) -> Result<Option<Cow<'a, str>>, Cow<'static, str>> {
        match self {
            RuleImp::SanUriPrefix(prefix) => {
                let mut found: Option<&'a str> = None;
                for uri in cert.san_uris()? {
                    let Some(rest) = uri.strip_prefix(prefix.as_str()) else {
                        continue;
                    };
                    if rest.is_empty() || rest.contains(['/', '?', '#']) {
                        return Err("a SAN URI's tenant is not exactly one path segment".into());
                    }
                    match found {
                        Some(f) if f != rest => {
                            return Err("the certificate names more than one tenant".into())
                        }
                        _ => found = Some(rest),
                    }
                }
                Ok(found.map(Cow::Borrowed))
            }
            RuleImp::SubjectCn => match cert.subject_common_names()? {
                [] => Ok(None),
                [first, rest @ ..] if rest.iter().all(|cn| cn == first) => {
                    Ok(Some(Cow::Borrowed(first.as_str())))
                }
                _ => Err("the certificate has several different common names".into()),
            },
            RuleImp::Custom(f) => match f(cert) {
                Ok(id) => Ok(id.map(Cow::Owned)),
                Err(e) => Err(e.to_string().into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_kept_as_an_error_not_a_panic() {
        for der in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x01", &[0xff; 300]] {
            let cert = PeerCertificate::from_der(der);
            assert!(cert.san_uris().is_err());
            assert!(cert.subject_common_names().is_err());
            let rule = CertificateRule::subject_cn().0.unwrap();
            assert!(rule.tenant(&cert).is_err());
        }
    }

    fn with_names(san_uris: &[&str], common_names: &[&str]) -> PeerCertificate {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        PeerCertificate(Arc::new(Parsed {
            der: Box::default(),
            san_uris: Ok(own(san_uris)),
            common_names: Ok(own(common_names)),
        }))
    }

    fn read(rule: CertificateRule, cert: &PeerCertificate) -> Result<Option<String>, String> {
        rule.0
            .unwrap()
            .tenant(cert)
            .map(|t| t.map(Cow::into_owned))
            .map_err(Cow::into_owned)
    }

    #[test]
    fn several_common_names_must_agree() {
        let cn = CertificateRule::subject_cn;
        assert_eq!(read(cn(), &with_names(&[], &[])), Ok(None));
        let same = with_names(&[], &["acme", "acme"]);
        assert_eq!(read(cn(), &same), Ok(Some("acme".to_owned())));
        assert!(read(cn(), &with_names(&[], &["acme", "globex"])).is_err());
    }

    #[test]
    fn san_uris_must_agree_and_be_one_segment() {
        let san = || CertificateRule::san_uri_prefix("spiffe://e.org/t/");
        let cert = with_names(&["https://x/", "spiffe://e.org/t/acme"], &["globex"]);
        assert_eq!(read(san(), &cert), Ok(Some("acme".to_owned())));
        assert_eq!(
            read(san(), &with_names(&["spiffe://e.org/tx/acme"], &[])),
            Ok(None)
        );
        for bad in [
            &["spiffe://e.org/t/"][..],
            &["spiffe://e.org/t/a/b"],
            &["spiffe://e.org/t/a?b"],
            &["spiffe://e.org/t/a#b"],
            &["spiffe://e.org/t/acme", "spiffe://e.org/t/globex"],
        ] {
            assert!(read(san(), &with_names(bad, &[])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(
            CertificateRule::san_uri_prefix("spiffe://example.org/tenant/")
                .0
                .is_ok()
        );
        for bad in [
            "",
            "/",
            "spiffe://example.org/tenant",
            "spiffe://ex ample/",
            "tenant/",
        ] {
            assert!(CertificateRule::san_uri_prefix(bad).0.is_err(), "{bad:?}");
        }
    }
}
