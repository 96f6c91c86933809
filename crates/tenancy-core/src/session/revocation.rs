//! Revoked tokens, subjects and tenants.

use std::{
    borrow::Cow,
    fmt,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use dashmap::DashMap;

use crate::{Answer, Clock};

/// What a revocation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation<'a> {
    /// One token, by `jti`.
    Token(&'a str),
    /// Every token of a refresh family (a login and all its refreshes).
    Family(&'a str),
    /// Every token of `subject` in `tenant` issued at or before `before` (unix seconds).
    Subject {
        /// The tenant.
        tenant: &'a str,
        /// The subject.
        subject: &'a str,
        /// The cut-off, in unix seconds.
        before: u64,
    },
    /// Every token of `tenant` issued at or before `before` (unix seconds).
    Tenant {
        /// The tenant.
        tenant: &'a str,
        /// The cut-off, in unix seconds.
        before: u64,
    },
}

/// The facts about a verified token that revocation is checked against.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct TokenFacts<'a> {
    /// The token's `jti`.
    pub jti: Option<&'a str>,
    /// The refresh family the token belongs to.
    pub family: Option<&'a str>,
    /// The tenant claim.
    pub tenant: Option<&'a str>,
    /// The `sub` claim.
    pub subject: &'a str,
    /// The `iat` claim, unix seconds. A token without one counts as issued before any
    /// cut-off: it fails closed.
    pub issued_at: Option<u64>,
}

impl<'a> TokenFacts<'a> {
    /// The facts of a token of `subject` with no `jti`, family, tenant or `iat`: set
    /// the fields that apply (a test of your own store, say).
    pub fn new(subject: &'a str) -> Self {
        Self {
            jti: None,
            family: None,
            tenant: None,
            subject,
            issued_at: None,
        }
    }
}

/// The revocation store could not answer. Verification fails closed on it.
#[derive(Debug, Clone)]
pub struct RevocationError(Cow<'static, str>);

impl RevocationError {
    /// A failure with a message for the logs.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "revocation store unavailable: {}", self.0)
    }
}

impl std::error::Error for RevocationError {}

/// What [`RevocationStore::consume`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Consumed {
    /// The refresh token was not used yet: this call marked it used, with its rotation.
    First,
    /// The refresh token was used already: the rotation its first use recorded (the
    /// manager answers a retry within its grace with that rotation's pair again).
    Already(String),
}

/// Where revocations are kept, and refresh tokens are marked used.
///
/// Every entry carries `until` (unix seconds): the last second in which a token it
/// applies to may still be accepted (tokens pass while `exp + leeway >= now`). An
/// entry must count through that whole second, `while now <= until`, and the store
/// may forget it once that second is over: a Redis key set at `now` needs
/// `EX until + 1 - now`, not `EX until - now`, which would lapse part-way into the
/// token's last second. Memory stays bounded by the tokens alive, not by every
/// revocation ever made. A second revocation of the same thing never shortens the
/// first: its entry is kept until the later `until`.
///
/// actix-tenancy's `testing::revocation_conformance` (feature `testing`) checks these
/// rules against any store.
pub trait RevocationStore: Send + Sync + 'static {
    /// Records a revocation, kept through the second `until`.
    fn revoke<'a>(
        &'a self,
        what: Revocation<'a>,
        until: u64,
    ) -> Answer<'a, Result<(), RevocationError>>;

    /// Whether any revocation applies to the token. A store that knows without
    /// waiting (in memory) answers [`Answer::Now`]; the JWT stage then creates no
    /// future (do the work of a later answer inside it: see [`Answer`]).
    fn is_revoked<'a>(
        &'a self,
        token: &'a TokenFacts<'_>,
    ) -> Answer<'a, Result<bool, RevocationError>>;

    /// Marks the refresh token `jti` used by `rotation` (an opaque mark the manager
    /// reads back), kept through the second `until`, atomically: the first call
    /// records its `rotation` and answers [`Consumed::First`]; every later call
    /// records nothing and answers [`Consumed::Already`] with the first call's
    /// `rotation`, also when the first call's answer never reached its caller.
    fn consume<'a>(
        &'a self,
        jti: &'a str,
        rotation: &'a str,
        until: u64,
    ) -> Answer<'a, Result<Consumed, RevocationError>>;
}

impl<S: RevocationStore + ?Sized> RevocationStore for std::sync::Arc<S> {
    fn revoke<'a>(
        &'a self,
        what: Revocation<'a>,
        until: u64,
    ) -> Answer<'a, Result<(), RevocationError>> {
        (**self).revoke(what, until)
    }

    fn is_revoked<'a>(
        &'a self,
        token: &'a TokenFacts<'_>,
    ) -> Answer<'a, Result<bool, RevocationError>> {
        (**self).is_revoked(token)
    }

    fn consume<'a>(
        &'a self,
        jti: &'a str,
        rotation: &'a str,
        until: u64,
    ) -> Answer<'a, Result<Consumed, RevocationError>> {
        (**self).consume(jti, rotation, until)
    }
}

type Map<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// A subject's cut-off: the subject, the cut-off and until, in unix seconds.
type SubjectCut = (Box<str>, u64, u64);

/// The in-memory [`RevocationStore`] of one process. Use a shared store
/// ([`RedisRevocations`](super::RedisRevocations), feature `redis`) when several
/// replicas serve the same tokens: a revocation here is not seen by the others.
#[derive(Debug, Default)]
pub struct InMemoryRevocations {
    tokens: Map<Box<str>, u64>,
    families: Map<Box<str>, u64>,
    /// Tenant → its cut-off and until.
    tenants: Map<Box<str>, (u64, u64)>,
    /// Tenant → subject → its cut-off and until.
    subjects: Map<Box<str>, Vec<SubjectCut>>,
    /// Refresh `jti` → until, and the rotation that used it.
    used: Map<Box<str>, (u64, Box<str>)>,
    writes: AtomicU64,
    clock: Clock,
    /// Which kinds of revocation were ever made (tokens, families, tenants, subjects):
    /// a check skips the maps of the kinds never used, so a store nobody revoked in
    /// costs next to nothing per request.
    ever: [AtomicBool; 4],
}

/// Whether an entry kept until `until` still counts at `now`: through its last second.
#[inline]
fn in_force(until: u64, now: u64) -> bool {
    until >= now
}

const TOKENS: usize = 0;
const FAMILIES: usize = 1;
const TENANTS: usize = 2;
const SUBJECTS: usize = 3;

impl InMemoryRevocations {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the time (whether an entry's `until` has passed) from `clock`: give it the
    /// same [`Clock`] as the [`SessionConfig`](super::SessionConfig), a fake one in tests.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How many entries are kept (expired ones go on later writes).
    pub fn len(&self) -> usize {
        self.tokens.len()
            + self.families.len()
            + self.tenants.len()
            + self.subjects.iter().map(|e| e.value().len()).sum::<usize>()
            + self.used.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry whose `until` has passed: an entry is kept through the
    /// second `until`, the last in which a token it applies to may be accepted.
    pub fn purge(&self) {
        let now = self.clock.unix_secs();
        let live = |until: u64| in_force(until, now);
        self.tokens.retain(|_, until| live(*until));
        self.families.retain(|_, until| live(*until));
        self.used.retain(|_, (until, _)| live(*until));
        self.tenants.retain(|_, (_, until)| live(*until));
        self.subjects.retain(|_, list| {
            list.retain(|(_, _, until)| live(*until));
            !list.is_empty()
        });
    }

    fn wrote(&self) {
        // Expired entries are swept every 1024 writes, so the cost is spread and the
        // store holds the live entries plus those expired since the last sweep.
        if self.writes.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.purge();
        }
    }

    /// Whether a revocation of kind `k` was ever made. Set after its entry is in (and
    /// read with acquire): a check that starts after `revoke` returned sees both.
    #[inline]
    fn ever(&self, k: usize) -> bool {
        self.ever[k].load(Ordering::Acquire)
    }

    fn check(&self, t: &TokenFacts<'_>) -> bool {
        if !self.ever.iter().any(|e| e.load(Ordering::Acquire)) {
            return false;
        }
        let now = self.clock.unix_secs();
        let live = |until: u64| in_force(until, now);
        let cut = |before: u64| t.issued_at.is_none_or(|iat| iat <= before);
        if let Some(jti) = t.jti.filter(|_| self.ever(TOKENS)) {
            if self.tokens.get(jti).is_some_and(|u| live(*u)) {
                return true;
            }
        }
        if let Some(family) = t.family.filter(|_| self.ever(FAMILIES)) {
            if self.families.get(family).is_some_and(|u| live(*u)) {
                return true;
            }
        }
        let Some(tenant) = t.tenant else {
            return false;
        };
        if let Some(e) = self
            .ever(TENANTS)
            .then(|| self.tenants.get(tenant))
            .flatten()
        {
            let (before, until) = *e;
            if live(until) && cut(before) {
                return true;
            }
        }
        if let Some(list) = self
            .ever(SUBJECTS)
            .then(|| self.subjects.get(tenant))
            .flatten()
        {
            return list
                .iter()
                .any(|(s, before, until)| **s == *t.subject && live(*until) && cut(*before));
        }
        false
    }
}

impl RevocationStore for InMemoryRevocations {
    fn revoke<'a>(
        &'a self,
        what: Revocation<'a>,
        until: u64,
    ) -> Answer<'a, Result<(), RevocationError>> {
        Answer::Now(self.write(what, until))
    }

    fn is_revoked<'a>(
        &'a self,
        token: &'a TokenFacts<'_>,
    ) -> Answer<'a, Result<bool, RevocationError>> {
        Answer::Now(Ok(self.check(token)))
    }

    fn consume<'a>(
        &'a self,
        jti: &'a str,
        rotation: &'a str,
        until: u64,
    ) -> Answer<'a, Result<Consumed, RevocationError>> {
        Answer::Now(self.mark_used(jti, rotation, until))
    }
}

impl InMemoryRevocations {
    fn write(&self, what: Revocation<'_>, until: u64) -> Result<(), RevocationError> {
        let keep = |old: u64| old.max(until);
        let kind = match what {
            Revocation::Token(_) => TOKENS,
            Revocation::Family(_) => FAMILIES,
            Revocation::Tenant { .. } => TENANTS,
            Revocation::Subject { .. } => SUBJECTS,
        };
        match what {
            Revocation::Token(jti) => {
                let mut e = self.tokens.entry(jti.into()).or_insert(until);
                *e = keep(*e);
            }
            Revocation::Family(f) => {
                let mut e = self.families.entry(f.into()).or_insert(until);
                *e = keep(*e);
            }
            Revocation::Tenant { tenant, before } => {
                let mut e = self.tenants.entry(tenant.into()).or_insert((before, until));
                *e = (e.0.max(before), keep(e.1));
            }
            Revocation::Subject {
                tenant,
                subject,
                before,
            } => {
                let mut list = self.subjects.entry(tenant.into()).or_default();
                match list.iter_mut().find(|(s, _, _)| **s == *subject) {
                    Some((_, b, u)) => {
                        *b = (*b).max(before);
                        *u = keep(*u);
                    }
                    None => list.push((subject.into(), before, until)),
                }
            }
        }
        self.ever[kind].store(true, Ordering::Release);
        self.wrote();
        Ok(())
    }

    fn mark_used(
        &self,
        jti: &str,
        rotation: &str,
        until: u64,
    ) -> Result<Consumed, RevocationError> {
        let now = self.clock.unix_secs();
        let answer = match self.used.entry(jti.into()) {
            // A mark past its `until` counts as gone, swept or not.
            dashmap::Entry::Occupied(e) if in_force(e.get().0, now) => {
                Consumed::Already(e.get().1.to_string())
            }
            dashmap::Entry::Occupied(mut e) => {
                e.insert((until, rotation.into()));
                Consumed::First
            }
            dashmap::Entry::Vacant(v) => {
                v.insert((until, rotation.into()));
                Consumed::First
            }
        };
        self.wrote();
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(jti: &'a str, tenant: &'a str, subject: &'a str, iat: u64) -> TokenFacts<'a> {
        TokenFacts {
            jti: Some(jti),
            family: None,
            tenant: Some(tenant),
            subject,
            issued_at: Some(iat),
        }
    }

    #[tokio::test]
    async fn entries_go_once_their_tokens_have_expired() {
        let store = InMemoryRevocations::new();
        let now = super::super::now();
        store
            .revoke(Revocation::Token("old"), now - 1)
            .await
            .unwrap();
        store
            .revoke(Revocation::Token("live"), now + 600)
            .await
            .unwrap();
        let cut = Revocation::Subject {
            tenant: "acme",
            subject: "u",
            before: now - 10,
        };
        store.revoke(cut, now - 1).await.unwrap();
        assert_eq!(
            store.consume("used", "r", now - 1).await.unwrap(),
            Consumed::First
        );
        assert_eq!(store.len(), 4);
        // An expired entry no longer revokes anything, swept or not.
        assert!(!store.check(&facts("old", "acme", "u", now - 20)));
        assert!(store.check(&facts("live", "acme", "u", now)));
        store.purge();
        assert_eq!(store.len(), 1, "only the live revocation is kept");
        assert!(store.check(&facts("live", "acme", "u", now)));
    }

    #[tokio::test]
    async fn entries_count_and_are_kept_through_their_last_second() {
        use crate::FakeClock;
        let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let time = FakeClock::starting_at(start);
        let store = InMemoryRevocations::new().with_clock(time.clock());
        let now = 1_800_000_000;
        store.revoke(Revocation::Token("t"), now + 5).await.unwrap();
        let used = store.consume("r", "rotation-1", now + 5).await.unwrap();
        assert_eq!(used, Consumed::First);
        time.advance(std::time::Duration::from_secs(5));
        store.purge();
        assert!(
            store.check(&facts("t", "acme", "u", now)),
            "in its last second"
        );
        assert_eq!(
            store.consume("r", "rotation-2", now + 5).await.unwrap(),
            Consumed::Already("rotation-1".into()),
            "a used mark in its last second, after a purge"
        );
        time.advance(std::time::Duration::from_secs(1));
        assert!(!store.check(&facts("t", "acme", "u", now)), "then gone");
        store.purge();
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn a_later_cut_off_wins_and_the_earlier_never_comes_back() {
        let store = InMemoryRevocations::new();
        let now = super::super::now();
        for before in [now - 5, now - 50] {
            let cut = Revocation::Subject {
                tenant: "acme",
                subject: "u",
                before,
            };
            store.revoke(cut, now + 600).await.unwrap();
        }
        assert!(store.check(&facts("a", "acme", "u", now - 5)));
        assert!(!store.check(&facts("b", "acme", "u", now - 4)));
        assert!(
            !store.check(&facts("c", "acme", "v", now - 60)),
            "another subject"
        );
    }
}
