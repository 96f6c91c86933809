//! The time the stages read, real or a fake one a test moves by hand.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Where the registry cache, the local quotas and the sessions read the time.
///
/// Two clocks, for two kinds of use:
///
/// - **monotonic** ([`now`](Self::now)), for spans: a cache entry's age, a rate
///   limiter's refill. It never goes back when the system's time is set, so an NTP step
///   cannot refill a limiter or revive an expired entry.
/// - **wall** ([`wall`](Self::wall)), for what is dated: a token's `exp`, `nbf` and
///   `iat` (unix seconds, shared with the token's issuer), a revocation's cut-off, a
///   budget's calendar period (UTC days and months).
///
/// The default, [`Clock::system`], reads the operating system. [`FakeClock`] gives a
/// clock that moves only when the test says, so TTLs, refills, budgets and token expiry are tested
/// without sleeping. Cloning is cheap (a pointer at most).
#[derive(Clone, Default)]
pub struct Clock {
    fake: Option<Arc<FakeTime>>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fake {
            None => f.write_str("Clock::system"),
            Some(t) => f
                .debug_struct("Clock::fake")
                .field("advanced", &t.advanced())
                .finish(),
        }
    }
}

impl Clock {
    /// The operating system's clocks.
    pub const fn system() -> Self {
        Self { fake: None }
    }

    /// The monotonic time.
    #[inline]
    pub fn now(&self) -> Instant {
        match &self.fake {
            None => Instant::now(),
            Some(t) => t.start + t.advanced(),
        }
    }

    /// The wall-clock time.
    #[inline]
    pub fn wall(&self) -> SystemTime {
        match &self.fake {
            None => SystemTime::now(),
            Some(t) => t.wall_start + t.advanced(),
        }
    }

    /// The wall-clock time in whole unix seconds (0 before 1970).
    #[inline]
    pub fn unix_secs(&self) -> u64 {
        self.wall()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Whether this is a fake clock.
    pub fn is_fake(&self) -> bool {
        self.fake.is_some()
    }

    pub(crate) fn fake(time: Arc<FakeTime>) -> Self {
        Self { fake: Some(time) }
    }
}

/// The shared state of a fake clock: where it started and how far it has been moved.
/// Both of its clocks move together.
#[derive(Debug)]
pub(crate) struct FakeTime {
    start: Instant,
    wall_start: SystemTime,
    advanced_nanos: AtomicU64,
}

impl FakeTime {
    pub(crate) fn new(wall_start: SystemTime) -> Self {
        Self {
            start: Instant::now(),
            wall_start,
            advanced_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn advanced(&self) -> Duration {
        Duration::from_nanos(self.advanced_nanos.load(Ordering::Acquire))
    }

    pub(crate) fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Saturating: a clock moved past ~584 years stays there.
        let _ = self
            .advanced_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(nanos))
            });
    }
}

/// A clock that moves only when the test moves it: hand its [`clock`](Self::clock) to
/// whatever reads a [`Clock`] (the registry cache, the local quotas, the sessions),
/// then [`advance`](Self::advance) it past a TTL, a refill, a budget period or a
/// token's expiry. Its monotonic and wall clocks move together; clones share one time.
///
/// What it does not move: a server's own clock (Redis's `TIME` and TTLs), a remote key
/// set's fetch schedule, and the runtime's timers.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tenancy_core::FakeClock;
///
/// let time = FakeClock::starting_at(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
/// let clock = time.clock();
/// let start = clock.now();
/// time.advance(Duration::from_secs(60)); // no sleep: the minute has passed
/// assert_eq!(clock.now() - start, Duration::from_secs(60));
/// assert_eq!(clock.unix_secs(), 1_800_000_060);
/// ```
#[derive(Debug, Clone)]
pub struct FakeClock(Arc<FakeTime>);

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeClock {
    /// A fake clock whose wall time starts at the system's time now.
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A fake clock whose wall time starts at `wall` (a budget test can start a minute
    /// before midnight UTC, say).
    pub fn starting_at(wall: SystemTime) -> Self {
        Self(Arc::new(FakeTime::new(wall)))
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.advance(by);
    }

    /// How far the clock has been moved since it was made.
    pub fn advanced(&self) -> Duration {
        self.0.advanced()
    }

    /// The [`Clock`] to hand to what reads the time.
    pub fn clock(&self) -> Clock {
        Clock::fake(Arc::clone(&self.0))
    }
}

impl From<&FakeClock> for Clock {
    fn from(fake: &FakeClock) -> Self {
        fake.clock()
    }
}

impl governor::clock::Clock for Clock {
    type Instant = Instant;

    #[inline]
    fn now(&self) -> Instant {
        Clock::now(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_clock_moves_only_when_told_and_both_clocks_together() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let time = FakeClock::starting_at(wall);
        let clock = time.clock();
        let (m0, w0) = (clock.now(), clock.wall());
        assert_eq!(w0, wall);
        assert_eq!(clock.now(), m0, "it does not run by itself");
        time.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - m0, Duration::from_secs(90));
        assert_eq!(clock.unix_secs(), 1_800_000_090);
        time.advance(Duration::MAX);
        assert!(clock.now() > m0, "saturates, never wraps");
        assert!(clock.is_fake() && !Clock::system().is_fake());
    }

    #[test]
    fn the_system_clock_reads_the_system() {
        let c = Clock::system();
        let before = SystemTime::now();
        assert!(c.wall() >= before);
        assert!(c.unix_secs() >= 1_700_000_000);
    }
}
