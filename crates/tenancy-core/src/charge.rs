//! What a quota check charged, carried to the response side to be settled.

/// A charge a quota check made, handed back to
/// the quota manager's `settle` to correct: the units,
/// and the wall-clock second the manager charged them at, so that a correction applies
/// to the budget period the charge was made in, never to the next one (a refund
/// settled after midnight credits yesterday, which no longer counts, not today).
///
/// ```
/// use tenancy_core::Charge;
///
/// let charge = Charge::new(100).at(1_767_225_590);
/// assert_eq!((charge.units(), charge.charged_at()), (100, Some(1_767_225_590)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    units: u32,
    at: Option<u64>,
}

impl Charge {
    /// A charge of `units`, at a second the manager did not say (a correction then
    /// applies to the current period).
    pub const fn new(units: u32) -> Self {
        Self { units, at: None }
    }

    /// Charged at `unix_secs` (the manager's wall clock; Redis's for `RedisQuota`).
    #[must_use]
    pub const fn at(mut self, unix_secs: u64) -> Self {
        self.at = Some(unix_secs);
        self
    }

    /// The units charged.
    pub const fn units(&self) -> u32 {
        self.units
    }

    /// The Unix second the units were charged at, when the manager said.
    pub const fn charged_at(&self) -> Option<u64> {
        self.at
    }
}
