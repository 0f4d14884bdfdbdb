//! Matching a request to a `[[route]]`, and so to a pool. Routes are sorted
//! most specific first when the configuration loads, so the first match wins.

use crate::config::RouteConfig;

/// The first route matching `method`, `host` and `path`.
pub fn select<'a>(
    routes: &'a [RouteConfig],
    method: &http::Method,
    host: Option<&str>,
    path: &str,
) -> Option<&'a RouteConfig> {
    let host = host.map(crate::host::without_port);
    routes.iter().find(|route| {
        let host_ok = match (&route.host, host) {
            (None, _) => true,
            (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
            (Some(_), None) => false,
        };
        host_ok
            && route.methods.as_ref().is_none_or(|m| m.contains(method))
            && route
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: Option<&str>, pool: usize) -> RouteConfig {
        RouteConfig {
            host: host.map(str::to_string),
            path_prefix: prefix.map(str::to_string),
            ..RouteConfig::catch_all(pool)
        }
    }

    #[test]
    fn methods_restrict_a_route() {
        let mut post_only = route(None, Some("/api"), 1);
        post_only.methods = Some(vec![http::Method::POST]);
        let routes = [post_only, route(None, None, 0)];
        assert_eq!(
            select(&routes, &http::Method::POST, None, "/api/x").map(|r| r.pool),
            Some(1)
        );
        assert_eq!(
            select(&routes, &http::Method::GET, None, "/api/x").map(|r| r.pool),
            Some(0)
        );
    }

    #[test]
    fn first_specific_match_wins() {
        let routes = [
            route(Some("api.example.com"), Some("/slow"), 2),
            route(None, Some("/img"), 1),
            route(None, None, 0),
        ];
        assert_eq!(
            select(
                &routes,
                &http::Method::GET,
                Some("API.example.com:80"),
                "/slow/x"
            )
            .map(|r| r.pool),
            Some(2)
        );
        assert_eq!(
            select(
                &routes,
                &http::Method::GET,
                Some("www.example.com"),
                "/slow/x"
            )
            .map(|r| r.pool),
            Some(0)
        );
        assert_eq!(
            select(&routes, &http::Method::GET, None, "/img/a.png").map(|r| r.pool),
            Some(1)
        );
    }
}
