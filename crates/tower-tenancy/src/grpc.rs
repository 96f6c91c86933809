//! Rejections of gRPC requests (tonic's, or any gRPC client's) as gRPC statuses: a
//! trailers-only response whose `grpc-status` a client reads as an error, with the
//! stable code in `grpc-message`, and in `grpc-status-details-bin` a
//! `google.rpc.Status` carrying an `ErrorInfo` (the code again, for clients that match
//! on it) and, when the rejection knows when to come back, a `RetryInfo`.

use http::{HeaderMap, HeaderValue};
use tenancy_core::error::{retry_after_secs, TenancyError};

/// Whether the request is gRPC: its content type is `application/grpc` or one of its
/// `+proto`, `+json` forms.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// A gRPC rejection: the headers of a trailers-only response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrpcStatus {
    pub(crate) code: u8,
    pub(crate) message: &'static str,
    pub(crate) details: Vec<u8>,
}

impl GrpcStatus {
    pub(crate) fn of(err: &TenancyError) -> Self {
        let code = err.code();
        let retry = err.retry_after().map(retry_after_secs);
        Self {
            code: code.grpc_code(),
            message: code.as_str(),
            details: status_details(code.grpc_code(), code.as_str(), retry),
        }
    }

    /// The response headers: status 200, as gRPC answers every call.
    pub(crate) fn write(&self, headers: &mut HeaderMap) {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(u16::from(self.code)));
        // A stable code: lowercase letters and `_`, which need no percent-encoding.
        headers.insert("grpc-message", HeaderValue::from_static(self.message));
        if let Ok(v) = HeaderValue::try_from(base64(&self.details)) {
            headers.insert("grpc-status-details-bin", v);
        }
    }
}

/// A `google.rpc.Status` { code, message, details: [ErrorInfo, RetryInfo?] } in
/// protobuf's wire format.
fn status_details(code: u8, message: &str, retry_after: Option<u64>) -> Vec<u8> {
    // google.rpc.ErrorInfo { reason = 1, domain = 2 }
    let mut info = Vec::new();
    bytes_field(&mut info, 1, message.as_bytes());
    bytes_field(&mut info, 2, b"tenancy");
    let mut status = Vec::new();
    varint_field(&mut status, 1, u64::from(code));
    bytes_field(&mut status, 2, message.as_bytes());
    status_any(
        &mut status,
        "type.googleapis.com/google.rpc.ErrorInfo",
        &info,
    );
    if let Some(secs) = retry_after {
        // google.rpc.RetryInfo { retry_delay = 1: google.protobuf.Duration { seconds = 1 } }
        let mut duration = Vec::new();
        varint_field(&mut duration, 1, secs);
        let mut retry = Vec::new();
        bytes_field(&mut retry, 1, &duration);
        status_any(
            &mut status,
            "type.googleapis.com/google.rpc.RetryInfo",
            &retry,
        );
    }
    status
}

/// `details = 3`: a `google.protobuf.Any` { type_url = 1, value = 2 }.
fn status_any(status: &mut Vec<u8>, type_url: &str, value: &[u8]) {
    let mut any = Vec::new();
    bytes_field(&mut any, 1, type_url.as_bytes());
    bytes_field(&mut any, 2, value);
    bytes_field(status, 3, &any);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, v: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// Standard base64 without padding, as gRPC sends binary metadata.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_without_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg");
        assert_eq!(base64(b"fo"), "Zm8");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4");
    }

    #[test]
    fn grpc_content_types_and_only_those() {
        let grpc = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
            is_grpc(&h)
        };
        assert!(grpc("application/grpc"));
        assert!(grpc("application/grpc+proto"));
        assert!(grpc("Application/GRPC+json"));
        assert!(!grpc("application/grpc-web"));
        assert!(!grpc("application/grpcx"));
        assert!(!grpc("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn the_details_are_a_google_rpc_status() {
        // code 8, message "q", ErrorInfo{reason "q", domain "tenancy"}, RetryInfo{2 s}
        let d = status_details(8, "q", Some(2));
        assert_eq!(&d[..5], &[0x08, 8, 0x12, 1, b'q']);
        let info = b"\x0a\x01q\x12\x07tenancy";
        let url = b"type.googleapis.com/google.rpc.ErrorInfo";
        let mut any = vec![0x0a, url.len() as u8];
        any.extend_from_slice(url);
        any.extend_from_slice(&[0x12, info.len() as u8]);
        any.extend_from_slice(info);
        let mut want = vec![0x1a, any.len() as u8];
        want.extend_from_slice(&any);
        assert_eq!(&d[5..5 + want.len()], &want[..]);
        let retry = b"\x0a\x02\x08\x02";
        assert!(d.ends_with(retry), "{d:?}");
        assert!(!status_details(7, "q", None)
            .windows(9)
            .any(|w| w == b"RetryInfo"));
    }
}
