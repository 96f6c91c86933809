//! [`RemoteKeys`]: a provider's key set, fetched (after OpenID discovery or from a JWKS
//! URL), refreshed by a task it owns, refetched on an unknown `kid` at most once per
//! cooldown.

use std::{
    fmt,
    hash::{BuildHasher as _, Hasher as _},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use futures_util::{
    future::{BoxFuture, Shared},
    FutureExt as _,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde_json::Value;

use super::{
    http::{default_tls, Http, Url},
    jwks, OidcError,
};
use crate::session::KeySet;

/// A fetch that requests can wait for.
type InFlight = Shared<BoxFuture<'static, ()>>;

/// Where the keys come from.
#[derive(Debug, Clone)]
enum Origin {
    /// An issuer: discovery gives the JWKS URL.
    Issuer { issuer: String, discovery: Url },
    /// A JWKS URL given directly.
    Jwks(Url),
}

/// Where the keys come from, as given (parsed when the key set is built).
#[derive(Debug, Clone)]
enum Given {
    Issuer(String),
    Jwks(String),
}

#[derive(Debug, Clone)]
struct Options {
    algorithms: Vec<Algorithm>,
    refresh: Duration,
    refresh_min: Duration,
    refresh_max: Duration,
    cooldown: Duration,
    keep_for: Duration,
    max_keys: usize,
    plain_loopback: bool,
}

#[derive(Default)]
struct State {
    jwks: Option<Url>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    /// When a token last caused a fetch (the cooldown's start).
    token_fetch_at: Option<Instant>,
    inflight: Option<InFlight>,
    /// How long the last good set may be used before the next refresh.
    fresh_for: Duration,
    failures: u32,
    /// Counts fetches started, so a finished fetch clears only its own `inflight`.
    generation: u64,
    /// Why the last fetch failed.
    last_error: Option<OidcError>,
    digest: Option<u64>,
}

struct Remote {
    origin: Origin,
    http: Http,
    options: Options,
    keys: ArcSwapOption<KeySet>,
    /// Unix seconds after which the held set is no longer used (`keep_keys_for` past
    /// the last successful fetch).
    held_until: AtomicU64,
    state: Mutex<State>,
    fetches: AtomicU64,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// A remote key set: an identity provider's signing keys, kept fresh.
///
/// Built from an issuer ([`RemoteKeys::issuer`]: OpenID discovery at
/// `{issuer}/.well-known/openid-configuration`, whose `issuer` must be exactly the one
/// configured, gives `jwks_uri`) or a JWKS URL ([`RemoteKeys::jwks`]); give it to
/// [`SessionManager::remote`](crate::session::SessionManager::remote).
///
/// - **First fetch**: [`fetch`](RemoteKeysBuilder::fetch) waits for it and fails when
///   it fails (refuse to start); [`start`](RemoteKeysBuilder::start) returns at once,
///   and until keys arrive every token is answered `503 auth_unavailable`.
/// - **Refresh**: a task the key set owns (stopped when the last clone is dropped)
///   refetches after the response's `Cache-Control: max-age`, kept within
///   [`refresh_bounds`](RemoteKeysBuilder::refresh_bounds) (default 1 min to 24 h), or
///   after [`refresh`](RemoteKeysBuilder::refresh) (default 1 h) without one.
/// - **Unknown `kid`**: the token's request waits for one refetch, at most once per
///   [`cooldown`](RemoteKeysBuilder::cooldown) (default 30 s) however many such tokens
///   arrive; requests arriving while it runs wait for the same one. A `kid` still
///   unknown, or one seen during the cooldown, is `401 invalid_token`: an unpublished
///   key cannot be told from a forged one.
/// - **Failure**: a failed refresh keeps the last good set, retried after the cooldown,
///   doubling up to the refresh interval. After
///   [`keep_keys_for`](RemoteKeysBuilder::keep_keys_for) (default 24 h) without a
///   successful fetch the set is dropped, and tokens are `503 auth_unavailable` until
///   one succeeds: a key the provider withdrew meanwhile must not verify forever.
/// - **Bounded**: the answer at most 1 MiB, at most 64 keys, 5 s to connect and 10 s in
///   all; HTTPS only (plain HTTP to loopback addresses, for tests); redirects are not
///   followed.
/// - **Algorithms**: each key is pinned to one algorithm of
///   [`algorithms`](RemoteKeysBuilder::algorithms) (default RS256, ES256, ES384, EdDSA):
///   its `alg`, or without one (Microsoft Entra ID publishes such keys) the only
///   allowed algorithm its `kty`/`crv` fits. HMAC is never allowed, `use: enc` keys are
///   skipped, and a token without `kid` uses the one key of its `alg` or is refused as
///   ambiguous.
#[derive(Clone)]
pub struct RemoteKeys {
    inner: Arc<Remote>,
}

impl fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("origin", &self.inner.origin)
            .field("keys", &self.inner.keys.load().as_deref())
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

/// Builds [`RemoteKeys`].
#[must_use]
pub struct RemoteKeysBuilder {
    given: Given,
    options: Options,
    connect_timeout: Duration,
    timeout: Duration,
    max_bytes: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for RemoteKeysBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteKeysBuilder")
            .field("from", &self.given)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RemoteKeys {
    /// The keys of the OpenID provider `issuer` (e.g. `https://login.example.com/`),
    /// found by discovery.
    pub fn issuer(issuer: &str) -> RemoteKeysBuilder {
        RemoteKeysBuilder::new(Given::Issuer(issuer.to_owned()))
    }

    /// The keys published at a JWKS URL.
    pub fn jwks(url: &str) -> RemoteKeysBuilder {
        RemoteKeysBuilder::new(Given::Jwks(url.to_owned()))
    }

    /// The keys held now; `None` before the first successful fetch, and once the held
    /// set has outlived [`keep_keys_for`](RemoteKeysBuilder::keep_keys_for) without a
    /// successful refresh.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys_at(crate::session::now())
    }

    /// [`keys`](Self::keys) at `now` (unix seconds).
    pub(crate) fn keys_at(&self, now: u64) -> Option<Arc<KeySet>> {
        let keys = self.inner.keys.load_full()?;
        (now <= self.inner.held_until.load(Ordering::Relaxed)).then_some(keys)
    }

    /// The issuer, for keys found by discovery.
    pub fn issuer_name(&self) -> Option<&str> {
        match &self.inner.origin {
            Origin::Issuer { issuer, .. } => Some(issuer),
            Origin::Jwks(_) => None,
        }
    }

    /// How many fetches were started (discovery and key set count as one).
    pub fn fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// Fetches now, whatever the cooldown, and waits for it (joining one already
    /// running). An operator's "refresh now".
    pub async fn refresh_now(&self) -> Result<(), OidcError> {
        runtime()?;
        let fetch = Remote::refetch(&self.inner, true).ok_or(OidcError::NoRuntime)?;
        fetch.await;
        match self.inner.state().last_error.clone() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// A fetch to wait for because a token names an unknown `kid` (or no keys are held
    /// yet); `None` during the cooldown.
    pub(crate) fn refetch_for_token(&self) -> Option<InFlight> {
        Remote::refetch(&self.inner, false)
    }
}

impl RemoteKeysBuilder {
    fn new(given: Given) -> Self {
        Self {
            given,
            options: Options {
                algorithms: vec![
                    Algorithm::RS256,
                    Algorithm::ES256,
                    Algorithm::ES384,
                    Algorithm::EdDSA,
                ],
                refresh: Duration::from_secs(3600),
                refresh_min: Duration::from_secs(60),
                refresh_max: Duration::from_secs(24 * 3600),
                cooldown: Duration::from_secs(30),
                keep_for: Duration::from_secs(24 * 3600),
                max_keys: 64,
                plain_loopback: false,
            },
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_bytes: 1 << 20,
            tls: None,
        }
    }

    /// The algorithms keys may be pinned to (default RS256, ES256, ES384, EdDSA).
    /// HMAC algorithms are refused: a published key is public.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.options.algorithms = algorithms.into_iter().collect();
        self
    }

    /// How long a set is used before it is refetched when the provider sends no
    /// `Cache-Control: max-age` (default 1 h).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.options.refresh = every;
        self
    }

    /// The bounds a provider's `max-age` is kept within (default 1 min to 24 h).
    pub fn refresh_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.options.refresh_min = min;
        self.options.refresh_max = max;
        self
    }

    /// The least time between two fetches caused by tokens naming an unknown `kid`
    /// (default 30 s); also the first retry delay after a failed refresh.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.options.cooldown = cooldown;
        self
    }

    /// How long the last good set is used while refreshes fail (default 24 h).
    pub fn keep_keys_for(mut self, keep: Duration) -> Self {
        self.options.keep_for = keep;
        self
    }

    /// The largest answer read, in bytes (default 1 MiB).
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    /// The most keys a set may hold (default 64); a larger set is refused whole.
    pub fn max_keys(mut self, max: usize) -> Self {
        self.options.max_keys = max;
        self
    }

    /// The connect and the total timeout of one fetch (default 5 s and 10 s).
    pub fn timeouts(mut self, connect: Duration, total: Duration) -> Self {
        self.connect_timeout = connect;
        self.timeout = total;
        self
    }

    /// Allows plain `http://` to a loopback address (`127.0.0.1`, `[::1]`,
    /// `localhost`), for a provider running beside the tests; off by default, when
    /// only HTTPS is fetched.
    pub fn allow_plain_loopback(mut self, allow: bool) -> Self {
        self.options.plain_loopback = allow;
        self
    }

    /// The TLS client configuration (default: the webpki root certificates on
    /// aws-lc-rs), e.g. to trust a private CA.
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    fn assemble(self) -> Result<RemoteKeys, OidcError> {
        let o = &self.options;
        let parse = |url: &str| Url::parse(url, o.plain_loopback).map_err(OidcError::Config);
        let origin = match &self.given {
            Given::Jwks(url) => Origin::Jwks(parse(url)?),
            Given::Issuer(issuer) => {
                parse(issuer)?;
                // An issuer has no query or fragment (OpenID Connect Discovery 1.0, 2).
                if issuer.contains('?') {
                    return Err(OidcError::Config(format!(
                        "the issuer {issuer:?} has a query"
                    )));
                }
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                Origin::Issuer {
                    issuer: issuer.clone(),
                    discovery: parse(&discovery)?,
                }
            }
        };
        if o.algorithms.is_empty() {
            return Err(OidcError::Config("no algorithm is allowed".into()));
        }
        if let Some(hmac) = o
            .algorithms
            .iter()
            .find(|a| a.family() == AlgorithmFamily::Hmac)
        {
            return Err(OidcError::Config(format!(
                "{hmac:?} cannot verify a published key: HMAC needs a shared secret"
            )));
        }
        let zero = [
            (o.refresh, "the refresh interval"),
            (o.refresh_min, "the least refresh interval"),
            (o.cooldown, "the cooldown"),
            (o.keep_for, "how long keys are kept"),
            (self.connect_timeout, "the connect timeout"),
            (self.timeout, "the timeout"),
        ];
        if let Some((_, what)) = zero.iter().find(|(d, _)| d.is_zero()) {
            return Err(OidcError::Config(format!("{what} is zero")));
        }
        if o.refresh_min > o.refresh_max {
            return Err(OidcError::Config("the refresh bounds are reversed".into()));
        }
        if self.max_bytes == 0 || o.max_keys == 0 {
            return Err(OidcError::Config("a zero size limit".into()));
        }
        let tls = match self.tls {
            Some(tls) => tls,
            None => default_tls().map_err(OidcError::Config)?,
        };
        let http = Http {
            tls,
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            max_bytes: self.max_bytes,
        };
        let jwks = match &origin {
            Origin::Jwks(url) => Some(url.clone()),
            Origin::Issuer { .. } => None,
        };
        let remote = Arc::new(Remote {
            origin,
            http,
            options: self.options,
            keys: ArcSwapOption::empty(),
            held_until: AtomicU64::new(0),
            state: Mutex::new(State {
                jwks,
                ..State::default()
            }),
            fetches: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        Ok(RemoteKeys { inner: remote })
    }

    /// Fetches the keys before returning: an error when the first fetch fails (the
    /// service should not start).
    pub async fn fetch(self) -> Result<RemoteKeys, OidcError> {
        let keys = self.assemble()?;
        keys.refresh_now().await?;
        Remote::spawn_refresher(&keys.inner)?;
        Ok(keys)
    }

    /// Returns at once; the first fetch runs on the refresh task, and tokens are `503
    /// auth_unavailable` until it succeeds.
    pub fn start(self) -> Result<RemoteKeys, OidcError> {
        let keys = self.assemble()?;
        Remote::spawn_refresher(&keys.inner)?;
        Ok(keys)
    }
}

/// The runtime every fetch and refresh runs on: one thread of the crate's own, started
/// on first use. No fetch then depends on an actix worker's runtime (which ends with
/// its server, and would leave a fetch unfinished), and a key set can be built outside
/// any runtime.
fn runtime() -> Result<&'static tokio::runtime::Handle, OidcError> {
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Handle, String>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("actix-tenancy-oidc".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| OidcError::Config(format!("the key fetch thread did not start: {e}")))
}

/// Clears `inflight` when its fetch ends, however it ends (a panic included), so a
/// later fetch can always start.
struct ClearInFlight {
    remote: Arc<Remote>,
    generation: u64,
}

impl Drop for ClearInFlight {
    fn drop(&mut self) {
        let mut s = self.remote.state();
        if s.generation == self.generation {
            s.inflight = None;
        }
    }
}

fn digest(body: &[u8]) -> u64 {
    // Which set, not a secret: a fixed-seed hash tells "unchanged" apart.
    let mut h = foldhash::fast::FixedState::with_seed(0x6a77_6b73).build_hasher();
    h.write(body);
    h.finish()
}

impl Remote {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn_refresher(me: &Arc<Self>) -> Result<(), OidcError> {
        let weak = Arc::downgrade(me);
        let task = runtime()?.spawn(Self::refresher(weak));
        *me.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        Ok(())
    }

    /// The refresh loop; it holds the key set only while it fetches, and ends when
    /// the key set is dropped.
    async fn refresher(weak: Weak<Self>) {
        loop {
            let wait = match weak.upgrade() {
                Some(me) => me.next_refresh_in(),
                None => return,
            };
            tokio::time::sleep(wait.max(Duration::from_millis(20))).await;
            let fetch = match weak.upgrade() {
                Some(me) => Self::refetch(&me, true),
                None => return,
            };
            if let Some(fetch) = fetch {
                fetch.await;
            }
        }
    }

    fn next_refresh_in(&self) -> Duration {
        let s = self.state();
        let o = &self.options;
        match (s.fetched_at, s.failures) {
            (Some(at), 0) => s.fresh_for.saturating_sub(at.elapsed()),
            (None, 0) => Duration::ZERO,
            (_, n) => {
                let backoff = o.cooldown.saturating_mul(1 << (n - 1).min(16));
                let since = s.attempted_at.map_or(Duration::MAX, |t| t.elapsed());
                backoff.min(o.refresh).saturating_sub(since)
            }
        }
    }

    /// A fetch to wait for: the one running, or a new one unless `!force` and the last
    /// began within the cooldown.
    fn refetch(me: &Arc<Self>, force: bool) -> Option<InFlight> {
        let mut s = me.state();
        if let Some(running) = &s.inflight {
            return Some(running.clone());
        }
        if !force
            && s.token_fetch_at
                .is_some_and(|t| t.elapsed() < me.options.cooldown)
        {
            return None;
        }
        let runtime = runtime().ok()?;
        let now = Instant::now();
        s.attempted_at = Some(now);
        if !force {
            s.token_fetch_at = Some(now);
        }
        s.generation += 1;
        let clear = ClearInFlight {
            remote: Arc::clone(me),
            generation: s.generation,
        };
        let task = runtime.spawn(Self::fetch_once(clear));
        // Waiters may go away; the spawned fetch finishes anyway and clears itself.
        let running: InFlight = async move {
            let _ = task.await;
        }
        .boxed()
        .shared();
        s.inflight = Some(running.clone());
        Some(running)
    }

    async fn fetch_once(clear: ClearInFlight) {
        let me = &clear.remote;
        me.fetches.fetch_add(1, Ordering::Relaxed);
        let result = me.fetch_keys().await;
        let mut s = me.state();
        match result {
            Ok((body, max_age)) => {
                let o = &me.options;
                s.fresh_for = max_age
                    .unwrap_or(o.refresh)
                    .clamp(o.refresh_min, o.refresh_max);
                s.fetched_at = Some(Instant::now());
                s.failures = 0;
                s.last_error = None;
                let keep = o.keep_for.as_secs().max(1);
                me.held_until.store(
                    crate::session::now().saturating_add(keep),
                    Ordering::Relaxed,
                );
                let d = digest(&body.0);
                if s.digest != Some(d) || me.keys.load().is_none() {
                    // A new set: replacing it empties the verified-token cache's hold.
                    s.digest = Some(d);
                    me.keys.store(Some(Arc::new(body.1)));
                }
            }
            Err(e) => {
                s.failures = s.failures.saturating_add(1);
                s.last_error = Some(e.clone());
                let held = s
                    .fetched_at
                    .is_some_and(|t| t.elapsed() <= me.options.keep_for);
                if !held && me.keys.load().is_some() {
                    me.held_until.store(0, Ordering::Relaxed);
                    me.keys.store(None);
                    tracing::error!(
                        target: "actix_tenancy::oidc",
                        origin = ?me.origin,
                        "no successful key fetch for {:?}: the held keys are dropped", me.options.keep_for
                    );
                }
                tracing::warn!(
                    target: "actix_tenancy::oidc",
                    origin = ?me.origin,
                    failures = s.failures,
                    keys_held = held,
                    "key fetch failed: {e}"
                );
            }
        }
    }

    /// Discovery when needed, then the key set: the raw body (for the digest) and the
    /// set, and the answer's `max-age`.
    async fn fetch_keys(&self) -> Result<((Vec<u8>, KeySet), Option<Duration>), OidcError> {
        let jwks = self.state().jwks.clone();
        let jwks = match (jwks, &self.origin) {
            (Some(url), _) => url,
            (None, Origin::Issuer { issuer, discovery }) => {
                let url = self.discover(issuer, discovery).await?;
                self.state().jwks = Some(url.clone());
                url
            }
            (None, Origin::Jwks(url)) => url.clone(),
        };
        let fetched = match self.http.get(&jwks).await {
            Ok(f) => f,
            Err(e) => {
                if matches!(self.origin, Origin::Issuer { .. }) {
                    // The provider may have moved its keys: discover again next time.
                    self.state().jwks = None;
                }
                return Err(OidcError::Fetch(format!("key set {jwks}: {e}")));
            }
        };
        let read = jwks::read(
            &fetched.body,
            &self.options.algorithms,
            self.options.max_keys,
        )
        .map_err(|e| OidcError::Fetch(format!("key set {jwks}: {e}")))?;
        if !read.skipped.is_empty() {
            tracing::debug!(
                target: "actix_tenancy::oidc",
                url = %jwks,
                skipped = ?read.skipped,
                "keys left out of the set"
            );
        }
        Ok(((fetched.body.to_vec(), read.keys), fetched.max_age))
    }

    async fn discover(&self, issuer: &str, discovery: &Url) -> Result<Url, OidcError> {
        let fetched = self
            .http
            .get(discovery)
            .await
            .map_err(|e| OidcError::Fetch(format!("discovery {discovery}: {e}")))?;
        let doc: Value = serde_json::from_slice(&fetched.body)
            .map_err(|e| OidcError::Fetch(format!("discovery {discovery}: {e}")))?;
        // OpenID Connect Discovery 1.0, 4.3: the document's issuer is exactly ours, or
        // a document served elsewhere could vouch for another provider's keys.
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(OidcError::Fetch(format!(
                "discovery {discovery}: its issuer is not {issuer:?}"
            )));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::Fetch(format!("discovery {discovery}: no jwks_uri")))?;
        let url = Url::parse(jwks_uri, self.options.plain_loopback)
            .map_err(|e| OidcError::Fetch(format!("discovery {discovery}: jwks_uri: {e}")))?;
        if url.is_plain() && !discovery.is_plain() {
            return Err(OidcError::Fetch(format!(
                "discovery {discovery}: jwks_uri is not HTTPS"
            )));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

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
}
