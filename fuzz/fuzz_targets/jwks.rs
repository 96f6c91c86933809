//! A provider's JWK set as arbitrary bytes (feature `oidc`): never a panic; a set that
//! is read holds only keys of the allowed algorithms, never an HMAC one.
#![no_main]

use actix_tenancy::session::oidc::read_jwks;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use libfuzzer_sys::fuzz_target;

const ALLOWED: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fuzz_target!(|data: &[u8]| {
    let Ok(set) = read_jwks(data, &ALLOWED) else {
        return;
    };
    assert!(!set.is_empty(), "a set that is read holds a key");
    for kid in set.kids() {
        let alg = set.get(kid).unwrap().algorithm();
        assert!(ALLOWED.contains(&alg), "{kid:?} pinned to {alg:?}");
        assert_ne!(alg.family(), AlgorithmFamily::Hmac);
    }
});
