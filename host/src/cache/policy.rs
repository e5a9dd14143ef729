//! RFC 9111's rules for a shared cache, as functions of heads: what a request's
//! `Cache-Control` allows, whether a response may be stored and for how long, and how old a
//! stored response is.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode, header};

/// The `Cache-Control` directives a shared cache acts on, from a request or a response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
    pub(crate) only_if_cached: bool,
}

impl Directives {
    /// Every `Cache-Control` field line of `headers`. Names are case-insensitive; a value may
    /// be quoted; an argument that is not a number leaves its directive out. `no-cache` and
    /// `private` with a field list count as the plain directive (the stricter reading).
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut d = Directives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for item in split_list(value) {
                let (name, arg) = match item.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                    None => (item, None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => d.max_age = seconds().or(d.max_age),
                    "s-maxage" => d.s_maxage = seconds().or(d.s_maxage),
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "stale-while-revalidate" => d.stale_while_revalidate = seconds(),
                    "stale-if-error" => d.stale_if_error = seconds(),
                    "only-if-cached" => d.only_if_cached = true,
                    _ => {}
                }
            }
        }
        // `Pragma: no-cache` counts only without `Cache-Control` (RFC 9111 §5.4).
        if !headers.contains_key(header::CACHE_CONTROL)
            && headers.get_all(header::PRAGMA).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        {
            d.no_cache = true;
        }
        d
    }
}

/// The comma-separated items of a list header, trimmed, empty ones left out.
pub(crate) fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// Statuses a shared cache may store: those RFC 9110 calls heuristically cacheable, less 206
/// (a part is not a response a later request can be given whole).
pub(crate) fn storable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Why a response is not stored; the `detail` of its `cache-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    Authorization,
    SetCookie,
    VaryAll,
    NoFreshness,
    TooLarge,
    /// A plugin said not to.
    Plugin,
}

impl NotStored {
    pub(crate) fn detail(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryAll => "vary-star",
            NotStored::NoFreshness => "no-freshness",
            NotStored::TooLarge => "too-large",
            NotStored::Plugin => "plugin",
        }
    }
}

/// How long a stored response stays fresh, and how it may be served stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// From when the origin made it (its age counts against it).
    pub(crate) lifetime: Duration,
    /// Served stale while a background request refreshes it, this long past its lifetime.
    pub(crate) while_revalidate: Duration,
    /// Served stale when the origin fails, this long past its lifetime.
    pub(crate) if_error: Duration,
    /// Never served without asking the origin (`no-cache`).
    pub(crate) always_revalidate: bool,
    /// Never served stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
    pub(crate) never_stale: bool,
}

/// What a route's cache does for responses that say nothing of their own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    pub(crate) ttl: Option<Duration>,
    pub(crate) while_revalidate: Duration,
    pub(crate) if_error: Duration,
}

/// The freshness of a response to `method` with `status` and `headers`, for a request that
/// carried `Authorization` or not; why not, when a shared cache must not store it.
pub(crate) fn freshness(
    method: &Method,
    authorized: bool,
    status: StatusCode,
    headers: &HeaderMap,
    defaults: Defaults,
) -> Result<Freshness, NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if !storable_status(status) {
        return Err(NotStored::Status);
    }
    let d = Directives::of(headers);
    if d.no_store {
        return Err(NotStored::NoStore);
    }
    if d.private {
        return Err(NotStored::Private);
    }
    // RFC 9111 §3.5: an answer to an authorised request is the requester's, unless it says
    // otherwise.
    if authorized && !(d.public || d.s_maxage.is_some() || d.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    // A shared cache would hand one client's cookie to the next.
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(headers).any(|name| name == "*") {
        return Err(NotStored::VaryAll);
    }
    let explicit = d.s_maxage.or(d.max_age).map(Duration::from_secs).or_else(|| {
        let expires = http_date(headers.get(header::EXPIRES)?)?;
        // An `Expires` that is not a date means already expired (RFC 9111 §5.3).
        let date = http_date_of(headers, header::DATE).unwrap_or_else(SystemTime::now);
        Some(expires.duration_since(date).unwrap_or_default())
    });
    let expires_invalid = explicit.is_none() && headers.contains_key(header::EXPIRES);
    let lifetime = match (explicit, defaults.ttl) {
        (Some(lifetime), _) => lifetime,
        _ if expires_invalid => Duration::ZERO,
        (None, Some(ttl)) => ttl,
        (None, None) if d.no_cache => Duration::ZERO,
        (None, None) => return Err(NotStored::NoFreshness),
    };
    let secs = |s: Option<u64>, default: Duration| s.map_or(default, Duration::from_secs);
    Ok(Freshness {
        lifetime,
        while_revalidate: secs(d.stale_while_revalidate, defaults.while_revalidate),
        if_error: secs(d.stale_if_error, defaults.if_error),
        always_revalidate: d.no_cache,
        never_stale: d.must_revalidate || d.proxy_revalidate || d.s_maxage.is_some(),
    })
}

/// The header names a response's `Vary` lists, lowercased.
pub(crate) fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::VARY)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_list)
        .map(str::to_ascii_lowercase)
}

/// How old a response was when it arrived (RFC 9111 §4.2.3): its `Age` plus the time it took
/// to come, or the time since its `Date` if that is more.
pub(crate) fn initial_age(headers: &HeaderMap, took: Duration, now: SystemTime) -> Duration {
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent = http_date_of(headers, header::DATE)
        .and_then(|date| now.duration_since(date).ok())
        .unwrap_or_default();
    apparent.max(age + took)
}

fn http_date(value: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The date in header `name`, if it is one.
pub(crate) fn http_date_of(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    http_date(headers.get(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("as written"),
                http::HeaderValue::from_str(value).expect("as written"),
            );
        }
        headers
    }

    const NONE: Defaults = Defaults { ttl: None, while_revalidate: Duration::ZERO, if_error: Duration::ZERO };

    fn fresh(lines: &[(&str, &str)]) -> Result<Freshness, NotStored> {
        freshness(&Method::GET, false, StatusCode::OK, &head(lines), NONE)
    }

    #[test]
    fn directives_are_read_case_insensitively_across_lines_and_quotes() {
        let d = Directives::of(&head(&[
            ("cache-control", "Max-Age=\"60\", public"),
            ("cache-control", "stale-while-revalidate=30, no-cache=\"set-cookie\""),
        ]));
        assert_eq!(d.max_age, Some(60));
        assert!(d.public && d.no_cache);
        assert_eq!(d.stale_while_revalidate, Some(30));
        assert_eq!(Directives::of(&head(&[("cache-control", "max-age=soon")])).max_age, None);
        assert!(Directives::of(&head(&[("pragma", "no-cache")])).no_cache);
        assert!(!Directives::of(&head(&[("pragma", "no-cache"), ("cache-control", "max-age=1")])).no_cache);
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_forbids_stale() {
        let f =
            fresh(&[("cache-control", "max-age=10, s-maxage=100, stale-if-error=5")]).expect("as written");
        assert_eq!(f.lifetime, Duration::from_secs(100));
        assert!(f.never_stale);
        assert_eq!(f.if_error, Duration::from_secs(5));
    }

    #[test]
    fn expires_counts_from_date_and_a_bad_one_means_stale() {
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let expires = date + Duration::from_secs(120);
        let f = fresh(&[
            ("date", &httpdate::fmt_http_date(date)),
            ("expires", &httpdate::fmt_http_date(expires)),
        ])
        .expect("as written");
        assert_eq!(f.lifetime, Duration::from_secs(120));
        assert_eq!(fresh(&[("expires", "0")]).expect("as written").lifetime, Duration::ZERO);
    }

    #[test]
    fn what_a_shared_cache_must_not_store() {
        assert_eq!(fresh(&[]), Err(NotStored::NoFreshness));
        assert_eq!(fresh(&[("cache-control", "max-age=60, no-store")]), Err(NotStored::NoStore));
        assert_eq!(fresh(&[("cache-control", "private, max-age=60")]), Err(NotStored::Private));
        assert_eq!(
            fresh(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]),
            Err(NotStored::SetCookie)
        );
        assert_eq!(fresh(&[("cache-control", "max-age=60"), ("vary", "Accept, *")]), Err(NotStored::VaryAll));
        let authorized = |cc: &str| {
            freshness(&Method::GET, true, StatusCode::OK, &head(&[("cache-control", cc)]), NONE).map(|_| ())
        };
        assert_eq!(authorized("max-age=60"), Err(NotStored::Authorization));
        assert_eq!(authorized("max-age=60, public"), Ok(()));
        let partial = freshness(
            &Method::GET,
            false,
            StatusCode::PARTIAL_CONTENT,
            &head(&[("cache-control", "max-age=60")]),
            NONE,
        );
        assert_eq!(partial, Err(NotStored::Status));
        let post =
            freshness(&Method::POST, false, StatusCode::OK, &head(&[("cache-control", "max-age=60")]), NONE);
        assert_eq!(post, Err(NotStored::Method));
    }

    #[test]
    fn the_default_ttl_covers_only_responses_silent_on_freshness() {
        let defaults = Defaults { ttl: Some(Duration::from_secs(30)), ..NONE };
        let f = |cc: &[(&str, &str)]| freshness(&Method::GET, false, StatusCode::OK, &head(cc), defaults);
        assert_eq!(f(&[]).expect("as written").lifetime, Duration::from_secs(30));
        assert_eq!(
            f(&[("cache-control", "max-age=5")]).expect("as written").lifetime,
            Duration::from_secs(5)
        );
        assert!(f(&[("cache-control", "no-cache")]).expect("as written").always_revalidate);
    }

    #[test]
    fn age_is_the_larger_of_the_age_header_plus_transit_and_the_time_since_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let date = httpdate::fmt_http_date(now - Duration::from_secs(40));
        let took = Duration::from_secs(1);
        assert_eq!(initial_age(&head(&[("age", "10"), ("date", &date)]), took, now), Duration::from_secs(40));
        assert_eq!(initial_age(&head(&[("age", "90"), ("date", &date)]), took, now), Duration::from_secs(91));
        assert_eq!(initial_age(&head(&[]), took, now), took);
    }
}
