//! User code called on the request path, run so that a panic in it is an answer,
//! never a reset connection or a crashed worker. Each adapter runs an application's
//! callbacks through these.

use std::{
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
};

use futures_util::FutureExt as _;

/// Runs `f`; `None` when it panicked, logged at `ERROR` naming `what` (the panic's
/// message stays out of the line: it may carry request data).
///
/// Never call this while the thread is already unwinding ([`std::thread::panicking`]):
/// a second panic then aborts the process whatever catches it.
#[inline]
pub fn caught<T>(what: &'static str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(out) => Some(out),
        Err(_) => {
            panicked(what);
            None
        }
    }
}

/// Awaits `fut`; `None` when it panicked, logged as [`caught`] does.
pub async fn caught_async<T>(what: &'static str, fut: impl Future<Output = T>) -> Option<T> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(out) => Some(out),
        Err(_) => {
            panicked(what);
            None
        }
    }
}

#[cold]
fn panicked(what: &'static str) {
    tracing::error!(target: "actix_tenancy", callback = what, "user code panicked");
}
