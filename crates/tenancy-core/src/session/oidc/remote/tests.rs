//! The remote key set against loopback providers: fetching, discovery, limits,
//! settings, the refresh task and failures.

use std::sync::atomic::AtomicUsize;

use jsonwebtoken::Algorithm;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const N: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

type Answer = (u16, String, Vec<u8>);

/// A loopback server answering each request with `answer(base, path)`: the
/// status, extra header lines, the body; `None` never answers. Counts requests.
async fn serve(
    answer: impl Fn(&str, &str) -> Option<Answer> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let (answer, counter, me) = (Arc::new(answer), Arc::clone(&hits), base.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (answer, counter, me) = (Arc::clone(&answer), Arc::clone(&counter), me.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                counter.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
                let Some((code, headers, body)) = answer(&me, &path) else {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                };
                let head = format!(
                    "HTTP/1.1 {code} X\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    (base, hits)
}

fn jwks(kid: &str) -> Vec<u8> {
    let set = serde_json::json!({"keys": [{"kty": "RSA", "kid": kid, "n": N, "e": "AQAB"}]});
    serde_json::to_vec(&set).unwrap()
}

fn ok(body: Vec<u8>) -> Option<Answer> {
    Some((200, String::new(), body))
}

fn quick(b: RemoteKeysBuilder) -> RemoteKeysBuilder {
    b.timeouts(Duration::from_millis(500), Duration::from_millis(800))
        .allow_plain_loopback(true)
}

fn fetch_error(r: Result<RemoteKeys, OidcError>) -> String {
    match r {
        Ok(_) => panic!("fetched"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_jwks_url_fetches_and_cache_control_sets_the_refresh() {
    let age = |secs: u32| {
        move |_: &str, _: &str| {
            Some((
                200,
                format!("Cache-Control: max-age={secs}\r\n"),
                jwks("k1"),
            ))
        }
    };
    let (base, _) = serve(age(120)).await;
    let keys = quick(RemoteKeys::jwks(&format!("{base}/keys")))
        .fetch()
        .await
        .unwrap();
    assert_eq!(keys.keys().unwrap().kids(), ["k1"]);
    assert_eq!(keys.inner.state().fresh_for, Duration::from_secs(120));
    // Kept within the bounds.
    let (base, _) = serve(age(5)).await;
    let keys = quick(RemoteKeys::jwks(&base)).fetch().await.unwrap();
    assert_eq!(keys.inner.state().fresh_for, Duration::from_secs(60));
}

#[tokio::test]
async fn oversize_slow_and_redirecting_providers_fail() {
    let (base, _) = serve(|_, _| ok(vec![b' '; 2048])).await;
    let err = fetch_error(quick(RemoteKeys::jwks(&base)).max_bytes(1024).fetch().await);
    assert!(err.contains("over 1024 bytes"), "{err}");

    let (base, _) = serve(|_, _| None).await;
    let err = fetch_error(quick(RemoteKeys::jwks(&base)).fetch().await);
    assert!(err.contains("within"), "{err}");

    let moved = |_: &str, _: &str| {
        Some((
            302,
            "Location: https://elsewhere.example/\r\n".into(),
            vec![],
        ))
    };
    let (base, _) = serve(moved).await;
    let err = fetch_error(quick(RemoteKeys::jwks(&base)).fetch().await);
    assert!(err.contains("HTTP 302"), "{err}");
}

/// A provider whose discovery document says `issuer` (`None`: its own address)
/// and `jwks_uri` (`None`: its own `/jwks`).
fn provider(
    issuer: Option<&'static str>,
    jwks_uri: Option<&'static str>,
) -> impl Fn(&str, &str) -> Option<Answer> + Send + Sync + 'static {
    move |base, path| match path {
        "/.well-known/openid-configuration" => {
            let doc = serde_json::json!({
                "issuer": issuer.map_or_else(|| base.to_owned(), str::to_owned),
                "jwks_uri": jwks_uri.map_or_else(|| format!("{base}/jwks"), str::to_owned),
            });
            ok(serde_json::to_vec(&doc).unwrap())
        }
        "/jwks" => ok(jwks("k1")),
        _ => Some((404, String::new(), vec![])),
    }
}

#[tokio::test]
async fn discovery_must_name_our_issuer_and_an_https_key_set() {
    let (base, hits) = serve(provider(None, None)).await;
    let keys = quick(RemoteKeys::issuer(&base)).fetch().await.unwrap();
    assert_eq!(keys.issuer_name(), Some(base.as_str()));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "discovery, then the key set"
    );
    // Refreshes reuse the discovered URL.
    keys.refresh_now().await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    let (base, _) = serve(provider(Some("https://other.example"), None)).await;
    let err = fetch_error(quick(RemoteKeys::issuer(&base)).fetch().await);
    assert!(err.contains("its issuer is not"), "{err}");

    let (base, _) = serve(provider(None, Some("http://keys.example.com/jwks"))).await;
    let err = fetch_error(quick(RemoteKeys::issuer(&base)).fetch().await);
    assert!(err.contains("is not HTTPS"), "{err}");
    // Plain HTTP to loopback only when allowed.
    let (base, hits) = serve(provider(None, None)).await;
    let err = fetch_error(RemoteKeys::issuer(&base).fetch().await);
    assert!(err.contains("is not HTTPS"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was fetched");
    // An issuer with a query could make discovery any URL of its host.
    let err = fetch_error(
        quick(RemoteKeys::issuer(&format!("{base}/x?a=")))
            .fetch()
            .await,
    );
    assert!(err.contains("has a query"), "{err}");
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused() {
    let refused = |b: RemoteKeysBuilder| matches!(b.start(), Err(OidcError::Config(_)));
    assert!(refused(RemoteKeys::jwks("http://keys.example.com/jwks")));
    assert!(refused(
        RemoteKeys::jwks("https://x.example/").algorithms([Algorithm::HS256])
    ));
    assert!(refused(
        RemoteKeys::jwks("https://x.example/").algorithms([])
    ));
    assert!(refused(
        RemoteKeys::jwks("https://x.example/").cooldown(Duration::ZERO)
    ));
    let reversed = RemoteKeys::jwks("https://x.example/")
        .refresh_bounds(Duration::from_secs(10), Duration::from_secs(1));
    assert!(refused(reversed));
}

/// Fetches run on the crate's own thread: a key set starts outside any runtime,
/// and a fetch asked for by a runtime that then ends is neither lost nor left in
/// flight.
#[::core::prelude::v1::test]
fn fetches_do_not_depend_on_the_runtime_that_asked() {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (base, _) = server.block_on(serve(|_, _| ok(jwks("k1"))));
    let keys = quick(RemoteKeys::jwks(&base)).start().unwrap();
    let settled = |keys: &RemoteKeys, fetches: u64| {
        for _ in 0..200 {
            if keys.fetches() >= fetches && keys.inner.state().inflight.is_none() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("fetch {fetches} did not finish");
    };
    settled(&keys, 1);
    assert_eq!(keys.keys().unwrap().kids(), ["k1"]);
    let asker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    asker.block_on(async { assert!(keys.refetch_for_token().is_some()) });
    drop(asker);
    settled(&keys, 2);
    server.block_on(keys.refresh_now()).unwrap();
    assert_eq!(keys.fetches(), 3);
}

#[tokio::test]
async fn a_dropped_key_set_stops_its_refresh_task() {
    let (base, hits) = serve(|_, _| ok(jwks("k1"))).await;
    let keys = quick(RemoteKeys::jwks(&base))
        .refresh(Duration::from_millis(50))
        .refresh_bounds(Duration::from_millis(50), Duration::from_secs(1))
        .fetch()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(180)).await;
    let refreshed = hits.load(Ordering::SeqCst);
    assert!(refreshed >= 2, "the task refreshes ({refreshed})");
    drop(keys);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let at_drop = hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        at_drop,
        "no fetch after the drop"
    );
}

#[tokio::test]
async fn held_keys_outlive_failures_only_for_keep_keys_for() {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing = Arc::clone(&fail);
    let (base, _) = serve(move |_, _| {
        if failing.load(Ordering::SeqCst) {
            Some((500, String::new(), vec![]))
        } else {
            ok(jwks("k1"))
        }
    })
    .await;
    let keys = quick(RemoteKeys::jwks(&base))
        .keep_keys_for(Duration::from_millis(200))
        .fetch()
        .await
        .unwrap();
    fail.store(true, Ordering::SeqCst);
    assert!(keys.refresh_now().await.is_err());
    assert!(keys.keys().is_some(), "a failed refresh keeps the set");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(keys.refresh_now().await.is_err());
    assert!(
        keys.keys().is_none(),
        "past keep_keys_for the set is dropped"
    );
    fail.store(false, Ordering::SeqCst);
    keys.refresh_now().await.unwrap();
    assert!(keys.keys().is_some());
}
