//! [`Answer`]: the one return type of every backend operation (a registry lookup, a
//! quota check and settlement, a policy evaluation, a revocation check), and
//! [`Moment`], the request's moment passed to the operations that need one.

use std::{
    fmt,
    future::{Future, IntoFuture, Ready},
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

/// A backend's answer: ready [`Now`](Answer::Now), or [`Later`](Answer::Later), as one
/// boxed future.
///
/// A backend that knows the answer without waiting (an in-memory map, a warm cache, a
/// local limiter) returns `Answer::Now`, and the middleware goes on without creating a
/// future or a timer; one that must ask a server returns [`Answer::later`] with its
/// `async` block. Either way the caller can `.await` it.
///
/// The middleware asks a backend once for an answer now and, when it must wait, asks
/// again inside its one wait (the first future is dropped unpolled). So do the work in
/// the future (an `async` block does nothing until polled), not before returning it.
///
/// ```
/// use tenancy_core::Answer;
///
/// fn doubled(n: u32, cached: bool) -> Answer<'static, u32> {
///     if cached {
///         Answer::Now(n * 2)
///     } else {
///         Answer::later(async move { n * 2 })
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert_eq!(doubled(2, true).await, 4);
/// assert_eq!(doubled(2, false).await, 4);
/// assert_eq!(doubled(3, true).now(), Some(6));
/// # });
/// ```
#[must_use = "an answer does nothing unless it is read or awaited"]
pub enum Answer<'a, T> {
    /// The answer, known without waiting.
    Now(T),
    /// The answer, once this future is done.
    Later(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> Answer<'a, T> {
    /// The answer of `future`, later.
    pub fn later(future: impl Future<Output = T> + Send + 'a) -> Self {
        Self::Later(Box::pin(future))
    }

    /// The answer if it is known now.
    #[inline]
    pub fn now(self) -> Option<T> {
        match self {
            Self::Now(value) => Some(value),
            Self::Later(_) => None,
        }
    }

    /// The answer with `f` applied, now or later.
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'a) -> Answer<'a, U>
    where
        T: 'a,
    {
        match self {
            Self::Now(value) => Answer::Now(f(value)),
            Self::Later(future) => Answer::later(async move { f(future.await) }),
        }
    }
}

impl<T> fmt::Debug for Answer<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Now(_) => "Answer::Now(..)",
            Self::Later(_) => "Answer::Later(..)",
        })
    }
}

impl<'a, T> IntoFuture for Answer<'a, T> {
    type Output = T;
    type IntoFuture = AnswerFuture<'a, T>;

    fn into_future(self) -> Self::IntoFuture {
        AnswerFuture(match self {
            Self::Now(value) => Waiting::Now(std::future::ready(value)),
            Self::Later(future) => Waiting::Later(future),
        })
    }
}

/// The future of an [`Answer`] (`answer.await`).
#[must_use = "futures do nothing unless polled"]
pub struct AnswerFuture<'a, T>(Waiting<'a, T>);

enum Waiting<'a, T> {
    Now(Ready<T>),
    Later(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<T> fmt::Debug for AnswerFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnswerFuture")
    }
}

impl<T> Future for AnswerFuture<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // Both arms are `Unpin` (`Ready<T>` is, whatever `T`; so is a `Pin<Box<_>>`).
        match &mut self.get_mut().0 {
            Waiting::Now(ready) => Pin::new(ready).poll(cx),
            Waiting::Later(future) => future.as_mut().poll(cx),
        }
    }
}

/// The request's moment, read once by the middleware for every stage, and what a
/// backend promises about its answer at that moment.
///
/// [`instant`](Self::instant) is the monotonic time of the request: a backend that ages its
/// answers (a cache) or meters time (a local limiter on the system's clock) uses it
/// rather than reading the clock again. A registry that can promise its answer for a
/// while grants a [`Lease`] with [`grant`](Self::grant); the resolver then keeps the
/// record per worker while the registry's `lease_holds` says the lease holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    now: Instant,
    lease: Option<Lease>,
}

/// A registry's promise about one answer (see [`Moment::grant`]): good until `until`
/// on the monotonic clock, and while the registry's `epoch`, a counter it moves on
/// every change that could alter an answer, has not moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The end of the answer's freshness.
    pub until: Instant,
    /// The registry's epoch when the answer was read.
    pub epoch: u64,
}

impl Moment {
    /// The moment `now`, with no lease granted yet.
    #[inline]
    pub fn at(now: Instant) -> Self {
        Self { now, lease: None }
    }

    /// The moment of the system's monotonic clock now.
    #[inline]
    pub fn now() -> Self {
        Self::at(Instant::now())
    }

    /// The moment's monotonic time.
    #[inline]
    pub fn instant(&self) -> Instant {
        self.now
    }

    /// Grants `lease` on the answer given at this moment (a registry's promise that it
    /// would give the same answer while the lease holds).
    #[inline]
    pub fn grant(&mut self, lease: Lease) {
        self.lease = Some(lease);
    }

    /// The lease granted at this moment, if any.
    #[inline]
    pub fn lease(&self) -> Option<Lease> {
        self.lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn now_is_read_without_a_future_and_later_only_by_waiting() {
        assert_eq!(Answer::<u8>::Now(1).now(), Some(1));
        assert_eq!(Answer::later(async { 1u8 }).now(), None);
        assert_eq!(block_on(async { Answer::Now(2u8).await }), 2);
        assert_eq!(block_on(async { Answer::later(async { 3u8 }).await }), 3);
    }

    #[test]
    fn map_applies_now_or_later() {
        assert_eq!(Answer::Now(2u8).map(|n| n * 2).now(), Some(4));
        let later = Answer::later(async { 2u8 }).map(|n| n * 3);
        assert!(matches!(later, Answer::Later(_)));
        assert_eq!(block_on(later.into_future()), 6);
    }

    #[test]
    fn a_moment_carries_its_time_and_the_lease_granted_in_it() {
        let now = Instant::now();
        let mut m = Moment::at(now);
        assert_eq!((m.instant(), m.lease()), (now, None));
        let lease = Lease {
            until: now,
            epoch: 7,
        };
        m.grant(lease);
        assert_eq!(m.lease(), Some(lease));
    }
}
