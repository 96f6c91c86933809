//! JWT sessions through a real `App`: the tamper corpus, refresh rotation and reuse,
//! revocation, key rotation, tokens minted by another implementation (PyJWT), and
//! the crypto backend.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_tenancy::{
    prelude::*,
    session::{
        Grant, Key, KeySet, SessionConfig, SessionError, SessionManager, TenantAuth, TokenPair,
        MAX_TOKEN_LEN,
    },
};
use actix_web::{http::header, test, web, App, HttpResponse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ISS: &str = "https://auth.test";
const AUD: &str = "api";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// Signs with the HMAC key `k1`; also verifies RS256 tokens of kid `rsa`.
fn sessions() -> SessionManager {
    sessions_with(SessionConfig::new(ISS, AUD))
}

/// [`sessions`] with `config`.
fn sessions_with(config: SessionConfig) -> SessionManager {
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, SECRET).unwrap())
        .unwrap()
        .with(Key::public_pem("rsa", Algorithm::RS256, &fixture("rsa_public.pem")).unwrap())
        .unwrap();
    SessionManager::new(config, keys)
}

fn tenancy(sessions: &SessionManager) -> Tenancy {
    let registry = InMemoryRegistry::new()
        .with(TenantRecord::new(id("acme"), "pro"))
        .with(TenantRecord::new(id("globex"), "free"));
    Tenancy::builder()
        .auth(TenantAuth::new(sessions.clone()))
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::claim())
                .source(Source::header())
                .exempt("/health")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

macro_rules! app {
    ($sessions:expr) => {
        test::init_service(
            App::new()
                .wrap(tenancy($sessions))
                .route("/health", web::get().to(HttpResponse::Ok))
                .route(
                    "/me",
                    web::get().to(|p: Principal, t: Tenant| async move {
                        format!("{} {} {}", p.subject(), t.id(), p.scopes().join(","))
                    }),
                ),
        )
        .await
    };
}

fn get(token: Option<&str>) -> test::TestRequest {
    let req = test::TestRequest::get().uri("/me");
    match token {
        Some(t) => req.insert_header((header::AUTHORIZATION, format!("Bearer {t}"))),
        None => req,
    }
}

/// Status, `WWW-Authenticate`, and the body.
async fn call<S, B>(app: &S, req: test::TestRequest) -> (u16, Option<String>, String)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status().as_u16();
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    (status, challenge, body)
}

fn claims(tenant: &str) -> Value {
    let now = now();
    json!({
        "iss": ISS, "aud": AUD, "sub": "user-1", "tenant_id": tenant,
        "iat": now, "nbf": now, "exp": now + 600, "jti": format!("j-{now}-{tenant}"),
    })
}

/// A fresh pair for acme's user-1 whose access token is then revoked by its `jti`.
async fn revoked_pair(s: &SessionManager) -> TokenPair {
    let pair = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    let p = s.verify(&pair.access_token).await.unwrap();
    s.revoke(p.token_id().unwrap()).await.unwrap();
    pair
}

fn mint(claims: &Value, kid: &str) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

/// `{"alg":"none","kid":"k1","typ":"JWT"}`, base64url.
const NONE_HEADER: &str = "eyJhbGciOiJub25lIiwia2lkIjoiazEiLCJ0eXAiOiJKV1QifQ";

#[actix_web::test]
async fn a_valid_token_resolves_its_tenant_and_principal() {
    let s = sessions();
    let app = app!(&s);
    let pair = s
        .issue(
            &id("acme"),
            "user-1",
            Grant::new().scopes(["reports:read", "items:write"]),
        )
        .unwrap();
    let (status, _, body) = call(&app, get(Some(&pair.access_token))).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "user-1 acme reports:read,items:write")
    );
    // The same tenant named by a header as well is fine.
    let req = get(Some(&pair.access_token)).insert_header(("x-tenant-id", "acme"));
    assert_eq!(call(&app, req).await.0, 200);
    // Exempt paths need no token.
    let health = test::TestRequest::get().uri("/health");
    assert_eq!(call(&app, health).await.0, 200);
    // `bearer` is case-insensitive.
    let req = test::TestRequest::get().uri("/me").insert_header((
        header::AUTHORIZATION,
        format!("bearer {}", pair.access_token),
    ));
    assert_eq!(call(&app, req).await.0, 200);
}

#[actix_web::test]
async fn no_token_is_401_with_a_bare_challenge() {
    let s = sessions();
    let app = app!(&s);
    let (status, challenge, body) = call(&app, get(None)).await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer")));
    assert!(body.contains("\"code\":\"unauthenticated\""), "{body}");
}

#[actix_web::test]
async fn the_tamper_corpus_is_401_and_reveals_nothing() {
    let s = sessions();
    let app = app!(&s);
    let good = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    let now = now();
    let with = |patch: Value| {
        let mut c = claims("acme");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        mint(&c, "k1")
    };
    let parts: Vec<&str> = good.access_token.split('.').collect();
    let none = format!("{NONE_HEADER}.{}.", parts[1]);
    // Algorithm confusion: HS256 "signed" with the RSA public key's bytes, under the
    // RSA key's kid.
    let confused = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa".into());
        let key = EncodingKey::from_secret(&fixture("rsa_public.pem"));
        jsonwebtoken::encode(&h, &claims("acme"), &key).unwrap()
    };
    // A character inside the signature: the last one also carries padding bits, which
    // a strict decoder may refuse before any signature check.
    let mut bad_sig = good.access_token.clone().into_bytes();
    let i = bad_sig.len() - 10;
    bad_sig[i] = if bad_sig[i] == b'A' { b'B' } else { b'A' };
    let bad_sig = String::from_utf8(bad_sig).unwrap();
    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("acme"),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let unknown_kid = mint(&claims("acme"), "k9");
    let revoked = revoked_pair(&s).await;

    let corpus: Vec<(&str, String)> = vec![
        ("alg none", none),
        ("algorithm confusion", confused),
        ("bad signature", bad_sig),
        (
            "truncated",
            good.access_token[..good.access_token.len() - 12].to_owned(),
        ),
        ("extra segment", format!("{}.e30", good.access_token)),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("expired", with(json!({"exp": now - 3600}))),
        // The default leeway is 30 s: a second past it is expired.
        ("expired past the leeway", with(json!({"exp": now - 32}))),
        ("nbf in the future", with(json!({"nbf": now + 3600}))),
        ("nbf past the leeway", with(json!({"nbf": now + 32}))),
        // It would outlive every revocation by tenant or subject (iat before a cut-off).
        ("iat in the future", with(json!({"iat": now + 3600}))),
        // It could never be revoked on its own (`require_jti` is on by default).
        ("no jti", with(json!({"jti": null}))),
        ("wrong iss", with(json!({"iss": "https://evil.test"}))),
        ("wrong aud", with(json!({"aud": "other-api"}))),
        ("no exp", with(json!({"exp": null}))),
        ("no iss", with(json!({"iss": null}))),
        ("no aud", with(json!({"aud": null}))),
        ("no sub", with(json!({"sub": null}))),
        (
            "exp as a string",
            with(json!({"exp": (now + 600).to_string()})),
        ),
        (
            "exp as a float",
            with(json!({"exp": (now + 600) as f64 + 0.5})),
        ),
        ("iss as a number", with(json!({"iss": 7}))),
        ("malformed tenant", with(json!({"tenant_id": "ACME; drop"}))),
        ("tenant as an array", with(json!({"tenant_id": ["acme"]}))),
        ("no tenant", with(json!({"tenant_id": null}))),
        ("unknown token_use", with(json!({"token_use": "id"}))),
        ("unknown kid", unknown_kid),
        ("refresh token as access", good.refresh_token.clone()),
        ("revoked jti", revoked.access_token.clone()),
        ("no kid", no_kid),
        (
            "over 8 KiB, signed",
            with(json!({"pad": "x".repeat(MAX_TOKEN_LEN)})),
        ),
        ("not base64", "a.b!.c".into()),
        ("empty", String::new()),
    ];
    for (what, token) in corpus {
        let (status, challenge, body) = call(&app, get(Some(&token))).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer error=\"invalid_token\""),
            "{what}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "unauthenticated", "{what}");
        assert_eq!(v.as_object().unwrap().len(), 4, "{what}: no detail: {body}");
    }
    // Other header shapes.
    for value in [
        "Basic dXNlcjpwdw==".to_owned(),
        "Bearer".to_owned(),
        "Bearer  two spaces".to_owned(),
        "Token abc".to_owned(),
        "Bearer ===".to_owned(),
        "Bearer\t".to_owned() + &good.access_token,
        format!("Bearer {}=x", good.access_token),
        format!("Bearer {} ", good.access_token),
        format!("Bearer {}%2e", good.access_token),
        format!("Bearer {}\t", good.access_token),
    ] {
        let req = test::TestRequest::get()
            .uri("/me")
            .insert_header((header::AUTHORIZATION, value.as_str()));
        assert_eq!(call(&app, req).await.0, 401, "{value}");
    }
    // Bytes outside ASCII, in the scheme and in the token.
    for value in [
        b"Bearer\xc2\xa0abc".to_vec(),
        [b"B\xe9arer ".as_slice(), good.access_token.as_bytes()].concat(),
        [b"Bearer ".as_slice(), good.access_token.as_bytes(), b"\xff"].concat(),
    ] {
        let req = test::TestRequest::get().uri("/me").insert_header((
            header::AUTHORIZATION,
            header::HeaderValue::from_bytes(&value).unwrap(),
        ));
        assert_eq!(call(&app, req).await.0, 401, "{value:?}");
    }
    let twice = get(Some(&good.access_token)).append_header((
        header::AUTHORIZATION,
        format!("Bearer {}", good.access_token),
    ));
    assert_eq!(call(&app, twice).await.0, 401);
    // And the untampered token still works, as does one just under the size limit.
    assert_eq!(call(&app, get(Some(&good.access_token))).await.0, 200);
    let big = with(json!({"pad": "x".repeat(MAX_TOKEN_LEN * 3 / 4 - 400)}));
    assert!(
        (MAX_TOKEN_LEN - 256..=MAX_TOKEN_LEN).contains(&big.len()),
        "{}",
        big.len()
    );
    assert_eq!(call(&app, get(Some(&big))).await.0, 200);
}

#[actix_web::test]
async fn a_token_for_one_tenant_cannot_be_used_for_another() {
    let s = sessions();
    let app = app!(&s);
    let pair = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    let req = get(Some(&pair.access_token)).insert_header(("x-tenant-id", "globex"));
    let (status, _, body) = call(&app, req).await;
    assert_eq!(status, 403);
    assert!(body.contains("tenant_conflict"), "{body}");
}

#[actix_web::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    // No grace: a used refresh token presented again at once is theft (a retry within
    // the grace gets the same pair: `fake_clock.rs`).
    let s = sessions_with(SessionConfig::new(ISS, AUD).refresh_grace(Duration::ZERO));
    let app = app!(&s);
    let first = s
        .issue(
            &id("acme"),
            "user-1",
            Grant::new().scopes(["a"]).claim("plan", "x"),
        )
        .unwrap();
    let second = s.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    let p = s.verify(&second.access_token).await.unwrap();
    assert_eq!((p.subject(), p.scopes()), ("user-1", &["a".to_owned()][..]));
    assert_eq!(p.claims()["plan"], "x", "extra claims carry over");
    assert_eq!(call(&app, get(Some(&second.access_token))).await.0, 200);
    // An access token cannot refresh.
    assert!(matches!(
        s.refresh(&second.access_token).await,
        Err(SessionError::Invalid(_))
    ));
    // The first refresh token again: theft. Every token of the family dies.
    assert!(matches!(
        s.refresh(&first.refresh_token).await,
        Err(SessionError::RefreshReused)
    ));
    assert_eq!(call(&app, get(Some(&second.access_token))).await.0, 401);
    assert_eq!(call(&app, get(Some(&first.access_token))).await.0, 401);
    assert!(s.refresh(&second.refresh_token).await.is_err());
    // Another login of the same user is a new family, untouched.
    let other = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    assert_eq!(call(&app, get(Some(&other.access_token))).await.0, 200);
}

#[actix_web::test]
async fn revoking_a_tenant_or_subject_stops_older_tokens() {
    // No leeway: the cut-off is now (with a leeway it covers it: `fake_clock.rs`).
    let s = sessions_with(SessionConfig::new(ISS, AUD).leeway(Duration::ZERO));
    let app = app!(&s);
    let acme = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    let acme2 = s.issue(&id("acme"), "user-2", Grant::new()).unwrap();
    let globex = s.issue(&id("globex"), "user-1", Grant::new()).unwrap();
    s.revoke_subject(&id("acme"), "user-2").await.unwrap();
    assert_eq!(call(&app, get(Some(&acme2.access_token))).await.0, 401);
    assert_eq!(call(&app, get(Some(&acme.access_token))).await.0, 200);
    s.revoke_tenant(&id("acme")).await.unwrap();
    assert_eq!(call(&app, get(Some(&acme.access_token))).await.0, 401);
    assert!(s.refresh(&acme.refresh_token).await.is_err());
    assert_eq!(call(&app, get(Some(&globex.access_token))).await.0, 200);
    // A token without `iat` cannot prove it is newer than the cut-off: refused.
    let mut c = claims("acme");
    c.as_object_mut().unwrap().remove("iat");
    assert_eq!(call(&app, get(Some(&mint(&c, "k1")))).await.0, 401);
    // Tokens issued after the cut-off (next second) work.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let fresh = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    assert_eq!(call(&app, get(Some(&fresh.access_token))).await.0, 200);
}

#[actix_web::test]
async fn key_rotation_keeps_old_tokens_during_the_overlap_only() {
    let s = sessions();
    let app = app!(&s);
    let old = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    s.rotate(Key::hmac("k2", Algorithm::HS512, &[42u8; 64]).unwrap())
        .unwrap();
    let new = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    let kid = jsonwebtoken::decode_header(&new.access_token).unwrap().kid;
    assert_eq!(kid.as_deref(), Some("k2"));
    assert_eq!(
        call(&app, get(Some(&old.access_token))).await.0,
        200,
        "overlap"
    );
    assert_eq!(call(&app, get(Some(&new.access_token))).await.0, 200);
    assert!(s.retire("k2").is_err(), "the signing key cannot be retired");
    s.retire("k1").unwrap();
    assert_eq!(
        call(&app, get(Some(&old.access_token))).await.0,
        401,
        "after"
    );
    assert_eq!(call(&app, get(Some(&new.access_token))).await.0, 200);
}

#[actix_web::test]
async fn tokens_minted_by_pyjwt_verify() {
    let vectors: Vec<Value> = serde_json::from_slice(&fixture("vectors.json")).unwrap();
    let hs = Key::hmac("hs", Algorithm::HS256, &fixture("hmac.secret")).unwrap();
    let rsa = fixture("rsa_public.pem");
    let keys = KeySet::signing(hs)
        .unwrap()
        .with(Key::public_pem("rsa", Algorithm::RS256, &rsa).unwrap())
        .unwrap()
        .with(Key::public_pem("rsa-pss", Algorithm::PS256, &rsa).unwrap())
        .unwrap()
        .with(Key::public_pem("ec", Algorithm::ES256, &fixture("ec_public.pem")).unwrap())
        .unwrap()
        .with(Key::public_pem("ed", Algorithm::EdDSA, &fixture("ed25519_public.pem")).unwrap())
        .unwrap();
    // The vectors live from 2026 to 2100.
    let config = SessionConfig::new("https://issuer.test", "api")
        .max_token_life(Duration::from_secs(4_102_444_800 - 1_790_000_000));
    let pem = SessionManager::new(config.clone(), keys);
    let jwks = std::str::from_utf8(&fixture("jwks.json"))
        .unwrap()
        .to_owned();
    let from_jwks = SessionManager::new(config, KeySet::verify_only().with_jwks(&jwks).unwrap());
    assert_eq!(vectors.len(), 5);
    for v in &vectors {
        let token = v["token"].as_str().unwrap();
        let p = pem
            .verify(token)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", v["alg"]));
        assert_eq!(p.subject(), "user-7");
        assert_eq!(p.tenant().map(TenantId::as_str), Some("acme"));
        assert_eq!(p.scopes(), ["reports:read", "items:write"]);
        assert_eq!(p.token_id(), Some("pyjwt-vector"));
        if v["alg"] != "HS256" {
            from_jwks
                .verify(token)
                .await
                .unwrap_or_else(|e| panic!("{} via JWKS: {e}", v["alg"]));
        }
        // One changed byte in the payload breaks each of them.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].replacen("dXNlci03", "dXNlci04", 1);
        assert!(pem.verify(&parts.join(".")).await.is_err(), "{}", v["alg"]);
    }
}

#[actix_web::test]
async fn keys_are_checked_when_loaded() {
    let err = Key::hmac("k", Algorithm::HS256, b"short").unwrap_err();
    assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    assert!(Key::hmac("k", Algorithm::RS256, SECRET).is_err());
    assert!(Key::hmac("", Algorithm::HS256, SECRET).is_err());
    // A private key with another key's public half is caught by the self-test.
    let err = Key::pem_pair(
        "ec",
        Algorithm::ES256,
        &fixture("ec_private.pem"),
        &fixture("other_ec_public.pem"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    let ok = Key::pem_pair(
        "ed",
        Algorithm::EdDSA,
        &fixture("ed25519_private.pem"),
        &fixture("ed25519_public.pem"),
    )
    .unwrap();
    assert!(ok.can_sign());
    assert!(Key::public_pem("x", Algorithm::RS256, b"not a pem").is_err());
    assert!(KeySet::verify_only().with_jwks("{\"keys\": []}").is_err());
    // A long enough secret, so only the missing kid or alg can be the reason.
    let err = KeySet::verify_only()
        .with_jwks(r#"{"keys":[{"kty":"oct","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}"#)
        .unwrap_err();
    assert!(err.to_string().contains("no kid"), "{err}");
    let err = KeySet::verify_only()
        .with_jwks(r#"{"keys":[{"kty":"oct","kid":"s","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}"#)
        .unwrap_err();
    assert!(err.to_string().contains("no alg"), "{err}");
    // A shared secret in a JWK set is held to the same floor as `Key::hmac`.
    let err = KeySet::verify_only()
        .with_jwks(r#"{"keys":[{"kty":"oct","kid":"s","alg":"HS256","k":"c2VjcmV0"}]}"#)
        .unwrap_err();
    assert!(err.to_string().contains("at least 32 bytes"), "{err}");
}

/// A public key given as DER (here Ed25519's 32 raw bytes) verifies what its private
/// half signs, and nothing else.
#[actix_web::test]
async fn a_der_public_key_verifies() {
    // The key inside `ed25519_public.pem` (its last 32 bytes).
    const ED25519_RAW: &str = "b727ac8c0f5ce352c2412b21c6ea2dfa706034c646a0a37baba4bbe2bf05328b";
    let raw: Vec<u8> = (0..ED25519_RAW.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&ED25519_RAW[i..i + 2], 16).unwrap())
        .collect();
    let signer = Key::pem_pair(
        "ed",
        Algorithm::EdDSA,
        &fixture("ed25519_private.pem"),
        &fixture("ed25519_public.pem"),
    )
    .unwrap();
    let issuer = SessionManager::new(
        SessionConfig::new(ISS, AUD),
        KeySet::signing(signer).unwrap(),
    );
    let verifier = SessionManager::new(
        SessionConfig::new(ISS, AUD),
        KeySet::verify_only()
            .with(Key::public_der("ed", Algorithm::EdDSA, &raw).unwrap())
            .unwrap(),
    );
    let pair = issuer.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    let p = verifier.verify(&pair.access_token).await.unwrap();
    assert_eq!(p.tenant(), Some(&id("acme")));
    let mut other = raw.clone();
    other[0] ^= 1;
    let wrong = SessionManager::new(
        SessionConfig::new(ISS, AUD),
        KeySet::verify_only()
            .with(Key::public_der("ed", Algorithm::EdDSA, &other).unwrap())
            .unwrap(),
    );
    assert!(matches!(
        wrong.verify(&pair.access_token).await,
        Err(SessionError::Invalid(_))
    ));
}

/// Signs and verifies with every algorithm family through jsonwebtoken's process-wide
/// crypto provider. Built with jsonwebtoken's `rust_crypto` feature enabled as well
/// (`.ci/run` does), jsonwebtoken alone would panic here ("no or two providers");
/// the crate installs its provider first, so it must not.
#[actix_web::test]
async fn crypto_backend_is_installed_whatever_features_are_unified() {
    let keys = KeySet::signing(
        Key::pem_pair(
            "es",
            Algorithm::ES256,
            &fixture("ec_private.pem"),
            &fixture("ec_public.pem"),
        )
        .unwrap(),
    )
    .unwrap();
    let s = SessionManager::new(SessionConfig::new(ISS, AUD), keys);
    let pair = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    assert!(s.verify(&pair.access_token).await.is_ok());
    s.rotate(
        Key::pem_pair(
            "rs",
            Algorithm::RS256,
            &fixture("rsa_private.pem"),
            &fixture("rsa_public.pem"),
        )
        .unwrap(),
    )
    .unwrap();
    let pair = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    assert!(s.verify(&pair.access_token).await.is_ok());
}

#[actix_web::test]
async fn allow_missing_lets_the_resolver_decide_and_principal_is_optional() {
    let s = sessions();
    let registry = InMemoryRegistry::new().with(TenantRecord::new(id("acme"), "pro"));
    let tenancy = Tenancy::builder()
        .auth(
            TenantAuth::builder(s.clone())
                .allow_anonymous(true)
                .build()
                .unwrap(),
        )
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::claim())
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(tenancy)
            .route(
                "/who",
                web::get().to(|p: Option<Principal>, t: Tenant| async move {
                    format!(
                        "{} {}",
                        p.map_or("anonymous".into(), |p| p.subject().to_owned()),
                        t.id()
                    )
                }),
            )
            .route(
                "/me",
                web::get().to(|p: Principal| async move { p.subject().to_owned() }),
            ),
    )
    .await;
    let anon = test::TestRequest::get()
        .uri("/who")
        .insert_header(("x-tenant-id", "acme"));
    assert_eq!(call(&app, anon).await.2, "anonymous acme");
    let (status, challenge, _) = call(
        &app,
        test::TestRequest::get()
            .uri("/me")
            .insert_header(("x-tenant-id", "acme")),
    )
    .await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer")));
    // A token that is present is still checked.
    let req = test::TestRequest::get()
        .uri("/who")
        .insert_header((header::AUTHORIZATION, "Bearer x.y.z"));
    assert_eq!(call(&app, req).await.0, 401);
}

#[actix_web::test]
async fn a_cached_token_still_expires_and_still_gets_revoked() {
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, SECRET).unwrap()).unwrap();
    let s = SessionManager::new(
        SessionConfig::new(ISS, AUD).leeway(std::time::Duration::ZERO),
        keys,
    );
    let mut c = claims("acme");
    c["exp"] = json!(now() + 2);
    let short = mint(&c, "k1");
    assert!(s.verify(&short).await.is_ok());
    assert!(s.verify(&short).await.is_ok(), "from the cache");
    let long = revoked_pair(&s).await;
    assert!(matches!(
        s.verify(&long.access_token).await,
        Err(SessionError::Revoked)
    ));
    std::thread::sleep(std::time::Duration::from_millis(3100));
    assert!(s.verify(&short).await.is_err(), "expired, cache or not");
    // Without the cache, the same answers.
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, SECRET).unwrap()).unwrap();
    let config = SessionConfig::new(ISS, AUD).leeway(std::time::Duration::ZERO);
    let uncached = SessionManager::new(config.verified_cache(0), keys);
    let pair = uncached.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    assert!(uncached.verify(&pair.access_token).await.is_ok());
    assert!(uncached.verify(&short).await.is_err());
}

#[actix_web::test]
async fn tokens_without_a_tenant_only_when_allowed() {
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, SECRET).unwrap()).unwrap();
    let lenient = SessionManager::new(SessionConfig::new(ISS, AUD).require_tenant(false), keys);
    let mut c = claims("acme");
    c.as_object_mut().unwrap().remove("tenant_id");
    let p = lenient.verify(&mint(&c, "k1")).await.unwrap();
    assert_eq!(p.tenant(), None);
    assert!(sessions().verify(&mint(&c, "k1")).await.is_err());
}

#[actix_web::test]
async fn standalone_jwt_auth_must_run_before_the_resolver() {
    let s = sessions();
    let resolver = || {
        TenantResolver::builder(InMemoryRegistry::new().with(TenantRecord::new(id("acme"), "pro")))
            .source(Source::claim())
            .source(Source::header())
            .build()
            .unwrap()
    };
    let me = || {
        web::get()
            .to(|t: Tenant, p: Principal| async move { format!("{} {}", p.subject(), t.id()) })
    };
    let pair = s.issue(&id("acme"), "user-1", Grant::new()).unwrap();
    // Registered last, TenantAuth runs first: the resolver sees the token's tenant.
    let right = test::init_service(
        App::new()
            .wrap(resolver())
            .wrap(TenantAuth::new(s.clone()))
            .route("/me", me()),
    )
    .await;
    let (status, _, body) = call(&right, get(Some(&pair.access_token))).await;
    assert_eq!((status, body.as_str()), (200, "user-1 acme"));
    // The other way round the resolver decided without it: fail closed.
    let wrong = test::init_service(
        App::new()
            .wrap(TenantAuth::new(s.clone()))
            .wrap(resolver())
            .route("/me", me()),
    )
    .await;
    let req = get(Some(&pair.access_token)).insert_header(("x-tenant-id", "acme"));
    assert_eq!(call(&wrong, req).await.0, 500);
}

#[actix_web::test]
async fn a_zero_revocation_timeout_is_a_config_error() {
    let err = TenantAuth::builder(sessions())
        .revocation_timeout(std::time::Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        actix_tenancy::error::ConfigError::Invalid {
            setting: "revocation timeout",
            value: "0s".into(),
            reason: "it must be longer than zero".into(),
        }
    );
}

#[actix_web::test]
async fn jwt_auth_without_a_claim_source_is_a_config_error() {
    let registry = InMemoryRegistry::new();
    let err = Tenancy::builder()
        .auth(TenantAuth::new(sessions()))
        .resolver(
            TenantResolver::builder(registry)
                .source(Source::header())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("Source::claim()"), "{err}");
}

/// A correctly signed token "issued" ten years from now would escape every revocation
/// by subject or tenant (their cut-off compares `iat`): it is refused outright.
#[actix_web::test]
async fn a_token_issued_in_the_future_cannot_escape_a_subject_revocation() {
    let s = sessions();
    s.revoke_subject(&id("acme"), "user-1").await.unwrap();
    let mut future = claims("acme");
    future["iat"] = json!(now() + 10 * 365 * 24 * 3600);
    assert!(matches!(
        s.verify(&mint(&future, "k1")).await,
        Err(SessionError::Invalid(_))
    ));
    let mut past = claims("acme");
    past["iat"] = json!(now() - 1);
    assert!(matches!(
        s.verify(&mint(&past, "k1")).await,
        Err(SessionError::Revoked)
    ));
}

/// `logout` revokes a token by `jti`; one without (`require_jti(false)`, for
/// providers that send none) revokes what can be: its subject's tokens in its tenant.
#[actix_web::test]
async fn logout_of_a_token_without_jti_revokes_its_subject() {
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, SECRET).unwrap()).unwrap();
    let s = SessionManager::new(SessionConfig::new(ISS, AUD).require_jti(false), keys);
    let mut no_jti = claims("acme");
    no_jti.as_object_mut().unwrap().remove("jti");
    no_jti["iat"] = json!(now() - 5);
    let token = mint(&no_jti, "k1");
    let other = mint(&claims("acme"), "k1");
    let principal = s.verify(&token).await.unwrap();
    assert_eq!(principal.token_id(), None);
    s.logout(&principal).await.unwrap();
    assert!(matches!(s.verify(&token).await, Err(SessionError::Revoked)));
    assert!(
        matches!(s.verify(&other).await, Err(SessionError::Revoked)),
        "the subject's other token"
    );

    // With a jti, only that token goes.
    let pair = s.issue(&id("globex"), "user-2", Grant::new()).unwrap();
    let second = s.issue(&id("globex"), "user-2", Grant::new()).unwrap();
    let p = s.verify(&pair.access_token).await.unwrap();
    s.logout(&p).await.unwrap();
    assert!(s.verify(&pair.access_token).await.is_err());
    assert!(s.verify(&second.access_token).await.is_ok());
}

/// A provider's token may live longer than this crate's own tokens (up to
/// `max_token_life`): logging out keeps the revocation until the token expires, not
/// only for the configured lifetimes.
#[actix_web::test]
async fn a_logout_lasts_as_long_as_the_token() {
    let keys = KeySet::signing(Key::hmac("k1", Algorithm::HS256, SECRET).unwrap()).unwrap();
    let config = SessionConfig::new(ISS, AUD)
        .access_ttl(std::time::Duration::from_secs(1))
        .refresh_ttl(std::time::Duration::from_secs(1))
        .max_token_life(std::time::Duration::from_secs(3600))
        .leeway(std::time::Duration::ZERO);
    let s = SessionManager::new(config, keys);
    let mut long = claims("acme");
    long["exp"] = json!(now() + 3600);
    let token = mint(&long, "k1");
    let p = s.verify(&token).await.unwrap();
    s.logout(&p).await.unwrap();
    // Past the configured lifetimes (1 s + leeway 0), the revocation still holds.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(matches!(s.verify(&token).await, Err(SessionError::Revoked)));
}
