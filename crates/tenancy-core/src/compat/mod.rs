//! A web framework's traits for the core's own types: Rust lets only this crate write
//! them. One file a framework, each behind a feature only that framework's adapter
//! turns on; each impl only converts.

#[cfg(feature = "actix-web-4")]
mod actix;
#[cfg(feature = "axum-core-0_5")]
mod axum;
#[cfg(feature = "http-1")]
mod http;

/// A header value computed once, as the header value of each framework whose
/// adapter is built (none without one): a response then clones it, and neither
/// allocates nor validates it again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Header {
    #[cfg(feature = "actix-web-4")]
    pub(crate) actix: Option<actix::HeaderValue>,
    #[cfg(feature = "http-1")]
    pub(crate) http: Option<http::HeaderValue>,
}

impl Header {
    /// `text` as each built framework's header value.
    #[cfg_attr(
        not(any(feature = "actix-web-4", feature = "http-1")),
        allow(unused_variables)
    )]
    pub(crate) fn new(text: Option<&str>) -> Self {
        Self {
            #[cfg(feature = "actix-web-4")]
            actix: text.and_then(actix::header),
            #[cfg(feature = "http-1")]
            http: text.and_then(http::header),
        }
    }
}
