//! Routing: which providers, in failover order, serve a number.
//!
//! The longest matching prefix of `[[routes]]` wins; a request's `provider` pin replaces the route
//! with that one instance (no failover beyond it).

use crate::class::Class;
use crate::config::RouteConfig;
use crate::provider::Providers;
use std::collections::HashMap;
use std::sync::Arc;

/// An ordered list of provider indexes (into [`Providers::list`]).
pub type Route = Arc<[usize]>;

#[derive(Debug, Default)]
pub struct Router {
    by_prefix: HashMap<String, Route>,
    /// `[[routes]] priority`, by prefix.
    priority: HashMap<String, Class>,
    /// The distinct prefix lengths, longest first.
    lengths: Vec<usize>,
    pinned: Vec<Route>,
}

impl Router {
    /// Builds the table. Provider names were checked by config validation; an unknown one here is
    /// skipped.
    pub fn new(routes: &[RouteConfig], providers: &Providers) -> Router {
        let table = routes.iter().flat_map(|r| {
            let route: Route = r.providers.iter().filter_map(|n| providers.index(n)).collect();
            r.prefixes.iter().map(move |p| (p.clone(), route.clone()))
        });
        let mut router = Self::from_table(table, providers.list.len());
        router.priority = routes
            .iter()
            .filter_map(|r| Some((r.priority?, r)))
            .flat_map(|(class, r)| r.prefixes.iter().map(move |p| (p.clone(), class)))
            .collect();
        router
    }

    fn from_table(table: impl IntoIterator<Item = (String, Route)>, provider_count: usize) -> Router {
        let by_prefix: HashMap<String, Route> = table.into_iter().collect();
        let mut lengths: Vec<usize> = by_prefix.keys().map(String::len).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        let pinned = (0..provider_count).map(|i| Route::from(vec![i])).collect();
        Router { by_prefix, priority: HashMap::new(), lengths, pinned }
    }

    /// The route for `number` (digits, normal form), or `None` when no prefix matches.
    pub fn route(&self, number: &str) -> Option<&Route> {
        self.lengths
            .iter()
            .filter(|&&n| n <= number.len())
            .find_map(|&n| self.by_prefix.get(&number[..n]).filter(|r| !r.is_empty()))
    }

    /// The `priority` of the route `number` takes (`None`: the route sets none).
    pub fn priority(&self, number: &str) -> Option<Class> {
        self.lengths
            .iter()
            .filter(|&&n| n <= number.len())
            .find(|&&n| self.by_prefix.get(&number[..n]).is_some_and(|r| !r.is_empty()))
            .and_then(|&n| self.priority.get(&number[..n]).copied())
    }

    /// The route of a request pinned to provider `index`.
    pub fn pinned(&self, index: usize) -> &Route {
        &self.pinned[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&[&str], &[usize])]) -> Router {
        let table = routes.iter().flat_map(|(prefixes, providers)| {
            prefixes.iter().map(|p| (p.to_string(), Route::from(providers.to_vec())))
        });
        Router::from_table(table, 3)
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router(&[(&[""], &[0, 1]), (&["49"], &[1]), (&["4915"], &[2])]);
        assert_eq!(&**r.route("4915171112233").unwrap(), &[2]);
        assert_eq!(&**r.route("4930123456").unwrap(), &[1]);
        assert_eq!(&**r.route("995599123456").unwrap(), &[0, 1]);
    }

    #[test]
    fn no_catch_all_means_no_route() {
        let r = router(&[(&["995"], &[0])]);
        assert!(r.route("4915171112233").is_none());
        assert!(r.route("995599123456").is_some());
    }
}
