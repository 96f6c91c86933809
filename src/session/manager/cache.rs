//! The verified-token cache: tokens by their exact bytes, hashed by their tail, each
//! used only while the keys (and binding) that verified it are still held.

use std::sync::Arc;

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
    use super::*;

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
}
