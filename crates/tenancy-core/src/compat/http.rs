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
