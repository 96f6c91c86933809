//! The response body of every pipeline: the inner service's, settling the request's
//! charge when it ends.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use actix_web::{
    body::{BodySize, MessageBody},
    web::Bytes,
};

use super::stage::Settling;

pin_project_lite::pin_project! {
    /// The inner service's body, passed through unchanged. When the quota stage charged
    /// the request, the charge is settled when this body ends: sent to its end (with
    /// the `ActualCost` the handler, or the stream itself, recorded by then), failed
    /// mid-way (as a `500`), or dropped before its end (the client went away).
    pub struct SettlingBody<B> {
        #[pin]
        body: B,
        settling: Option<Settling>,
    }
}

impl<B> SettlingBody<B> {
    pub(crate) fn new(body: B, settling: Option<Settling>) -> Self {
        Self { body, settling }
    }
}

impl<B> fmt::Debug for SettlingBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettlingBody")
            .field("settling", &self.settling.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: MessageBody> MessageBody for SettlingBody<B> {
    type Error = B::Error;

    #[inline]
    fn size(&self) -> BodySize {
        self.body.size()
    }

    #[inline]
    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let next = this.body.poll_next(cx);
        match &next {
            Poll::Ready(None) => {
                if let Some(settling) = this.settling.take() {
                    settling.finished();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(settling) = this.settling.take() {
                    settling.failed();
                }
            }
            _ => {}
        }
        next
    }
}
