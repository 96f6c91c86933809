//! The request method as the policy sees it, whatever framework read it.

use std::fmt;

/// A request method: one of the nine standard ones, or an extension method a rule
/// can only match with `*`. Each adapter converts its framework's method (`From`).
///
/// ```
/// use tenancy_core::policy::Method;
///
/// assert_eq!(Method::from_bytes(b"GET").unwrap(), Method::GET);
/// assert_eq!(Method::from_bytes(b"PURGE").unwrap().as_str(), "PURGE");
/// assert!(Method::from_bytes(b"GET /").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Method(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Standard(&'static str),
    Extension(Box<str>),
}

/// A method that is not a token (RFC 9110): empty, too long, or with a character a
/// method cannot have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMethod;

impl fmt::Display for InvalidMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid HTTP method")
    }
}

impl std::error::Error for InvalidMethod {}

/// The nine standard methods, in the order `Method`'s constants name them.
const STANDARD: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl Method {
    /// `GET`.
    pub const GET: Self = Self(Repr::Standard("GET"));
    /// `HEAD`.
    pub const HEAD: Self = Self(Repr::Standard("HEAD"));
    /// `POST`.
    pub const POST: Self = Self(Repr::Standard("POST"));
    /// `PUT`.
    pub const PUT: Self = Self(Repr::Standard("PUT"));
    /// `DELETE`.
    pub const DELETE: Self = Self(Repr::Standard("DELETE"));
    /// `CONNECT`.
    pub const CONNECT: Self = Self(Repr::Standard("CONNECT"));
    /// `OPTIONS`.
    pub const OPTIONS: Self = Self(Repr::Standard("OPTIONS"));
    /// `TRACE`.
    pub const TRACE: Self = Self(Repr::Standard("TRACE"));
    /// `PATCH`.
    pub const PATCH: Self = Self(Repr::Standard("PATCH"));

    /// The method spelled `bytes` (case-sensitive, as HTTP's methods are): at most 64
    /// token characters.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidMethod> {
        if let Some(m) = STANDARD.iter().find(|m| m.as_bytes() == bytes) {
            return Ok(Self(Repr::Standard(m)));
        }
        let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
        if bytes.is_empty() || bytes.len() > 64 || !bytes.iter().all(token) {
            return Err(InvalidMethod);
        }
        // Only token characters: ASCII, so UTF-8.
        let text = std::str::from_utf8(bytes).map_err(|_| InvalidMethod)?;
        Ok(Self(Repr::Extension(text.into())))
    }

    /// An extension method a framework has read already.
    #[cfg_attr(
        not(any(feature = "actix-web-4", feature = "http-1")),
        allow(dead_code)
    )]
    pub(crate) fn extension(name: &str) -> Self {
        match STANDARD.iter().find(|m| **m == name) {
            Some(m) => Self(Repr::Standard(m)),
            None => Self(Repr::Extension(name.into())),
        }
    }

    /// The method's name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Standard(m) => m,
            Repr::Extension(m) => m,
        }
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Method {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_compare_as_the_constants_and_others_by_name() {
        for m in STANDARD {
            assert_eq!(Method::from_bytes(m.as_bytes()).unwrap().as_str(), m);
        }
        assert_eq!(Method::from_bytes(b"PATCH").unwrap(), Method::PATCH);
        assert_ne!(Method::from_bytes(b"get").unwrap(), Method::GET);
        assert_eq!(
            Method::from_bytes(b"PURGE").unwrap(),
            Method::from_bytes(b"PURGE").unwrap()
        );
        for bad in [&b""[..], b"G T", b"G\xffT", &[b'A'; 65]] {
            assert_eq!(Method::from_bytes(bad), Err(InvalidMethod), "{bad:?}");
        }
    }
}
