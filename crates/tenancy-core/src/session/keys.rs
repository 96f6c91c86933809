//! Signing and verification keys, each pinned to one algorithm and named by `kid`.

use std::{collections::HashMap, fmt, str::FromStr, sync::Arc};

use jsonwebtoken::{
    jwk::{JwkSet, PublicKeyUse},
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header,
};

/// Installs this crate's crypto backend (aws-lc-rs) as jsonwebtoken's process default
/// before the first signature, so that a build that also enables jsonwebtoken's
/// `rust_crypto` feature (through another crate) never hits jsonwebtoken's
/// "no or two providers" panic. If the application installed a provider first, that
/// one stays.
pub(crate) fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
        );
    });
}

/// A key could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(String);

impl KeyError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key: {}", self.0)
    }
}

impl std::error::Error for KeyError {}

/// The algorithms a key may be pinned to.
pub(crate) const SUPPORTED: [Algorithm; 10] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The longest `kid` accepted.
const MAX_KID_LEN: usize = 128;

/// One key: a `kid`, the one algorithm it is used with, the verification half and,
/// for a key that signs, the signing half.
#[derive(Clone)]
pub struct Key {
    kid: Arc<str>,
    alg: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
}

impl fmt::Debug for Key {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("signs", &self.encoding.is_some())
            .finish_non_exhaustive()
    }
}

fn check_kid(kid: &str) -> Result<(), KeyError> {
    if kid.is_empty() || kid.len() > MAX_KID_LEN || !kid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::new(format!(
            "invalid kid {kid:?}: 1 to {MAX_KID_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

fn check_alg(alg: Algorithm) -> Result<(), KeyError> {
    if SUPPORTED.contains(&alg) {
        Ok(())
    } else {
        Err(KeyError::new(format!("unsupported algorithm {alg:?}")))
    }
}

/// What a PEM or DER constructor says when given an HMAC algorithm.
const NOT_HMAC: &str = "use Key::hmac for HMAC secrets";

/// The shortest secret for an HMAC algorithm: the hash's length.
fn hmac_min_len(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::HS256 => Some(32),
        Algorithm::HS384 => Some(48),
        Algorithm::HS512 => Some(64),
        _ => None,
    }
}

/// The verification half of a key from a PEM public key of `alg`'s key type.
fn public_from_pem(kid: &str, alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, KeyError> {
    check_kid(kid)?;
    check_alg(alg)?;
    let key = match alg.family() {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => return Err(KeyError::new(NOT_HMAC)),
    };
    key.map_err(|e| KeyError::new(format!("key {kid:?}: {e}")))
}

impl Key {
    /// A shared secret for HS256, HS384 or HS512; it signs and verifies. The secret
    /// must be at least as long as the hash (32, 48 or 64 bytes): shorter ones are
    /// guessable offline from any token.
    pub fn hmac(kid: &str, alg: Algorithm, secret: &[u8]) -> Result<Self, KeyError> {
        check_kid(kid)?;
        let min = hmac_min_len(alg)
            .ok_or_else(|| KeyError::new(format!("{alg:?} is not an HMAC algorithm")))?;
        if secret.len() < min {
            return Err(KeyError::new(format!(
                "key {kid:?}: a {alg:?} secret needs at least {min} bytes"
            )));
        }
        Self {
            kid: kid.into(),
            alg,
            encoding: Some(EncodingKey::from_secret(secret)),
            decoding: DecodingKey::from_secret(secret),
        }
        .self_test()
    }

    /// A key pair from PEM: the private key signs, the public key verifies. RSA (RS*,
    /// PS*), EC (ES256, ES384; PKCS#8) or Ed25519 (EdDSA), as `alg` says.
    pub fn pem_pair(
        kid: &str,
        alg: Algorithm,
        private_pem: &[u8],
        public_pem: &[u8],
    ) -> Result<Self, KeyError> {
        let decoding = public_from_pem(kid, alg, public_pem)?;
        let encoding = match alg.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(private_pem),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(private_pem),
            AlgorithmFamily::Ed => EncodingKey::from_ed_pem(private_pem),
            AlgorithmFamily::Hmac => return Err(KeyError::new(NOT_HMAC)),
        }
        .map_err(|e| KeyError::new(format!("key {kid:?}: {e}")))?;
        Self {
            kid: kid.into(),
            alg,
            encoding: Some(encoding),
            decoding,
        }
        .self_test()
    }

    /// A public key from PEM, for verification only.
    pub fn public_pem(kid: &str, alg: Algorithm, public_pem: &[u8]) -> Result<Self, KeyError> {
        Ok(Self {
            kid: kid.into(),
            alg,
            encoding: None,
            decoding: public_from_pem(kid, alg, public_pem)?,
        })
    }

    /// A public key from DER (RSA: PKCS#1 `RSAPublicKey`; EC: the uncompressed point;
    /// Ed25519: the 32 raw bytes), for verification only.
    pub fn public_der(kid: &str, alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        check_kid(kid)?;
        check_alg(alg)?;
        let decoding = match alg.family() {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_der(der),
            AlgorithmFamily::Ec => DecodingKey::from_ec_der(der),
            AlgorithmFamily::Ed => DecodingKey::from_ed_der(der),
            AlgorithmFamily::Hmac => return Err(KeyError::new(NOT_HMAC)),
        };
        Ok(Self {
            kid: kid.into(),
            alg,
            encoding: None,
            decoding,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key is used with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Whether this key can sign.
    pub fn can_sign(&self) -> bool {
        self.encoding.is_some()
    }

    /// Signs and verifies a probe, so that a mismatched pair or a missing crypto
    /// backend shows up when the key is loaded, not at the first request.
    fn self_test(self) -> Result<Self, KeyError> {
        install_crypto();
        let Some(encoding) = &self.encoding else {
            return Ok(self);
        };
        let message = b"tenancy key self-test";
        let signature = jsonwebtoken::crypto::sign(message, encoding, self.alg)
            .map_err(|e| KeyError::new(format!("key {:?} cannot sign: {e}", self.kid)))?;
        match jsonwebtoken::crypto::verify(&signature, message, &self.decoding, self.alg) {
            Ok(true) => Ok(self),
            _ => Err(KeyError::new(format!(
                "key {:?}: the public key does not verify what the private key signs",
                self.kid
            ))),
        }
    }

    pub(crate) fn encoding(&self) -> Option<&EncodingKey> {
        self.encoding.as_ref()
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// A verification key from parts already checked (a remote JWK set's keys).
    #[cfg(feature = "oidc")]
    pub(crate) fn verifying(
        kid: &str,
        alg: Algorithm,
        decoding: DecodingKey,
    ) -> Result<Self, KeyError> {
        check_kid(kid)?;
        check_alg(alg)?;
        Ok(Self {
            kid: kid.into(),
            alg,
            encoding: None,
            decoding,
        })
    }
}

/// Why no key verifies a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoKey {
    /// The token names a `kid` the set does not hold: a remote set may have rotated.
    Unknown,
    /// Anything else: no `kid` where one is needed, an ambiguous kid-less token, or an
    /// `alg` that is not the key's.
    Refused(&'static str),
}

/// The keys of a [`SessionManager`](super::SessionManager): at most one active signing
/// key, and every key that verifies, by `kid`.
///
/// A token is verified only by the key its header's `kid` names, and only if the
/// header's `alg` is that key's algorithm: an unknown `kid`, a missing `kid`, another
/// algorithm (the RS256 → HS256 confusion) or `alg: none` is rejected.
///
/// Rotation: [`rotate`](Self::rotate) to a new signing key keeps the old one
/// verifying; [`retire`](Self::retire) it once its last tokens have expired.
///
/// ```
/// use tenancy_core::session::{Key, KeySet};
/// use jsonwebtoken::Algorithm;
///
/// let v1 = Key::hmac("2026-01", Algorithm::HS256, &[7u8; 32]).unwrap();
/// let v2 = Key::hmac("2026-02", Algorithm::HS256, &[9u8; 32]).unwrap();
/// let keys = KeySet::signing(v1).unwrap().rotate(v2).unwrap();
/// assert_eq!(keys.signing_kid(), Some("2026-02"));
/// assert!(keys.get("2026-01").is_some());
/// let keys = keys.retire("2026-01").unwrap();
/// assert!(keys.get("2026-01").is_none());
/// ```
#[derive(Clone, Default)]
pub struct KeySet {
    signing: Option<Key>,
    keys: HashMap<Arc<str>, Key>,
    /// Whether a token without `kid` may use the one key of its `alg` (remote sets).
    kidless: bool,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<_> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet")
            .field("signing", &self.signing_kid())
            .field("kids", &kids)
            .finish()
    }
}

impl KeySet {
    /// A key set that verifies only (e.g. tokens of an external identity provider).
    pub fn verify_only() -> Self {
        Self::default()
    }

    /// A key set that signs with `key` (and verifies with it).
    pub fn signing(key: Key) -> Result<Self, KeyError> {
        Self::default().rotate(key)
    }

    /// Adds a key that verifies only. A `kid` already present is an error.
    pub fn with(mut self, key: Key) -> Result<Self, KeyError> {
        self.add(Key {
            encoding: None,
            ..key
        })?;
        Ok(self)
    }

    /// Adds `key` under its `kid`, which must be new to the set.
    fn add(&mut self, key: Key) -> Result<(), KeyError> {
        if self.keys.contains_key(key.kid()) {
            return Err(KeyError::new(format!(
                "kid {:?} is already in the set",
                key.kid()
            )));
        }
        self.keys.insert(Arc::clone(&key.kid), key);
        Ok(())
    }

    /// Makes `key` the signing key; the previous signing key keeps verifying.
    pub fn rotate(mut self, key: Key) -> Result<Self, KeyError> {
        if !key.can_sign() {
            return Err(KeyError::new(format!(
                "key {:?} has no private half to sign with",
                key.kid()
            )));
        }
        self.add(key.clone())?;
        self.signing = Some(key);
        Ok(self)
    }

    /// Drops a key; tokens it signed stop verifying. The signing key cannot be retired
    /// (rotate first).
    pub fn retire(mut self, kid: &str) -> Result<Self, KeyError> {
        if self.signing_kid() == Some(kid) {
            return Err(KeyError::new(format!(
                "kid {kid:?} signs new tokens: rotate to another key first"
            )));
        }
        match self.keys.remove(kid) {
            Some(_) => Ok(self),
            None => Err(KeyError::new(format!("kid {kid:?} is not in the set"))),
        }
    }

    /// Adds the keys of a JWK set (JSON, as an identity provider publishes it), for
    /// verification. Each key needs a `kid` and an `alg`; keys marked `"use": "enc"`
    /// are skipped.
    pub fn with_jwks(mut self, json: &str) -> Result<Self, KeyError> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| KeyError::new(format!("JWK set: {e}")))?;
        let mut added = 0;
        for jwk in &set.keys {
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                continue;
            }
            let kid = jwk
                .common
                .key_id
                .as_deref()
                .ok_or_else(|| KeyError::new("JWK set: a key has no kid"))?;
            check_kid(kid)?;
            let alg = jwk
                .common
                .key_algorithm
                .ok_or_else(|| KeyError::new(format!("JWK {kid:?}: no alg to pin it to")))
                .and_then(|a| {
                    Algorithm::from_str(&a.to_string())
                        .map_err(|_| KeyError::new(format!("JWK {kid:?}: unsupported alg {a}")))
                })?;
            check_alg(alg)?;
            let decoding = DecodingKey::from_jwk(jwk)
                .map_err(|e| KeyError::new(format!("JWK {kid:?}: {e}")))?;
            if decoding.family() != alg.family() {
                return Err(KeyError::new(format!(
                    "JWK {kid:?}: its key type does not fit alg {alg:?}"
                )));
            }
            // A shared secret in a key set is held to the same floor as `Key::hmac`.
            if let Some(min) = hmac_min_len(alg) {
                let len = decoding.try_get_as_bytes().map_or(0, <[u8]>::len);
                if len < min {
                    return Err(KeyError::new(format!(
                        "JWK {kid:?}: a {alg:?} secret needs at least {min} bytes"
                    )));
                }
            }
            self = self.with(Key {
                kid: kid.into(),
                alg,
                encoding: None,
                decoding,
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(KeyError::new("JWK set: no signature key in it"));
        }
        Ok(self)
    }

    /// The signing key's `kid`.
    pub fn signing_kid(&self) -> Option<&str> {
        self.signing.as_ref().map(Key::kid)
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.get(kid)
    }

    pub(crate) fn signer(&self) -> Option<&Key> {
        self.signing.as_ref()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(|k| &**k).collect();
        kids.sort_unstable();
        kids
    }

    /// Lets a token without `kid` use the set's one key of its `alg` (a set with two
    /// keys of that `alg` refuses it as ambiguous).
    #[cfg(feature = "oidc")]
    pub(crate) fn allow_kidless(mut self) -> Self {
        self.kidless = true;
        self
    }

    /// Adds a verification key whose parts were checked by the caller.
    #[cfg(feature = "oidc")]
    pub(crate) fn insert(&mut self, key: Key) -> Result<(), KeyError> {
        self.add(key)
    }

    /// The key that must verify a token with this header, if the header is acceptable.
    pub(crate) fn verifier(&self, header: &Header) -> Result<&Key, NoKey> {
        let key = match header.kid.as_deref() {
            Some(kid) => self.keys.get(kid).ok_or(NoKey::Unknown)?,
            None if self.kidless => {
                let mut of_alg = self.keys.values().filter(|k| k.alg == header.alg);
                match (of_alg.next(), of_alg.next()) {
                    (Some(key), None) => key,
                    (None, _) => return Err(NoKey::Refused("no key for the token's alg")),
                    (Some(_), Some(_)) => {
                        return Err(NoKey::Refused(
                            "the token names no kid and the set has several keys of its alg",
                        ))
                    }
                }
            }
            None => return Err(NoKey::Refused("the token names no kid")),
        };
        if header.alg != key.alg {
            return Err(NoKey::Refused("the token's alg is not its key's"));
        }
        Ok(key)
    }
}
