//! What the manager's unit tests share: sessions on an HMAC key and a fake clock, and
//! tokens minted by hand.

use std::{
    sync::Mutex,
    time::{Duration, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::{SessionConfig, SessionError, SessionManager};
use crate::FakeClock;
use crate::{
    session::{Consumed, Key, KeySet, Revocation, RevocationError, RevocationStore, TokenFacts},
    Answer, TenantId,
};

pub(super) const ISS: &str = "https://auth.test";
pub(super) const AUD: &str = "api";
pub(super) const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-unit";
/// When every test starts, in unix seconds.
pub(super) const T0: u64 = 1_800_000_000;

/// The configuration every test starts from: [`ISS`], [`AUD`], the defaults.
pub(super) fn config() -> SessionConfig {
    SessionConfig::new(ISS, AUD)
}

/// Sessions under `config` that sign with the HMAC key `k1`, on a fake clock at
/// [`T0`] (the time returned moves it).
pub(super) fn sessions(config: SessionConfig) -> (SessionManager, FakeClock) {
    let time = FakeClock::starting_at(UNIX_EPOCH + Duration::from_secs(T0));
    let key = Key::hmac("k1", Algorithm::HS256, SECRET).unwrap();
    let config = config.clock(time.clock());
    (
        SessionManager::new(config, KeySet::signing(key).unwrap()),
        time,
    )
}

pub(super) fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// The claims of a good access token of acme's `u1`, issued at [`T0`] for ten
/// minutes, with `patch` applied (a `null` removes the claim).
pub(super) fn claims(patch: Value) -> Value {
    let mut claims = json!({
        "iss": ISS, "aud": AUD, "sub": "u1", "tenant_id": "acme",
        "iat": T0, "nbf": T0, "exp": T0 + 600, "jti": "j1",
    });
    for (name, value) in patch.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// `claims` signed with [`SECRET`] under the kid `k1`.
pub(super) fn mint(claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

/// The claims a token carries, read without checking it.
pub(super) fn claims_of(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token).unwrap()
}

/// Why `result` is [`SessionError::Invalid`]; a panic for anything else.
pub(super) fn reason<T: std::fmt::Debug>(result: Result<T, SessionError>) -> String {
    match result {
        Err(SessionError::Invalid(why)) => why.into_owned(),
        other => panic!("not an invalid token: {other:?}"),
    }
}

/// A revocation store that records what it is told and revokes nothing; or, `down`,
/// one that cannot answer.
#[derive(Debug, Default)]
pub(super) struct Recorder {
    pub(super) down: bool,
    /// Each revocation (as `Debug` prints it) and its `until`.
    pub(super) revoked: Mutex<Vec<(String, u64)>>,
}

impl Recorder {
    fn answer<T>(&self, value: T) -> Result<T, RevocationError> {
        if self.down {
            Err(RevocationError::new("down"))
        } else {
            Ok(value)
        }
    }
}

impl RevocationStore for Recorder {
    fn revoke<'a>(
        &'a self,
        what: Revocation<'a>,
        until: u64,
    ) -> Answer<'a, Result<(), RevocationError>> {
        Answer::Now(self.answer(()).map(|()| {
            self.revoked
                .lock()
                .unwrap()
                .push((format!("{what:?}"), until));
        }))
    }

    fn is_revoked<'a>(
        &'a self,
        _: &'a TokenFacts<'_>,
    ) -> Answer<'a, Result<bool, RevocationError>> {
        Answer::Now(self.answer(false))
    }

    fn consume<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: u64,
    ) -> Answer<'a, Result<Consumed, RevocationError>> {
        Answer::Now(self.answer(Consumed::First))
    }
}
