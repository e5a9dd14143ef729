//! Per-route config: what a route hands a plugin in its chain (`plugins = [{ name = "…",
//! config = { … } }]`), checked when each instance is made, and found again by route during a
//! request.

use serde::de::DeserializeOwned;

use crate::Request;

/// One route's config for the plugin, as the host hands it to
/// [`Plugin::init_route`](crate::Plugin::init_route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    json: String,
}

impl RouteConfig {
    /// The config as the host hands it, from its JSON text: what a plugin's own tests use.
    pub fn new(json: impl Into<String>) -> Self {
        RouteConfig { json: json.into() }
    }

    /// The config as the type the plugin expects, or a message for the operator that says
    /// where it does not fit (the same form as a refused plugin config).
    pub fn parse<C: DeserializeOwned>(&self) -> Result<C, String> {
        crate::config::parse(&self.json)
    }

    /// The config's JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// Values a plugin keeps by route, typically each route's parsed config.
///
/// ```
/// use serde::Deserialize;
/// use wasmgate_sdk::{Action, PerRoute, Plugin, Request, RouteConfig};
///
/// #[derive(Deserialize)]
/// struct Limit {
///     max_body: u64,
/// }
///
/// struct BodyCap {
///     default: u64,
///     routes: PerRoute<Limit>,
/// }
///
/// #[wasmgate_sdk::plugin]
/// impl Plugin for BodyCap {
///     type Config = Limit;
///
///     fn new(config: Limit) -> Result<Self, String> {
///         Ok(BodyCap { default: config.max_body, routes: PerRoute::new() })
///     }
///
///     fn init_route(&mut self, route: &str, config: RouteConfig) -> Result<(), String> {
///         self.routes.insert(route, config.parse()?);
///         Ok(())
///     }
///
///     fn on_request_headers(&mut self, req: &mut Request) -> Action {
///         let max = self.routes.of(req).map_or(self.default, |limit| limit.max_body);
///         let _ = req.set_header("x-max-body", max.to_string());
///         Action::Continue
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct PerRoute<T> {
    // A route table is short, and a scan of a few names is faster than hashing one.
    routes: Vec<(String, T)>,
}

impl<T> Default for PerRoute<T> {
    fn default() -> Self {
        PerRoute { routes: Vec::new() }
    }
}

impl<T> PerRoute<T> {
    /// No route yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `value` for `route`, replacing what was kept for it.
    pub fn insert(&mut self, route: &str, value: T) {
        match self.routes.iter_mut().find(|(name, _)| name == route) {
            Some((_, kept)) => *kept = value,
            None => self.routes.push((route.to_owned(), value)),
        }
    }

    /// What was kept for route `route`.
    pub fn get(&self, route: &str) -> Option<&T> {
        self.routes.iter().find(|(name, _)| name == route).map(|(_, value)| value)
    }

    /// What was kept for the route of `req`. Asks the host for the route's name only when
    /// some route has a value.
    pub fn of(&self, req: &Request) -> Option<&T> {
        if self.routes.is_empty() {
            return None;
        }
        self.get(&req.route())
    }

    /// True when no route has a value.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Limit {
        rate: u32,
    }

    #[test]
    fn parses_like_the_plugin_config_and_says_where_it_does_not_fit() {
        assert_eq!(RouteConfig::new(r#"{"rate": 5}"#).parse(), Ok(Limit { rate: 5 }));
        let error = RouteConfig::new(r#"{"rat": 5}"#).parse::<Limit>().expect_err("unknown field");
        assert!(error.starts_with("invalid config: unknown field `rat`, expected `rate`"), "{error}");
    }

    #[test]
    fn keeps_one_value_per_route() {
        let mut routes = PerRoute::new();
        assert!(routes.is_empty());
        routes.insert("api", 1);
        routes.insert("web", 2);
        routes.insert("api", 3);
        assert_eq!((routes.get("api"), routes.get("web"), routes.get("other")), (Some(&3), Some(&2), None));
    }
}
