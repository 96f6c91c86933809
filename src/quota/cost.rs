//! What a request costs: the [`CostEstimator`] trait, the request as an estimator sees
//! it ([`CostRequest`]), and the estimators that read a header, a query parameter, or
//! the route actix matched.

use std::{fmt, sync::Arc};

use actix_web::{
    dev::{ResourceDef, ServiceRequest},
    http::Method,
};

use tenancy_core::quota::check_routes;

use super::{HeaderCost, QueryCost};
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
        check_routes(self.routes.iter().map(|(m, p, _)| (m.as_str(), &**p)))?;
        let mut routes = Vec::with_capacity(self.routes.len());
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

impl CostEstimator for HeaderCost {
    fn estimate(&self, req: &CostRequest<'_>) -> Result<u32, TenancyError> {
        let values = req.request().headers().get_all(self.name());
        self.cost(values.map(|v| v.as_bytes()))
    }
}

impl CostEstimator for QueryCost {
    fn estimate(&self, req: &CostRequest<'_>) -> Result<u32, TenancyError> {
        self.cost(req.request().query_string())
    }
}
