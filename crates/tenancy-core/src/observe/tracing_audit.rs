//! [`TracingAudit`], the default sink: one `tracing` event per decision, with the
//! client's values escaped, and the lines strangers can cause bounded.

use std::{
    borrow::Cow,
    fmt,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use super::{AuditEvent, AuditSink, Outcome, Stage};
use crate::{error::ErrorCode, SourceKind, TenantId};

/// The default sink: one `tracing` event per decision, target `tenancy::audit`.
///
/// `DEBUG` for passes, `INFO` for rejections and shadow decisions, `WARN` for backend
/// failures, `ERROR` for misconfiguration.
///
/// **What strangers can make it write is bounded.** A rejection of a request whose
/// tenant the registry does not know (unknown, invalid or missing ids, bad tokens) is
/// written at most [`stranger_lines`](Self::stranger_lines) times per stage and code
/// per interval (default 20 a minute); the rest are counted, and the count is written
/// as one `tenancy decisions suppressed` line with the first line of the next
/// interval. Decisions about known tenants are always written. Metrics count every
/// decision either way.
///
/// **Client values are escaped.** The path, method, tenant id, tier, reason and rule
/// are written with control characters, quotes, backslashes, spaces and non-ASCII
/// characters as `\xNN` / `\u{..}` escapes, so no client can start a line, forge a
/// field, or color a terminal, whatever the subscriber's format.
#[derive(Clone)]
pub struct TracingAudit {
    throttle: Arc<Throttle>,
}

impl fmt::Debug for TracingAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracingAudit")
            .field("stranger_lines", &self.throttle.lines)
            .field("per", &Duration::from_millis(self.throttle.per_ms))
            .finish()
    }
}

impl Default for TracingAudit {
    fn default() -> Self {
        Self::new()
    }
}

impl TracingAudit {
    /// The sink, writing at most 20 lines a minute per stage and code about strangers.
    pub fn new() -> Self {
        Self {
            throttle: Arc::new(Throttle::new(20, Duration::from_secs(60))),
        }
    }

    /// At most `lines` lines about strangers per stage, code and `per` (`u32::MAX`
    /// for every one; `per` is at least a millisecond).
    #[must_use]
    pub fn stranger_lines(self, lines: u32, per: Duration) -> Self {
        Self {
            throttle: Arc::new(Throttle::new(lines, per)),
        }
    }
}

/// Per stage and code, how many lines about strangers this interval has written.
struct Throttle {
    lines: u32,
    per_ms: u64,
    start: Instant,
    slots: Box<[Slot]>,
    /// Each row's stage, taken by the first stage seen without a row.
    stages: [OnceLock<&'static str>; STAGES],
}

#[derive(Default)]
struct Slot {
    /// The interval these counts belong to (milliseconds since `start` / `per_ms`).
    window: AtomicU64,
    written: AtomicU32,
    suppressed: AtomicU64,
}

/// The stages the throttle counts apart; a ninth stage name shares the last row.
const STAGES: usize = 8;

/// What the throttle says of one line.
enum Verdict {
    Write,
    /// Write it, after a line saying how many were suppressed in the last interval.
    WriteAfter(u64),
    Suppress,
}

impl Throttle {
    fn new(lines: u32, per: Duration) -> Self {
        let per_ms = u64::try_from(per.as_millis()).unwrap_or(u64::MAX).max(1);
        let slots = (0..STAGES * ErrorCode::ALL.len())
            .map(|_| Slot::default())
            .collect();
        Self {
            lines,
            per_ms,
            start: Instant::now(),
            slots,
            stages: Default::default(),
        }
    }

    /// The row of `stage`'s counts: found, or taken (without a lock) on its first line.
    fn row(&self, stage: Stage) -> usize {
        for (i, name) in self.stages.iter().enumerate() {
            if *name.get_or_init(|| stage.as_str()) == stage.as_str() {
                return i;
            }
        }
        STAGES - 1
    }

    fn admit(&self, stage: Stage, code: ErrorCode) -> Verdict {
        if self.lines == u32::MAX {
            return Verdict::Write;
        }
        let code = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
        let slot = &self.slots[self.row(stage) * ErrorCode::ALL.len() + code];
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let window = elapsed / self.per_ms;
        let mut dropped = 0;
        let seen = slot.window.load(Ordering::Acquire);
        if seen != window
            && slot
                .window
                .compare_exchange(seen, window, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.written.store(0, Ordering::Release);
            dropped = slot.suppressed.swap(0, Ordering::AcqRel);
        }
        if slot.written.fetch_add(1, Ordering::AcqRel) < self.lines {
            if dropped > 0 {
                Verdict::WriteAfter(dropped)
            } else {
                Verdict::Write
            }
        } else {
            slot.written.fetch_sub(1, Ordering::AcqRel);
            slot.suppressed.fetch_add(1 + dropped, Ordering::AcqRel);
            Verdict::Suppress
        }
    }
}

impl AuditSink for TracingAudit {
    fn record(&self, e: &AuditEvent<'_>) {
        let level = match e.outcome {
            Outcome::Allowed | Outcome::Skipped => tracing::Level::DEBUG,
            Outcome::WouldDeny(_) | Outcome::WouldAllow => tracing::Level::INFO,
            Outcome::Rejected(ErrorCode::Internal) => tracing::Level::ERROR,
            Outcome::Rejected(code) if code.status() >= 500 => tracing::Level::WARN,
            Outcome::Rejected(_) => tracing::Level::INFO,
        };
        if !wanted(level) {
            return;
        }
        // A stranger: rejected, and no registry record was found for the tenant.
        let verdict = match e.outcome {
            Outcome::Rejected(code) if e.tier.is_none() => self.throttle.admit(e.stage, code),
            _ => Verdict::Write,
        };
        match verdict {
            Verdict::Write => event(e, level),
            Verdict::WriteAfter(dropped) => {
                suppressed(e, level, dropped);
                event(e, level);
            }
            Verdict::Suppress => {}
        }
    }
}

/// A client's value in a log line: control characters, quotes, backslashes, spaces
/// and everything outside printable ASCII escaped, so the value stays one token of
/// one line in any format. Borrowed (no allocation) when nothing needs escaping.
pub fn escaped(s: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_graphic() && c != '"' && c != '\\';
    if s.chars().all(plain) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            c if plain(c) => out.push(c),
            c if c.is_ascii() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    Cow::Owned(out)
}

/// `tracing::event!` at a level chosen at run time (the macro takes a constant one).
macro_rules! event_at {
    ($level:expr, $($fields:tt)+) => {
        match $level {
            tracing::Level::DEBUG => {
                tracing::event!(target: "tenancy::audit", tracing::Level::DEBUG, $($fields)+)
            }
            tracing::Level::INFO => {
                tracing::event!(target: "tenancy::audit", tracing::Level::INFO, $($fields)+)
            }
            tracing::Level::WARN => {
                tracing::event!(target: "tenancy::audit", tracing::Level::WARN, $($fields)+)
            }
            _ => tracing::event!(target: "tenancy::audit", tracing::Level::ERROR, $($fields)+),
        }
    };
}

/// Writes the event; out of line, so the common "nobody listens" path stays small.
#[cold]
#[inline(never)]
fn event(e: &AuditEvent<'_>, level: tracing::Level) {
    let tenant = e.tenant.map(|t| escaped(TenantId::as_str(t)));
    let tier = e.tier.map(escaped);
    let rule = e.rule.map(escaped);
    event_at!(
        level,
        stage = e.stage.as_str(),
        outcome = e.outcome.as_str(),
        tenant.id = tenant.as_deref(),
        tenant.tier = tier.as_deref(),
        source = e.source.map(SourceKind::as_str),
        method = &*escaped(e.method),
        path = &*escaped(e.path),
        reason = &*escaped(e.reason),
        rule = rule.as_deref(),
        policy.version = e.policy_version,
        "tenancy decision"
    );
}

/// The count of lines about strangers suppressed in the last interval, for one stage
/// and code.
#[cold]
#[inline(never)]
fn suppressed(e: &AuditEvent<'_>, level: tracing::Level, dropped: u64) {
    event_at!(
        level,
        stage = e.stage.as_str(),
        outcome = e.outcome.as_str(),
        suppressed = dropped,
        "tenancy decisions suppressed"
    );
}

/// Whether an event at `level` could reach anyone: a tracing subscriber that enables
/// the level, or a `log` logger that does (tracing's `log` fallback, which actix-web
/// builds with). A superset of what `tracing::event!` checks itself, whatever
/// tracing's features, so nothing it would emit is skipped; the common case, nobody
/// listening at `DEBUG`, costs two atomic loads instead of building the event.
#[inline]
pub fn wanted(level: tracing::Level) -> bool {
    if tracing::level_enabled!(level) {
        return true;
    }
    let log_level = match level {
        tracing::Level::ERROR => log::Level::Error,
        tracing::Level::WARN => log::Level::Warn,
        tracing::Level::INFO => log::Level::Info,
        tracing::Level::DEBUG => log::Level::Debug,
        _ => log::Level::Trace,
    };
    log_level <= log::max_level()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOLUTION: Stage = Stage::named("resolution");

    #[test]
    fn escapes_what_could_break_a_line_and_passes_the_rest() {
        assert!(matches!(
            escaped("/api/complete"),
            Cow::Borrowed("/api/complete")
        ));
        assert_eq!(
            escaped("/x\nlevel=ERROR \"forged\"\\\u{1b}[31m"),
            "/x\\x0alevel=ERROR\\x20\\x22forged\\x22\\x5c\\x1b[31m"
        );
        assert_eq!(escaped("a\u{202e}b\u{0}"), "a\\u{202e}b\\x00");
    }

    #[test]
    fn the_throttle_writes_the_bound_then_counts_and_reports_the_rest() {
        let t = Throttle::new(3, Duration::from_secs(3600));
        let code = ErrorCode::TenantForbidden;
        let written = (0..100)
            .filter(|_| !matches!(t.admit(RESOLUTION, code), Verdict::Suppress))
            .count();
        assert_eq!(written, 3);
        // Another stage or code has its own bound.
        assert!(matches!(
            t.admit(Stage::named("policy"), code),
            Verdict::Write
        ));
        assert!(matches!(
            t.admit(RESOLUTION, ErrorCode::TenantInvalid),
            Verdict::Write
        ));
        // The next interval starts with the count of what the last one suppressed.
        let slot = &t.slots[t.row(RESOLUTION) * ErrorCode::ALL.len()
            + ErrorCode::ALL.iter().position(|c| *c == code).unwrap()];
        slot.window.store(u64::MAX, Ordering::Release);
        assert!(matches!(t.admit(RESOLUTION, code), Verdict::WriteAfter(97)));
        // Each stage name has a row of its own; past eight, the last row is shared.
        let t = Throttle::new(1, Duration::from_secs(3600));
        for name in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            assert!(matches!(t.admit(Stage::named(name), code), Verdict::Write));
        }
        assert_eq!(t.row(Stage::named("g")), 6);
        assert_eq!(t.row(Stage::named("i")), STAGES - 1);
        // "i" counts with "h", which has written its line; "a" has its own row.
        assert!(matches!(
            t.admit(Stage::named("i"), code),
            Verdict::Suppress
        ));
        assert!(matches!(
            t.admit(Stage::named("a"), code),
            Verdict::Suppress
        ));
        let unbounded = Throttle::new(u32::MAX, Duration::from_secs(1));
        assert!((0..1000).all(|_| matches!(unbounded.admit(RESOLUTION, code), Verdict::Write)));
    }
}
