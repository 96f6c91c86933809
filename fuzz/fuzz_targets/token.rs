//! Token checking on arbitrary text: never a panic, and nothing the key did not sign
//! verifies.
#![no_main]

use std::sync::OnceLock;

use actix_tenancy::session::{Key, KeySet, SessionConfig, SessionManager};
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;

fn sessions() -> &'static (SessionManager, tokio::runtime::Runtime) {
    static S: OnceLock<(SessionManager, tokio::runtime::Runtime)> = OnceLock::new();
    S.get_or_init(|| {
        let keys = KeySet::signing(
            Key::hmac("k1", Algorithm::HS256, b"fuzzing-key-0123456789abcdef0123").unwrap(),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (
            SessionManager::new(SessionConfig::new("iss", "aud"), keys),
            rt,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let (sessions, rt) = sessions();
    let verified = rt.block_on(sessions.verify(token));
    assert!(
        verified.is_err(),
        "a token nobody signed verified: {token:?}"
    );
});
