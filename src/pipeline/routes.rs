//! The route pattern of a path, remembered per worker.
//!
//! Policy rules are written against the pattern actix routes a path to
//! (`/items/{id}`), but the middleware runs before routing, so the pattern has to be
//! looked up: `ResourceMap::match_pattern` walks the route table and allocates the
//! pattern on every call. A [`RouteCache`] remembers, for the paths it has seen, the
//! path and its pattern as shared strings, so a repeated path costs one hash lookup
//! and no allocation.
//!
//! One cache belongs to one middleware service, which serves one `App` on one worker;
//! it answers only for the route table it learned from, and starts over should it ever
//! see another. It is bounded (paths are chosen by clients): at most
//! [`MAX_ENTRIES`] paths of at most [`MAX_PATH_LEN`] bytes; longer paths are looked up
//! every time, and a full cache starts over. Its hasher is seeded per cache and keyed
//! for untrusted input.

use std::{cell::RefCell, collections::HashMap, sync::Arc};

use actix_web::dev::{ResourceMap, ServiceRequest};

/// Paths remembered at most, per cache.
pub(crate) const MAX_ENTRIES: usize = 1024;
/// The longest path remembered, in bytes.
pub(crate) const MAX_PATH_LEN: usize = 256;

/// A path as routed, and the route pattern it matched.
#[derive(Debug, Clone)]
pub(crate) struct RoutedPath {
    pub(crate) path: Arc<str>,
    pub(crate) route: Option<Arc<str>>,
}

#[derive(Default)]
pub(crate) struct RouteCache {
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The route table the entries came from (compared, never dereferenced).
    table: usize,
    paths: HashMap<Arc<str>, Option<Arc<str>>, foldhash::quality::RandomState>,
}

impl RouteCache {
    /// The routed path of `req` and its pattern.
    #[inline]
    pub(crate) fn lookup(&self, req: &ServiceRequest) -> RoutedPath {
        self.lookup_in(req.request().resource_map(), req.match_info().as_str())
    }

    fn lookup_in(&self, rmap: &ResourceMap, path: &str) -> RoutedPath {
        let table = std::ptr::from_ref::<ResourceMap>(rmap) as usize;
        let mut inner = self.inner.borrow_mut();
        if inner.table != table {
            inner.paths.clear();
            inner.table = table;
        }
        if let Some((path, route)) = inner.paths.get_key_value(path) {
            return RoutedPath {
                path: Arc::clone(path),
                route: route.clone(),
            };
        }
        let routed = RoutedPath {
            path: path.into(),
            route: rmap.match_pattern(path).map(Arc::from),
        };
        if path.len() <= MAX_PATH_LEN {
            if inner.paths.len() >= MAX_ENTRIES {
                inner.paths.clear();
            }
            inner
                .paths
                .insert(Arc::clone(&routed.path), routed.route.clone());
        }
        routed
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.borrow().paths.len()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::dev::ResourceDef;

    use super::*;

    fn table(patterns: &[&str]) -> ResourceMap {
        let mut rmap = ResourceMap::new(ResourceDef::prefix(""));
        for p in patterns {
            rmap.add(&mut ResourceDef::new(*p), None);
        }
        rmap
    }

    #[test]
    fn remembers_paths_and_patterns_within_bounds() {
        let rmap = table(&["/items/{id}", "/health"]);
        let cache = RouteCache::default();

        let a = cache.lookup_in(&rmap, "/items/7");
        assert_eq!(
            (&*a.path, a.route.as_deref()),
            ("/items/7", Some("/items/{id}"))
        );
        let again = cache.lookup_in(&rmap, "/items/7");
        assert!(
            Arc::ptr_eq(&a.path, &again.path),
            "a repeated path is shared"
        );
        assert_eq!(again.route.as_deref(), Some("/items/{id}"));
        assert_eq!(cache.lookup_in(&rmap, "/nowhere").route, None);
        assert_eq!(cache.len(), 2);

        let long = format!("/{}", "x".repeat(MAX_PATH_LEN));
        assert_eq!(&*cache.lookup_in(&rmap, &long).path, long);
        assert_eq!(cache.len(), 2, "a long path is not remembered");

        for i in 0..MAX_ENTRIES + 10 {
            let path = format!("/items/{i}");
            let routed = cache.lookup_in(&rmap, &path);
            assert_eq!(
                (&*routed.path, routed.route.as_deref()),
                (&*path, Some("/items/{id}"))
            );
            assert!(cache.len() <= MAX_ENTRIES);
        }
    }

    #[test]
    fn another_route_table_starts_over() {
        let (one, two) = (table(&["/items/{id}"]), table(&["/items/{name}"]));
        let cache = RouteCache::default();
        assert_eq!(
            cache.lookup_in(&one, "/items/7").route.as_deref(),
            Some("/items/{id}")
        );
        assert_eq!(
            cache.lookup_in(&two, "/items/7").route.as_deref(),
            Some("/items/{name}")
        );
        assert_eq!(cache.len(), 1);
    }
}
