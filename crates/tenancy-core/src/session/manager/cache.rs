//! The verified-token cache: tokens by their exact bytes, hashed by their tail, each
//! used only while the keys (and binding) that verified it are still held.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use dashmap::DashMap;

#[cfg(feature = "oidc")]
use super::Trust;
use super::{Checked, SessionManager, Verified, MAX_TOKEN_LEN};
use crate::session::keys::KeySet;

/// Verified access tokens by their exact bytes, until they expire: a token seen again
/// skips the signature and the claims parse. Each entry remembers the key set that
/// verified it and is only used while that set is the current one, so a token checked
/// while a key was being retired can never outlive the key.
pub(super) struct TokenCache {
    /// By the token's exact bytes (a hit needs no parsing, not even of its characters).
    map: DashMap<Box<[u8]>, (VerifiedBy, Arc<Checked>), TailHash>,
    max: usize,
    /// The second (the sessions' clock) of the last sweep of a full map: at most one a
    /// second, so a full map of live tokens costs each new token one lookup, not a
    /// walk over every entry.
    swept: AtomicU64,
    /// How many sweeps ran.
    #[cfg(test)]
    sweeps: std::sync::atomic::AtomicUsize,
}

/// Hashes a token by its length and its last 32 bytes, the end of its signature: a
/// lookup hashes 32 bytes instead of the whole token (about 220), and equality still
/// compares every byte. Only verified tokens are stored, whose signatures are the
/// issuer's and cannot be chosen, so their ends do not collide by design; a client
/// sending tokens that all end alike only makes its own lookups miss.
#[derive(Clone, Default)]
struct TailHash(foldhash::fast::RandomState);

/// [`TailHash`]'s hasher.
struct TailHasher(foldhash::fast::FoldHasher<'static>);

/// How much of a token's end is hashed.
const HASHED_TAIL: usize = 32;

impl std::hash::BuildHasher for TailHash {
    type Hasher = TailHasher;

    #[inline]
    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

impl std::hash::Hasher for TailHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0
            .write(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..]);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0.write_usize(n);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// The key set a cached token was verified by, and where that set is held: the
/// entry is used only while that set is still the one held there.
#[derive(Clone)]
pub(super) struct VerifiedBy {
    pub(super) keys: Arc<KeySet>,
    #[cfg(feature = "oidc")]
    pub(super) remote: Option<crate::session::oidc::RemoteKeys>,
    /// Per-tenant providers: the binding the token was checked against, which must
    /// still be the tenant's.
    #[cfg(feature = "oidc")]
    pub(super) binding: Option<Arc<crate::session::oidc::Binding>>,
}

impl TokenCache {
    pub(super) fn new(max: usize) -> Self {
        Self {
            map: DashMap::default(),
            max,
            swept: AtomicU64::new(u64::MAX),
            #[cfg(test)]
            sweeps: Default::default(),
        }
    }

    /// Forgets every token (the keys changed: entries of the old set are never used
    /// again).
    pub(super) fn clear(&self) {
        self.map.clear();
    }
}

impl SessionManager {
    /// A cached check of `token`, if it is still good: not expired, verified by the
    /// key set still held, and (per-tenant providers) its issuer still the tenant's.
    ///
    /// By the exact bytes: a token seen and verified before needs no other check, not
    /// even of its characters, so the stage asks this first with the header's bytes.
    pub(crate) fn cached(&self, token: &[u8]) -> Option<Arc<Checked>> {
        let cache = &self.inner.cache;
        if cache.max == 0 || token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let now = self.now();
        let leeway = self.inner.config.leeway.as_secs();
        let hit = cache.map.get(token)?;
        let (by, checked) = &*hit;
        if checked.expires_at.saturating_add(leeway) < now || !self.still_held(by) {
            return None;
        }
        let checked = Arc::clone(checked);
        #[cfg(feature = "oidc")]
        {
            // Out of the map's guard before the registry runs.
            let binding = by.binding.clone();
            drop(hit);
            if let (Trust::Tenants(t), Some(binding)) = (&self.inner.trust, binding) {
                let tenant = checked.principal.tenant()?;
                if t.still_bound(tenant, &binding) != Some(true) {
                    return None;
                }
            }
        }
        Some(checked)
    }

    /// Whether the key set that verified a cached token is still the one in use (a
    /// remote set's schedule runs on the system's time, whatever the sessions' clock).
    fn still_held(&self, by: &VerifiedBy) -> bool {
        #[cfg(feature = "oidc")]
        if let Some(remote) = &by.remote {
            return remote
                .keys_at(crate::session::now())
                .is_some_and(|k| Arc::ptr_eq(&k, &by.keys));
        }
        Arc::ptr_eq(&self.inner.keys.load(), &by.keys)
    }

    /// Caches a verified token (when there is room after dropping stale entries).
    pub(super) fn remember(&self, token: &str, by: VerifiedBy, v: Verified) -> Arc<Checked> {
        let checked = Arc::new(Checked::from(v));
        let cache = &self.inner.cache;
        if cache.max == 0 || token.len() > MAX_TOKEN_LEN {
            return checked;
        }
        if cache.map.len() >= cache.max {
            let (now, leeway) = (self.now(), self.inner.config.leeway.as_secs());
            if cache.swept.swap(now, Ordering::Relaxed) == now {
                return checked; // swept this second: not remembered
            }
            #[cfg(test)]
            cache.sweeps.fetch_add(1, Ordering::Relaxed);
            cache.map.retain(|_, (by, c)| {
                self.still_held(by) && c.expires_at.saturating_add(leeway) >= now
            });
        }
        if cache.map.len() < cache.max {
            cache
                .map
                .insert(token.as_bytes().into(), (by, Arc::clone(&checked)));
        }
        checked
    }
}

#[cfg(test)]
mod tests {
    use std::{hash::BuildHasher, time::Duration};

    use serde_json::{json, Value};

    use super::{
        super::{
            testkit::{claims, config, mint, sessions, T0},
            Check, SessionConfig,
        },
        *,
    };

    /// A good access token of acme's `u1`, numbered `n` (its `jti`), with `patch`.
    fn token(n: u32, patch: Value) -> String {
        let mut claims = claims(patch);
        claims["jti"] = format!("j{n}").into();
        mint(&claims)
    }

    /// Checks `token`, which must pass.
    fn checked(s: &SessionManager, token: &str) -> Arc<Checked> {
        match s.check(token) {
            Check::Ready(done) => done.unwrap(),
            #[cfg(feature = "oidc")]
            Check::Wait(_) => panic!("own keys never wait"),
        }
    }

    fn held(s: &SessionManager, token: &str) -> bool {
        s.cached(token.as_bytes()).is_some()
    }

    fn size(s: &SessionManager) -> usize {
        s.inner.cache.map.len()
    }

    fn small(max: usize) -> SessionConfig {
        config().verified_cache(max)
    }

    #[test]
    fn tokens_are_found_by_their_bytes_though_hashed_by_their_end() {
        let map: DashMap<Box<[u8]>, u32, TailHash> = DashMap::default();
        let tail = "x".repeat(HASHED_TAIL);
        let (a, b) = (format!("aaaa.{tail}"), format!("bbbb.{tail}"));
        map.insert(a.as_bytes().into(), 1);
        map.insert(b.as_bytes().into(), 2);
        assert_eq!(map.len(), 2, "the same end, two tokens");
        assert_eq!(*map.get(a.as_bytes()).unwrap(), 1);
        assert_eq!(*map.get(b.as_bytes()).unwrap(), 2);
        assert!(map.get(format!("cccc.{tail}").as_bytes()).is_none());
        assert!(map.get(&b"short"[..]).is_none());
        map.insert(b"short".to_vec().into(), 3);
        assert_eq!(*map.get(&b"short"[..]).unwrap(), 3);
    }

    #[test]
    fn the_hash_reads_a_tokens_length_and_its_last_bytes_only() {
        let build = TailHash::default();
        let tail = "t".repeat(HASHED_TAIL);
        let hash = |s: String| build.hash_one(s.as_bytes());
        assert_eq!(
            hash(format!("aaaa.{tail}")),
            hash(format!("bbbb.{tail}")),
            "the same length and end"
        );
        assert_ne!(hash(format!("aaaa.{tail}")), hash(format!("aaaa.{tail}x")));
        let other_end = format!("aaaa.{}u", &tail[1..]);
        assert_ne!(
            hash(format!("aaaa.{tail}")),
            hash(other_end),
            "another last byte"
        );
        assert_ne!(hash(format!("aaaa.{tail}")), hash(format!("aaaaa.{tail}")));
    }

    #[test]
    fn a_token_checked_once_comes_from_the_cache_by_its_exact_bytes() {
        let (s, _) = sessions(config());
        let expired = token(1, json!({"exp": T0 - 60, "iat": T0 - 120}));
        assert!(matches!(s.check(&expired), Check::Ready(Err(_))));
        assert_eq!(size(&s), 0, "a token refused is not remembered");
        let good = token(1, json!({}));
        assert!(!held(&s, &good));
        let first = checked(&s, &good);
        let again = s.cached(good.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the same check, not a new one");
        assert!(Arc::ptr_eq(&first, &checked(&s, &good)));
        assert_eq!(size(&s), 1);

        // Its last byte changed (the end the hash reads), or a byte of its claims
        // (the same end): not the token cached.
        let mut tail = good.clone().into_bytes();
        *tail.last_mut().unwrap() ^= 1;
        assert!(s.cached(&tail).is_none());
        let mut head = good.clone().into_bytes();
        head[40] ^= 1;
        assert_eq!(
            head[head.len() - HASHED_TAIL..],
            good.as_bytes()[good.len() - HASHED_TAIL..]
        );
        assert!(s.cached(&head).is_none());
        assert!(s.cached(&good.as_bytes()[..good.len() - 1]).is_none());
        assert!(s.cached(&[b'a'; MAX_TOKEN_LEN + 1]).is_none());
    }

    #[test]
    fn a_cached_token_expires_with_the_leeway() {
        let (s, time) = sessions(config());
        let good = token(1, json!({}));
        checked(&s, &good);
        time.advance(Duration::from_secs(600 + 30));
        assert!(held(&s, &good), "through its `exp` plus the leeway");
        time.advance(Duration::from_secs(1));
        assert!(!held(&s, &good));
        assert!(
            matches!(s.check(&good), Check::Ready(Err(_))),
            "and checked again"
        );
    }

    #[test]
    fn a_full_cache_keeps_what_it_holds_until_it_expires() {
        let (s, time) = sessions(small(2));
        let (one, two, three) = (
            token(1, json!({})),
            token(2, json!({})),
            token(3, json!({})),
        );
        for t in [&one, &two, &three] {
            checked(&s, t);
        }
        assert!(held(&s, &one) && held(&s, &two));
        assert!(!held(&s, &three), "no room: checked, not remembered");
        assert_eq!(size(&s), 2);
        // Full of live tokens: one sweep a second, not one for every new token.
        for n in 10..50 {
            checked(&s, &token(n, json!({})));
        }
        assert_eq!(s.inner.cache.sweeps.load(Ordering::Relaxed), 1);
        time.advance(Duration::from_secs(1));
        checked(&s, &token(50, json!({})));
        assert_eq!(s.inner.cache.sweeps.load(Ordering::Relaxed), 2);

        // Once those two have expired, the next token remembered sweeps them out.
        time.advance(Duration::from_secs(630));
        let now = T0 + 631;
        let four = token(4, json!({"iat": now, "nbf": now, "exp": now + 600}));
        checked(&s, &four);
        assert!(held(&s, &four));
        assert_eq!(size(&s), 1, "the expired ones are gone");
    }

    #[test]
    fn a_cache_of_none_remembers_nothing() {
        let (s, _) = sessions(small(0));
        let good = token(1, json!({}));
        let (a, b) = (checked(&s, &good), checked(&s, &good));
        assert!(!Arc::ptr_eq(&a, &b), "checked twice");
        assert!(!held(&s, &good));
        assert_eq!(size(&s), 0);
    }

    #[test]
    fn an_entry_is_used_only_while_its_keys_are_held() {
        let (s, _) = sessions(config());
        let good = token(1, json!({}));
        checked(&s, &good);
        // The same keys, but another set: the entry stays in the map, unused.
        s.inner.keys.store(Arc::new(s.keys().as_ref().clone()));
        assert_eq!(size(&s), 1);
        assert!(!held(&s, &good), "verified by a set no longer held");
        checked(&s, &good);
        assert!(held(&s, &good), "checked again with the set held now");

        // A full cache sweeps entries of sets no longer held.
        let (s, _) = sessions(small(1));
        checked(&s, &good);
        s.inner.keys.store(Arc::new(s.keys().as_ref().clone()));
        let other = token(2, json!({}));
        checked(&s, &other);
        assert!(held(&s, &other));
        assert_eq!(size(&s), 1);

        // Changing the keys through the manager empties the cache.
        s.set_keys(s.keys().as_ref().clone());
        assert_eq!(size(&s), 0);
        assert!(!held(&s, &other));
    }
}
