//! A provider's JWK set, read leniently: a key this crate cannot use is skipped (and
//! counted), never a reason to drop the keys it can.

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
    Algorithm, DecodingKey,
};
use serde_json::Value;

use super::super::keys::{Key, KeyError, KeySet};

/// The asymmetric algorithms a key of this type and curve can be used with.
fn candidates(params: &AlgorithmParameters) -> &'static [Algorithm] {
    match params {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        // A shared secret (`oct`) is never taken from a published set: a public key
        // must never be usable as an HMAC secret.
        _ => &[],
    }
}

/// The one algorithm a JWK is used with: its `alg` when it has one (and that fits its
/// key type and is allowed), else the only allowed algorithm its key type fits.
fn algorithm(jwk: &Jwk, allowed: &[Algorithm]) -> Result<Algorithm, &'static str> {
    let fits = candidates(&jwk.algorithm);
    if fits.is_empty() {
        return Err("a key type this crate does not verify with");
    }
    match jwk.common.key_algorithm {
        Some(KeyAlgorithm::UNKNOWN_ALGORITHM) => Err("an unknown alg"),
        Some(named) => {
            let alg = fits
                .iter()
                .copied()
                .find(|a| format!("{a:?}") == format!("{named:?}"))
                .ok_or("an alg that does not fit its key type")?;
            if allowed.contains(&alg) {
                Ok(alg)
            } else {
                Err("an alg outside the allowed list")
            }
        }
        None => {
            let mut fitting = fits.iter().copied().filter(|a| allowed.contains(a));
            match (fitting.next(), fitting.next()) {
                (Some(alg), None) => Ok(alg),
                (None, _) => Err("no alg, and its key type fits no allowed alg"),
                (Some(_), Some(_)) => Err("no alg, and its key type fits several allowed algs"),
            }
        }
    }
}

/// What was read from a JWK set.
pub(crate) struct Read {
    pub(crate) keys: KeySet,
    /// Keys left out, each with why (for logs).
    pub(crate) skipped: Vec<String>,
}

/// Reads a JWK set: signature keys of an allowed algorithm, at most `max_keys`.
/// Tokens without `kid` may use the one key of their `alg`. A set with no usable key
/// is an error.
pub(crate) fn read(body: &[u8], allowed: &[Algorithm], max_keys: usize) -> Result<Read, KeyError> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| KeyError::new(format!("JWK set: {e}")))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| KeyError::new("JWK set: no \"keys\" array"))?;
    if list.len() > max_keys {
        return Err(KeyError::new(format!(
            "JWK set: {} keys, more than the {max_keys} allowed",
            list.len()
        )));
    }
    let mut keys = KeySet::verify_only().allow_kidless();
    let mut skipped = Vec::new();
    for (i, value) in list.iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(value.clone()) {
            Ok(jwk) => jwk,
            Err(_) => {
                skipped.push(format!("key {i}: not a JWK this crate reads"));
                continue;
            }
        };
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            skipped.push(format!("key {i}: not a signature key"));
            continue;
        }
        // A key without `kid` gets a name of its own, for tokens without `kid`.
        let kid = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
        let alg = match algorithm(&jwk, allowed) {
            Ok(alg) => alg,
            Err(why) => {
                skipped.push(format!("key {kid:?}: {why}"));
                continue;
            }
        };
        // A modulus under 2048 bits is factorable by a determined attacker.
        if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
            let bytes = rsa.n.trim_end_matches('=').len() * 3 / 4;
            if bytes < 256 {
                skipped.push(format!("key {kid:?}: an RSA key under 2048 bits"));
                continue;
            }
        }
        let decoding = match DecodingKey::from_jwk(&jwk) {
            Ok(d) => d,
            Err(e) => {
                skipped.push(format!("key {kid:?}: {e}"));
                continue;
            }
        };
        let key = match Key::verifying(&kid, alg, decoding) {
            Ok(key) => key,
            Err(e) => {
                skipped.push(e.to_string());
                continue;
            }
        };
        if let Err(e) = keys.insert(key) {
            skipped.push(e.to_string());
        }
    }
    if keys.is_empty() {
        return Err(KeyError::new(format!(
            "JWK set: no usable signature key ({})",
            skipped.join("; ")
        )));
    }
    Ok(Read { keys, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const N: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

    fn rsa(extra: Value) -> Value {
        let mut k = json!({"kty": "RSA", "n": N, "e": "AQAB"});
        k.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        k
    }

    fn set(keys: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    const DEFAULT: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];

    #[test]
    fn a_key_without_alg_takes_the_one_allowed_alg_its_type_fits() {
        let read = read(
            &set(vec![rsa(json!({"kid": "entra-1", "use": "sig"}))]),
            DEFAULT,
            8,
        )
        .unwrap();
        assert_eq!(
            read.keys.get("entra-1").unwrap().algorithm(),
            Algorithm::RS256
        );
        // Two allowed RSA algorithms: which one is unknowable, so the key is left out.
        let both = [Algorithm::RS256, Algorithm::PS256];
        let err = read_err(&set(vec![rsa(json!({"kid": "x"}))]), &both);
        assert!(err.contains("several allowed algs"), "{err}");
    }

    fn read_err(body: &[u8], allowed: &[Algorithm]) -> String {
        match read(body, allowed, 8) {
            Ok(_) => panic!("read"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let body = set(vec![
            rsa(json!({"kid": "enc", "use": "enc", "alg": "RSA-OAEP"})),
            json!({"kty": "oct", "kid": "secret", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "alg": "HS256"}),
            json!({"kty": "weird", "kid": "w"}),
            rsa(json!({"kid": "ps", "alg": "PS256"})),
            rsa(json!({"kid": "ok", "alg": "RS256"})),
        ]);
        let read = read(&body, DEFAULT, 8).unwrap();
        assert_eq!(read.keys.kids(), ["ok"]);
        assert_eq!(read.skipped.len(), 4, "{:?}", read.skipped);
    }

    #[test]
    fn hmac_is_never_taken_from_a_published_set() {
        let oct = json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "alg": "HS256"});
        let err = read_err(&set(vec![oct]), &[Algorithm::HS256]);
        assert!(err.contains("no usable signature key"), "{err}");
        // An RSA key that claims an HMAC alg fits no algorithm of its type.
        let err = read_err(
            &set(vec![rsa(json!({"kid": "r", "alg": "HS256"}))]),
            &[Algorithm::HS256],
        );
        assert!(err.contains("does not fit"), "{err}");
    }

    #[test]
    fn short_rsa_keys_are_left_out() {
        let short = json!({"kty": "RSA", "kid": "weak", "n": &N[..171], "e": "AQAB"});
        let err = read_err(&set(vec![short]), DEFAULT);
        assert!(err.contains("under 2048 bits"), "{err}");
    }

    #[test]
    fn bounds_and_garbage() {
        let many: Vec<Value> = (0..9)
            .map(|i| rsa(json!({"kid": format!("k{i}")})))
            .collect();
        assert!(read_err(&set(many), DEFAULT).contains("more than the 8"));
        for body in [
            &b"not json"[..],
            b"{}",
            b"{\"keys\": 3}",
            b"[]",
            b"{\"keys\": []}",
        ] {
            assert!(read(body, DEFAULT, 8).is_err());
        }
        // A kid that is not printable ASCII is left out, not trusted.
        let err = read_err(&set(vec![rsa(json!({"kid": "bad\nkid"}))]), DEFAULT);
        assert!(err.contains("invalid kid"), "{err}");
    }

    #[test]
    fn kidless_keys_serve_kidless_tokens_unless_ambiguous() {
        let one = read(&set(vec![rsa(json!({}))]), DEFAULT, 8).unwrap().keys;
        let header = jsonwebtoken::Header::new(Algorithm::RS256);
        assert!(one.verifier(&header).is_ok());
        let two = read(
            &set(vec![rsa(json!({})), rsa(json!({"kid": "b"}))]),
            DEFAULT,
            8,
        )
        .unwrap()
        .keys;
        assert!(two.verifier(&header).is_err(), "two RS256 keys: ambiguous");
    }
}
