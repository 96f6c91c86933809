//! Costs a client names: in a header, or in a query parameter. Read the same way by
//! every adapter's estimator; a bad one is a `400 cost_invalid`, never a credit.

use crate::error::{ConfigError, TenancyError};

/// A cost read from a header such as `X-Token-Count`: a decimal integer from 0 to
/// `max`. A missing header costs `default`; a negative, non-numeric, repeated or
/// larger-than-`max` value is a `400 cost_invalid`.
///
/// ```
/// use tenancy_core::quota::HeaderCost;
///
/// let tokens = HeaderCost::new("x-token-count").unwrap().max(100_000).default_cost(1);
/// ```
#[derive(Debug, Clone)]
pub struct HeaderCost {
    /// Lowercase, as header names compare.
    name: Box<str>,
    max: u32,
    default: u32,
}

impl HeaderCost {
    /// Reads `name`; at most 1,000,000 units, 1 when absent.
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(ConfigError::invalid(
                "header name",
                name,
                "not a valid HTTP header name",
            ));
        }
        Ok(Self {
            name: name.to_ascii_lowercase().into(),
            max: 1_000_000,
            default: 1,
        })
    }

    /// The largest cost accepted.
    #[must_use]
    pub fn max(mut self, max: u32) -> Self {
        self.max = max;
        self
    }

    /// The cost of a request without the header.
    #[must_use]
    pub fn default_cost(mut self, cost: u32) -> Self {
        self.default = cost;
        self
    }

    /// The header's name, lowercase.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cost of a request whose values of the header are `values`, as sent.
    pub fn cost<'v>(
        &self,
        mut values: impl Iterator<Item = &'v [u8]>,
    ) -> Result<u32, TenancyError> {
        let Some(value) = values.next() else {
            return Ok(self.default);
        };
        if values.next().is_some() {
            return Err(bad_cost("the cost header is repeated"));
        }
        let text = std::str::from_utf8(value)
            .ok()
            .filter(|t| t.is_ascii())
            .ok_or_else(|| bad_cost("the cost is not ASCII"))?;
        parse_cost(text, self.max)
    }
}

/// A cost read from a query parameter such as `?max_tokens=500`: a decimal integer
/// from 0 to `max`. A missing parameter costs `default`; an empty, negative,
/// non-numeric, percent-encoded (value or name), repeated or larger-than-`max` value is a
/// `400 cost_invalid`.
///
/// ```
/// use tenancy_core::quota::QueryCost;
///
/// let tokens = QueryCost::new("max_tokens").max(32_000).default_cost(1);
/// ```
#[derive(Debug, Clone)]
pub struct QueryCost {
    name: String,
    max: u32,
    default: u32,
}

impl QueryCost {
    /// Reads the query parameter `name`; at most 1,000,000 units, 1 when absent.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max: 1_000_000,
            default: 1,
        }
    }

    /// The largest cost accepted.
    #[must_use]
    pub fn max(mut self, max: u32) -> Self {
        self.max = max;
        self
    }

    /// The cost of a request without the parameter.
    #[must_use]
    pub fn default_cost(mut self, cost: u32) -> Self {
        self.default = cost;
        self
    }

    /// The cost of a request whose query string is `query` (without the `?`).
    pub fn cost(&self, query: &str) -> Result<u32, TenancyError> {
        let mut found = None;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key != self.name {
                // `max%5Ftokens` is `max_tokens` to a handler's query extractor: never let
                // an encoded name dodge the charge.
                if key.contains(['%', '+']) && decodes_to(key, &self.name) {
                    return Err(bad_cost("the cost parameter's name is encoded"));
                }
                continue;
            }
            if found.is_some() {
                return Err(bad_cost("the cost parameter is repeated"));
            }
            found = Some(value);
        }
        match found {
            None => Ok(self.default),
            Some(text) => parse_cost(text, self.max),
        }
    }
}

fn bad_cost(why: &'static str) -> TenancyError {
    TenancyError::CostInvalid { reason: why.into() }
}

/// A decimal integer from 0 to `max`, nothing else (no sign, no spaces, no exponent).
fn parse_cost(text: &str, max: u32) -> Result<u32, TenancyError> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_cost("the cost is not a non-negative integer"));
    }
    let cost: u64 = text
        .parse()
        .map_err(|_| bad_cost("the cost is not a number"))?;
    u32::try_from(cost)
        .ok()
        .filter(|c| *c <= max)
        .ok_or_else(|| bad_cost("the cost is larger than allowed"))
}

/// Whether the form-urlencoded `raw` decodes to `name`.
fn decodes_to(raw: &str, name: &str) -> bool {
    let hex = |b: u8| char::from(b).to_digit(16);
    let raw = raw.as_bytes();
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escaped = match raw[i..] {
            [b'%', hi, lo, ..] => hex(hi).zip(hex(lo)).map(|(hi, lo)| hi * 16 + lo),
            _ => None,
        };
        match (raw[i], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte as u8);
                i += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                i += 1;
            }
            (other, None) => {
                decoded.push(other);
                i += 1;
            }
        }
    }
    decoded == name.as_bytes()
}

/// Checks the routes a route-bound estimator binds (each adapter's `RouteCost`), as
/// `(method, pattern)` pairs: each pattern starts with `/`, and no method and pattern
/// are bound twice.
pub fn check_routes<'a>(
    routes: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ConfigError> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (method, pattern) in routes {
        if !pattern.starts_with('/') {
            return Err(ConfigError::invalid(
                "route pattern",
                pattern,
                "it must start with '/'",
            ));
        }
        if seen.contains(&(method, pattern)) {
            return Err(ConfigError::Duplicate {
                what: "route",
                value: format!("{method} {pattern}"),
            });
        }
        seen.push((method, pattern));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_cost_is_one_plain_decimal() {
        let q = QueryCost::new("max_tokens").max(600);
        assert_eq!(q.cost("max_tokens=600").unwrap(), 600);
        assert_eq!(q.cost("a=1").unwrap(), 1);
        for bad in [
            "max_tokens=601",
            "max_tokens=-1",
            "max_tokens=",
            "max_tokens=1e3",
            "max_tokens=1&max_tokens=2",
            "max%5Ftokens=1",
            "max_tokens=%31",
        ] {
            assert!(q.cost(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_header_cost_is_one_plain_decimal() {
        let h = HeaderCost::new("X-Token-Count").unwrap();
        assert_eq!(h.name(), "x-token-count");
        assert_eq!(h.cost([&b"42"[..]].into_iter()).unwrap(), 42);
        assert_eq!(h.cost(std::iter::empty()).unwrap(), 1);
        assert!(h.cost([&b"4"[..], b"2"].into_iter()).is_err());
        assert!(h.cost([&b"4\xff"[..]].into_iter()).is_err());
        assert!(HeaderCost::new("bad name").is_err());
    }
}
