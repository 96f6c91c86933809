//! What a request costs: the [`CostEstimator`] trait, the request as an estimator sees
//! it ([`CostRequest`]), and the estimators that read a header, a query parameter, or
//! the route actix matched.

use std::{fmt, sync::Arc};

use actix_web::{
    dev::{ResourceDef, ServiceRequest},
    http::{header::HeaderName, Method},
};

use crate::{
    core::error::{ConfigError, TenancyError},
    pipeline::RouteCache,
};

/// A request as a [`CostEstimator`] sees it: the request, and the route pattern actix
/// routes it to.
///
/// The middleware runs before routing, on the raw request: `req.path()` is the path
/// as the client spelled it (`/api/%63omplete`), while actix routes on the decoded
/// path. An estimator that compares `req.path()` can be dodged by an encoding; one that
/// compares [`route`](Self::route) cannot, since the route is found the way actix
/// finds it. [`RouteCost`] does that for you.
#[derive(Clone, Copy)]
pub struct CostRequest<'a> {
    req: &'a ServiceRequest,
    routes: Option<&'a RouteCache>,
}

impl fmt::Debug for CostRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CostRequest")
            .field("method", self.req.method())
            .field("path", &self.req.match_info().as_str())
            .finish_non_exhaustive()
    }
}

impl<'a> CostRequest<'a> {
    /// `req` as an estimator sees it; for testing an estimator on its own (the quota
    /// stage builds its own, with its worker's route cache).
    pub fn new(req: &'a ServiceRequest) -> Self {
        Self { req, routes: None }
    }

    pub(crate) fn with_routes(req: &'a ServiceRequest, routes: &'a RouteCache) -> Self {
        Self {
            req,
            routes: Some(routes),
        }
    }

    /// The request.
    pub fn request(&self) -> &'a ServiceRequest {
        self.req
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.req.method()
    }

    /// The first route pattern that matches this request's path, as written in the app
    /// (`/api/complete`, `/items/{id}`, with its scopes' prefixes), or `None` when no
    /// route matches (the request gets a `404`, or the default service).
    ///
    /// It is found without actix's guards (the middleware runs before routing): where
    /// patterns overlap and guards decide, the handler that runs may be another
    /// pattern's. [`RouteCost`] charges the highest cost of every pattern that
    /// matches; an estimator of your own that charges by route should do the same.
    pub fn route(&self) -> Option<Arc<str>> {
        match self.routes {
            Some(routes) => routes.lookup(self.req).route,
            None => {
                let path = self.req.match_info().as_str();
                self.req.resource_map().match_pattern(path).map(Arc::from)
            }
        }
    }
}

/// How many units a request costs.
///
/// A closure `Fn(&ServiceRequest) -> u32` is an estimator; [`HeaderCost`] reads a
/// header, [`QueryCost`] a query parameter, and [`RouteCost`] charges by the route
/// actix matched (never compare `req.path()` yourself: see [`CostRequest`]).
/// Returning an error rejects the request (`400 cost_invalid`): a cost the client
/// sends is input like any other, and a bad one is never a credit.
pub trait CostEstimator: Send + Sync + 'static {
    /// The cost of `req`.
    fn estimate(&self, req: &CostRequest<'_>) -> Result<u32, TenancyError>;
}

impl<F> CostEstimator for F
where
    F: Fn(&ServiceRequest) -> u32 + Send + Sync + 'static,
{
    fn estimate(&self, req: &CostRequest<'_>) -> Result<u32, TenancyError> {
        Ok(self(req.request()))
    }
}

/// Costs by route: the estimator of the route a request is routed to, by method and
/// route pattern as written in the app; every other request costs
/// [`otherwise`](RouteCostBuilder::otherwise) (default: 1 unit).
///
/// Where patterns overlap (`/items/{id}` and `/items/export`) and actix's guards
/// decide which handler runs, every bound pattern that matches the request is
/// considered and the highest cost is charged: the middleware runs before routing,
/// and the charge is never less than the handler that runs is bound to.
///
/// Routes are matched the way actix matches them, so `/api/%63omplete` is charged as
/// `/api/complete`, and spellings actix routes nowhere (`//api/complete`,
/// `/api/complete/`, `/api/./complete`) reach no handler. Middleware that rewrites the
/// path (such as `NormalizePath`) must wrap *outside* the tenancy middleware, so that
/// the route seen here is the route the handler gets.
///
/// ```
/// use actix_tenancy::quota::{QueryCost, RouteCost};
/// use actix_web::http::Method;
///
/// let cost = RouteCost::builder()
///     .route(Method::POST, "/api/complete", QueryCost::new("max_tokens").max(32_000))
///     .otherwise(|_: &actix_web::dev::ServiceRequest| 0)
///     .build()
///     .unwrap();
/// ```
#[derive(Clone)]
pub struct RouteCost {
    routes: Arc<[(Bound, ResourceDef)]>,
    otherwise: Arc<dyn CostEstimator>,
}

impl fmt::Debug for RouteCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<_> = self.routes.iter().map(|((m, p, _), _)| (m, p)).collect();
        f.debug_struct("RouteCost")
            .field("routes", &routes)
            .finish_non_exhaustive()
    }
}

impl RouteCost {
    /// A builder with no route: every request costs 1 until routes are added.
    pub fn builder() -> RouteCostBuilder {
        RouteCostBuilder {
            routes: Vec::new(),
            otherwise: Arc::new(|_: &ServiceRequest| 1),
        }
    }
}

/// An estimator bound to a method and a route pattern.
type Bound = (Method, Arc<str>, Arc<dyn CostEstimator>);

/// Builds a [`RouteCost`].
#[must_use]
pub struct RouteCostBuilder {
    routes: Vec<Bound>,
    otherwise: Arc<dyn CostEstimator>,
}

impl fmt::Debug for RouteCostBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<_> = self.routes.iter().map(|(m, p, _)| (m, p)).collect();
        f.debug_struct("RouteCostBuilder")
            .field("routes", &routes)
            .finish_non_exhaustive()
    }
}

impl RouteCostBuilder {
    /// Requests with `method` routed to `pattern` (as written in the app, scopes'
    /// prefixes included: `/api/complete`, `/items/{id}`) cost what `estimator` says.
    pub fn route(mut self, method: Method, pattern: &str, estimator: impl CostEstimator) -> Self {
        self.routes
            .push((method, Arc::from(pattern), Arc::new(estimator)));
        self
    }

    /// What every other request costs (default: 1 unit).
    pub fn otherwise(mut self, estimator: impl CostEstimator) -> Self {
        self.otherwise = Arc::new(estimator);
        self
    }

    /// Checks the patterns and builds the estimator.
    pub fn build(self) -> Result<RouteCost, ConfigError> {
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, (method, pattern, _)) in self.routes.iter().enumerate() {
            if !pattern.starts_with('/') {
                return Err(ConfigError::invalid(
                    "route pattern",
                    &**pattern,
                    "it must start with '/'",
                ));
            }
            if self.routes[..i]
                .iter()
                .any(|(m, p, _)| m == method && p == pattern)
            {
                return Err(ConfigError::Duplicate {
                    what: "route",
                    value: format!("{method} {pattern}"),
                });
            }
        }
        for bound in self.routes {
            // actix's own matcher for the pattern; it panics on a pattern it cannot
            // read (a bad regex), which is a configuration error here.
            let pattern = Arc::clone(&bound.1);
            let def = std::panic::catch_unwind(|| ResourceDef::new(&*pattern)).map_err(|_| {
                ConfigError::invalid("route pattern", &*pattern, "actix cannot read it")
            })?;
            routes.push((bound, def));
        }
        Ok(RouteCost {
            routes: routes.into(),
            otherwise: self.otherwise,
        })
    }
}

impl CostEstimator for RouteCost {
    /// The highest cost of every bound route that can serve the request: the route
    /// pattern actix matches first, and every other pattern that matches the path.
    /// Actix's guards (the method guard of `#[post]`, a custom guard) may send a
    /// request to another handler than the first matching pattern, and the middleware
    /// runs before routing: charging the highest of them is never less than what the
    /// handler that runs is bound to cost.
    fn estimate(&self, req: &CostRequest<'_>) -> Result<u32, TenancyError> {
        let method = req.method();
        let mut bound = self
            .routes
            .iter()
            .filter(|((m, ..), _)| m == method)
            .peekable();
        if bound.peek().is_none() {
            return self.otherwise.estimate(req);
        }
        let route = req.route();
        let path = req.request().match_info().as_str();
        let mut highest: Option<u32> = None;
        for ((_, pattern, estimator), def) in bound {
            if route.as_deref() == Some(&**pattern) || def.is_match(path) {
                let cost = estimator.estimate(req)?;
                highest = Some(highest.map_or(cost, |h| h.max(cost)));
            }
        }
        match highest {
            Some(cost) => Ok(cost),
            None => self.otherwise.estimate(req),
        }
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
            name: HeaderName::try_from(name).map_err(|_| {
                ConfigError::invalid("header name", name, "not a valid HTTP header name")
            })?,
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
    fn estimate(&self, req: &CostRequest<'_>) -> Result<u32, TenancyError> {
        let mut values = req.request().headers().get_all(&self.name);
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
    fn estimate(&self, req: &CostRequest<'_>) -> Result<u32, TenancyError> {
        let mut found = None;
        for pair in req.request().query_string().split('&') {
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
