//! Certificate names from arbitrary DER: never a panic; names are bounded.
#![no_main]

use actix_tenancy::tls::PeerCertificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cert = PeerCertificate::from_der(data);
    if let Ok(uris) = cert.san_uris() {
        assert!(uris.len() <= 64);
    }
    if let Ok(names) = cert.subject_common_names() {
        assert!(names.len() <= 64);
    }
});
