//! One fetch of a key set: discovery when needed, the set itself, and what its
//! success (the new set, when it is held until) or failure (the backoff's count, the
//! held set dropped after `keep_keys_for`) changes.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    super::{client::Url, jwks, OidcError},
    Origin, Remote,
};
use crate::session::KeySet;

/// Clears `inflight` when its fetch ends, however it ends (a panic included), so a
/// later fetch can always start.
pub(super) struct ClearInFlight {
    pub(super) remote: Arc<Remote>,
    pub(super) generation: u64,
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
    pub(super) async fn fetch_once(clear: ClearInFlight) {
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
                        target: "tenancy::oidc",
                        origin = ?me.origin,
                        "no successful key fetch for {:?}: the held keys are dropped", me.options.keep_for
                    );
                }
                tracing::warn!(
                    target: "tenancy::oidc",
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
        let fetched = match self.client.get(&jwks).await {
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
                target: "tenancy::oidc",
                url = %jwks,
                skipped = ?read.skipped,
                "keys left out of the set"
            );
        }
        Ok(((fetched.body.to_vec(), read.keys), fetched.max_age))
    }

    async fn discover(&self, issuer: &str, discovery: &Url) -> Result<Url, OidcError> {
        let fetched = self
            .client
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
    use super::*;

    #[test]
    fn the_digest_tells_one_set_from_another() {
        let set = br#"{"keys": []}"#;
        let copy = String::from_utf8(set.to_vec()).unwrap();
        assert_eq!(digest(set), digest(copy.as_bytes()), "the same bytes");
        assert_ne!(digest(set), digest(br#"{"keys": [] }"#));
        assert_ne!(digest(b""), digest(b" "));
    }
}
