//! [`RemoteKeysBuilder`]: where the keys come from, the settings, and their checks.

use std::{
    fmt,
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwapOption;
use jsonwebtoken::{Algorithm, AlgorithmFamily};

use super::{
    super::{
        client::{default_tls, Http, Url},
        OidcError,
    },
    Given, Options, Origin, Remote, RemoteKeys, State,
};

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

impl RemoteKeysBuilder {
    pub(super) fn new(given: Given) -> Self {
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

    pub(super) fn assemble(self) -> Result<RemoteKeys, OidcError> {
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
        let client = Http {
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
            client,
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
