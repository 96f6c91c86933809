//! Where budgets read the calendar.

use super::*;

/// Where budgets read the calendar.
pub(super) enum Wall {
    /// The system's clock, read at most once a second: in between, the wall time is
    /// the last reading moved on by the monotonic clock (a budget's period is a UTC
    /// hour, day or month; a second's lag on a step of the system clock is all this
    /// costs, against a clock read per check).
    System {
        /// Unix nanoseconds minus monotonic nanoseconds, at the last reading.
        offset: AtomicU64,
        /// The monotonic nanoseconds of the last reading (`u64::MAX`: none yet).
        read_at: AtomicU64,
    },
    /// A clock of the caller's (a test's), read on every check that needs it.
    Custom(Arc<dyn Fn() -> SystemTime + Send + Sync>),
}

impl Wall {
    /// Unix seconds at monotonic time `now` (nanoseconds since the origin).
    #[inline]
    pub(super) fn unix_secs(&self, now: u64) -> u64 {
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        match self {
            Self::Custom(f) => unix(f()),
            Self::System { offset, read_at } => {
                let at = read_at.load(Ordering::Relaxed);
                // Also when `now` is before the last reading (wrapping): another thread's.
                if at == u64::MAX || now.wrapping_sub(at) >= 1_000_000_000 {
                    let nanos = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                    offset.store(nanos.wrapping_sub(now), Ordering::Relaxed);
                    read_at.store(now, Ordering::Relaxed);
                    return nanos / 1_000_000_000;
                }
                now.wrapping_add(offset.load(Ordering::Relaxed)) / 1_000_000_000
            }
        }
    }
}
