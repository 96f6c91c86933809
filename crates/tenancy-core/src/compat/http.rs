//! The `http` 1 crate's types for the core's values (feature `http-1`, which
//! tower-tenancy turns on): header values computed once, not per response.

pub(crate) use ::http::HeaderValue;

/// A header value as the `http` crate's.
pub(crate) fn header(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

impl crate::quota::QuotaPlan {
    /// [`policy`](Self::policy) as an `http` 1 header value, computed once when the
    /// plans were built (feature `http-1`).
    pub fn http_policy_header(&self) -> Option<&HeaderValue> {
        self.policy_header.http.as_ref()
    }
}

impl From<&::http::Method> for crate::policy::Method {
    fn from(m: &::http::Method) -> Self {
        use crate::policy::Method as M;
        use ::http::Method as H;
        match *m {
            H::GET => M::GET,
            H::HEAD => M::HEAD,
            H::POST => M::POST,
            H::PUT => M::PUT,
            H::DELETE => M::DELETE,
            H::PATCH => M::PATCH,
            H::OPTIONS => M::OPTIONS,
            H::CONNECT => M::CONNECT,
            H::TRACE => M::TRACE,
            // An extension method `http` parsed: never one a rule names.
            ref other => M::extension(other.as_str()),
        }
    }
}

impl From<::http::Method> for crate::policy::Method {
    fn from(m: ::http::Method) -> Self {
        Self::from(&m)
    }
}

impl PartialEq<::http::Method> for crate::policy::Method {
    fn eq(&self, other: &::http::Method) -> bool {
        self.as_str() == other.as_str()
    }
}
