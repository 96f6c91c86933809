//! The response body of a [`TenancyService`](crate::TenancyService): the inner
//! service's, or a rejection's problem body.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header::HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tenancy_core::error::Problem;

use crate::{grpc::GrpcStatus, quota::Settlement};

pin_project_lite::pin_project! {
    /// The inner service's body, or the problem body of a rejection.
    #[derive(Debug)]
    pub struct TenancyBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner {
            #[pin]
            body: B,
            // The quota charge, settled when the body has been sent to its end (or
            // refunded when it is dropped before, with refunds on).
            settlement: Option<Settlement>,
        },
        Problem {
            body: Option<Bytes>,
        },
    }
}

impl<B> TenancyBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                settlement: None,
            },
        }
    }

    /// The inner service's body, with the charge to settle at its end.
    pub(crate) fn settled(body: B, settlement: Option<Settlement>) -> Self
    where
        B: Body,
    {
        let settlement = match settlement {
            // A body that is over before it starts (an empty one) may never be polled.
            Some(mut settlement) if body.is_end_stream() => {
                settlement.served();
                None
            }
            settlement => settlement,
        };
        Self {
            kind: Kind::Inner { body, settlement },
        }
    }

    fn problem(body: Option<Bytes>) -> Self {
        Self {
            kind: Kind::Problem { body },
        }
    }
}

impl<B> Body for TenancyBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            Proj::Inner {
                mut body,
                settlement,
            } => {
                let polled = body.as_mut().poll_frame(cx);
                if settlement.is_some() {
                    let ended = match &polled {
                        Poll::Ready(None) => true,
                        Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                        // Failed mid-way: not served, settled as such when dropped.
                        Poll::Ready(Some(Err(_))) | Poll::Pending => false,
                    };
                    if ended {
                        if let Some(mut settlement) = settlement.take() {
                            settlement.served();
                        }
                    }
                }
                polled
            }
            Proj::Problem { body } => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, .. } => body.is_end_stream(),
            Kind::Problem { body } => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Problem { body } => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// A rejection, as the client reads it.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// An HTTP status and a problem body.
    Problem(Problem),
    /// A gRPC status, for a gRPC request.
    Grpc(GrpcStatus),
}

/// The response for a rejection: its status, its headers and its body.
pub(crate) fn response<B>(rejection: Rejection) -> Response<TenancyBody<B>> {
    let problem = match rejection {
        Rejection::Problem(problem) => problem,
        Rejection::Grpc(status) => {
            let mut res = Response::new(TenancyBody::problem(None));
            status.write(res.headers_mut());
            return res;
        }
    };
    let status =
        StatusCode::from_u16(problem.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = Response::new(TenancyBody::problem(None));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    for (name, value) in problem.headers() {
        // Fixed lowercase names; fixed words, and a number of seconds.
        if let Ok(value) = HeaderValue::try_from(value.as_ref()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    *res.body_mut() = TenancyBody::problem(Some(Bytes::from(String::from(problem.body()))));
    res
}
