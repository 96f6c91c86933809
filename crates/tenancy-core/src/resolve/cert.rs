//! Client certificates (feature `x509`): the tenant from a verified peer certificate.
//!
//! A [`PeerCertificate`] is the client's leaf certificate as the TLS layer verified it,
//! parsed once per connection; a [`CertificateRule`] says which part of it names the
//! tenant (a SAN URI under a prefix, the subject common name, or your function), and
//! [`certificate_tenant`] is what a certificate source decides. Each adapter carries
//! the certificate from its TLS layer to the request (actix-tenancy's
//! `tls::capture_peer_certificate`, tower-tenancy's `tls::attach_peer_certificate`).
//!
//! A certificate is a verified identity: the source ranks with the claim source, above
//! every unverified source, and any source naming another tenant is a `403
//! tenant_conflict`.
//!
//! **The source trusts the TLS layer.** It never checks a signature itself: it relies
//! on the TLS layer having verified the chain during the handshake (rustls with a
//! client-certificate verifier such as `WebPkiClientVerifier`). A server that accepts
//! any client certificate would let a client name any tenant.

use std::{borrow::Cow, fmt, sync::Arc};

use x509_cert::{
    der::{
        asn1::{Ia5StringRef, ObjectIdentifier, PrintableStringRef, Utf8StringRef},
        Decode, Tag, Tagged,
    },
    ext::pkix::{name::GeneralName, SubjectAltName},
    Certificate,
};

use super::{check, invalid, SourceResult};
use crate::{
    error::{ConfigError, TenancyError},
    SourceKind, TenantIdRule,
};

/// The common name attribute (`2.5.4.3`).
const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// The subject alternative name extension (`2.5.29.17`).
const OID_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// The most names of one kind read from a certificate; more is refused as malformed.
const MAX_NAMES: usize = 64;

/// A client's leaf certificate, as its TLS layer verified it: its DER bytes and the
/// names read from it, parsed once per connection.
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
    /// Use it only with a certificate the TLS layer has verified: the resolver trusts
    /// it.
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

/// Which part of a client certificate names the tenant; give it to an adapter's
/// `Source::certificate`.
///
/// Whatever the rule reads is then validated by the resolver's
/// [`TenantIdRule`](crate::TenantIdRule), like every source's answer: ids are never
/// normalised, so `ACME` is a `400`, not `acme`.
#[derive(Clone)]
pub struct CertificateRule(Result<RuleImp, ConfigError>);

#[derive(Clone)]
enum RuleImp {
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
    /// use tenancy_core::resolve::{CertificateRule, SourceError};
    ///
    /// // `CN=tenant-acme` → `acme`; other names yield nothing.
    /// let rule = CertificateRule::custom(|cert| {
    ///     let names = cert.subject_common_names().map_err(SourceError::new)?;
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

impl CertificateRule {
    /// The rule, or the mistake in it (an adapter's `Source::certificate` refuses the
    /// configuration when built).
    pub fn checked(self) -> Result<Self, ConfigError> {
        match self.0 {
            Ok(imp) => Ok(Self(Ok(imp))),
            Err(e) => Err(e),
        }
    }

    /// The raw tenant the rule reads from `cert`, not yet validated; `Err` with a
    /// reason for the logs when the certificate is malformed or ambiguous (or the
    /// rule itself is one [`checked`](Self::checked) refuses).
    pub fn tenant<'a>(
        &self,
        cert: &'a PeerCertificate,
    ) -> Result<Option<Cow<'a, str>>, Cow<'static, str>> {
        match &self.0 {
            Ok(imp) => imp.tenant(cert),
            Err(_) => Err("an invalid certificate rule".into()),
        }
    }
}

/// What a certificate source decides for a request: the tenant `rule` reads from the
/// request's verified `cert` (checked against the id `id_rule`), nothing when the
/// connection has no certificate, `400 tenant_invalid` for a certificate that is
/// malformed or ambiguous, and `500` when a rule of your own panics.
pub fn certificate_tenant<'a>(
    cert: Option<&'a PeerCertificate>,
    rule: &CertificateRule,
    kind: SourceKind,
    id_rule: &TenantIdRule,
) -> Result<Option<Cow<'a, str>>, TenancyError> {
    let Some(cert) = cert else { return Ok(None) };
    // A rule of your own is the application's code: a panic in it is a `500`. The
    // built-in rules read the names parsed when the connection came.
    let read = match &rule.0 {
        Ok(RuleImp::Custom(_)) => crate::caught("CertificateRule::custom", || rule.tenant(cert))
            .ok_or(TenancyError::Panicked("a certificate rule panicked"))?,
        _ => rule.tenant(cert),
    };
    match read {
        Ok(Some(raw)) => check(kind, id_rule, raw).map(Some),
        Ok(None) => Ok(None),
        Err(reason) => Err(invalid(kind, reason)),
    }
}

impl RuleImp {
    /// The raw tenant the rule reads from `cert`, not yet validated; `Err` with a reason
    /// for the logs when the certificate is malformed or ambiguous.
    fn tenant<'a>(
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
            let rule = CertificateRule::subject_cn();
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
        rule.tenant(cert)
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
    fn a_rule_that_panics_is_an_answer() {
        let rule = CertificateRule::custom(|_| panic!("a rule bug"));
        let cert = with_names(&[], &["acme"]);
        let got = certificate_tenant(
            Some(&cert),
            &rule,
            SourceKind::Certificate,
            &TenantIdRule::Default,
        );
        assert!(matches!(got, Err(TenancyError::Panicked(_))), "{got:?}");
        let none = certificate_tenant(None, &rule, SourceKind::Certificate, &TenantIdRule::Default);
        assert!(matches!(none, Ok(None)));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(
            CertificateRule::san_uri_prefix("spiffe://example.org/tenant/")
                .checked()
                .is_ok()
        );
        for bad in [
            "",
            "/",
            "spiffe://example.org/tenant",
            "spiffe://ex ample/",
            "tenant/",
        ] {
            assert!(
                CertificateRule::san_uri_prefix(bad).checked().is_err(),
                "{bad:?}"
            );
        }
    }
}
