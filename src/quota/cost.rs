//! What a request costs: the [`CostEstimator`] trait and the estimators that read a
//! header or a query parameter.

use actix_web::{dev::ServiceRequest, http::header::HeaderName};

use crate::core::error::{ConfigError, TenancyError};

/// How many units a request costs.
///
/// A closure `Fn(&ServiceRequest) -> u32` is an estimator; [`HeaderCost`] reads a
/// header. Returning an error rejects the request (`400 cost_invalid`): a cost the
/// client sends is input like any other, and a bad one is never a credit.
pub trait CostEstimator: Send + Sync + 'static {
    /// The cost of `req`.
    fn estimate(&self, req: &ServiceRequest) -> Result<u32, TenancyError>;
}

impl<F> CostEstimator for F
where
    F: Fn(&ServiceRequest) -> u32 + Send + Sync + 'static,
{
    fn estimate(&self, req: &ServiceRequest) -> Result<u32, TenancyError> {
        Ok(self(req))
    }
}

/// A cost read from a header such as `X-Token-Count`: a decimal integer from 0 to
/// `max`. A missing header costs `default`; a negative, non-numeric, repeated or
/// larger-than-`max` value is a `400 cost_invalid`.
///
/// ```
/// use actix_tenancy::quota::HeaderCost;
///
/// let tokens = HeaderCost::new("x-token-count").unwrap().max(100_000).default_cost(1);
/// ```
#[derive(Debug, Clone)]
pub struct HeaderCost {
    name: HeaderName,
    max: u32,
    default: u32,
}

impl HeaderCost {
    /// Reads `name`; at most 1,000,000 units, 1 when absent.
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            name: HeaderName::try_from(name)
                .map_err(|_| ConfigError::InvalidHeaderName(name.to_owned()))?,
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
}

impl CostEstimator for HeaderCost {
    fn estimate(&self, req: &ServiceRequest) -> Result<u32, TenancyError> {
        let mut values = req.headers().get_all(&self.name);
        let Some(value) = values.next() else {
            return Ok(self.default);
        };
        if values.next().is_some() {
            return Err(bad_cost("the cost header is repeated"));
        }
        let text = value
            .to_str()
            .map_err(|_| bad_cost("the cost is not ASCII"))?;
        parse_cost(text, self.max)
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

/// A cost read from a query parameter such as `?max_tokens=500`: a decimal integer
/// from 0 to `max`. A missing parameter costs `default`; an empty, negative,
/// non-numeric, percent-encoded (value or name), repeated or larger-than-`max` value is a
/// `400 cost_invalid`.
///
/// ```
/// use actix_tenancy::quota::QueryCost;
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
}

impl CostEstimator for QueryCost {
    fn estimate(&self, req: &ServiceRequest) -> Result<u32, TenancyError> {
        let mut found = None;
        for pair in req.query_string().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key != self.name {
                // `max%5Ftokens` is `max_tokens` to the handler's `web::Query`: never let
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
