//! [`RemoteKeys`]: a provider's key set, fetched (after OpenID discovery or from a JWKS
//! URL), refreshed by a task it owns, refetched on an unknown `kid` at most once per
//! cooldown.
//!
//! - this file: [`RemoteKeys`], the state it shares with its refresh task, and the
//!   thread every fetch runs on;
//! - `builder`: [`RemoteKeysBuilder`], its settings and their checks;
//! - `schedule`: when to fetch: the refresh loop, its backoff after failures, and the
//!   refetch a token with an unknown `kid` may cause (once per cooldown);
//! - `fetch`: one fetch: discovery, the key set, and what a success or a failure
//!   changes.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use futures_util::future::{BoxFuture, Shared};
use jsonwebtoken::Algorithm;

use super::{
    client::{Http, Url},
    OidcError,
};
use crate::session::KeySet;

mod builder;
mod fetch;
mod schedule;

pub use builder::RemoteKeysBuilder;

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
    client: Http,
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
                .name("tenancy-oidc".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| OidcError::Config(format!("the key fetch thread did not start: {e}")))
}

#[cfg(test)]
mod tests;
