//! rate-limit: a token bucket per client address or per header value, kept in the shared
//! store so that every instance on every thread draws from the same bucket. Requests over the
//! limit are answered `429 Too Many Requests` in `on_request_headers`. A route may give its own
//! limit in the same form (`{ name = "rate-limit", config = { rate = 100 } }`): its requests
//! then draw from buckets of the route's own.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use wasmgate_sdk::{
    Action, LocalResponse, PerRoute, Plugin, Request, RouteConfig, clock, log, metrics, store,
};

/// How many times a request re-reads its bucket when another request changed it in between,
/// before it gives up and is let through: contention that high is better answered late than
/// never, and a limiter must not stall the gateway.
const MAX_TRIES: usize = 8;

/// Bucket contents are counted in thousandths of a token, so that fractional refills (a rate
/// of 0.5 tokens per second) need no floating point in the store.
const MILLI: u64 = 1000;

/// Longer keys are hashed: the store takes keys of at most 256 bytes.
const MAX_RAW_KEY: usize = 200;

/// The plugin's table in the gateway config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Tokens added per second (the sustained request rate).
    rate: f64,
    /// The bucket size (the largest burst); one second's worth of tokens if unset.
    #[serde(default)]
    burst: Option<u32>,
    /// `client-addr` or `header:NAME`.
    #[serde(default = "default_key")]
    key: String,
    /// What to do with a request that has no key header.
    #[serde(default)]
    missing: Missing,
}

fn default_key() -> String {
    "client-addr".to_owned()
}

/// What happens to a request without the key header.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Missing {
    /// Let it through, unlimited.
    #[default]
    Allow,
    /// Answer 400.
    Deny,
}

/// What a request is counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySource {
    /// The client's IP address, without the port.
    ClientAddr,
    /// The value of this (lowercased) request header.
    Header(String),
}

/// The bucket parameters, in the units the arithmetic uses.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limit {
    /// Thousandths of a token added per millisecond (numerically, tokens per second).
    rate: f64,
    /// The bucket size in thousandths of a token.
    capacity_milli: u64,
}

/// A bucket as stored: its contents when it was last refilled, and when that was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    tokens_milli: u64,
    last_ms: u64,
}

/// Whether a request may pass, and the bucket to store if so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow(Bucket),
    /// Over the limit: whole seconds until a token is back.
    Deny {
        retry_after_s: u64,
    },
}

/// One limit: the plugin's, or a route's own.
#[derive(Debug)]
struct Policy {
    limit: Limit,
    key: KeySource,
    missing: Missing,
    /// How long an untouched bucket is kept: twice the time to refill it from empty. An entry
    /// that expires was full anyway, so expiry never gives a client more than the limit.
    ttl: Duration,
    /// Put before the request key: empty for the plugin's limit, the route's name for a
    /// route's own, so that the two never share a bucket.
    scope: String,
}

#[derive(Debug)]
struct RateLimit {
    all: Policy,
    routes: PerRoute<Policy>,
}

#[wasmgate_sdk::plugin]
impl Plugin for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(RateLimit { all: Policy::new(config, String::new())?, routes: PerRoute::new() })
    }

    fn init_route(&mut self, route: &str, config: RouteConfig) -> Result<(), String> {
        self.routes.insert(route, Policy::new(config.parse()?, format!("route/{route}/"))?);
        Ok(())
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        let policy = self.routes.of(req).unwrap_or(&self.all);
        let key = match &policy.key {
            KeySource::ClientAddr => client_ip(&req.client_addr()),
            KeySource::Header(name) => match req.header(name).filter(|value| !value.is_empty()) {
                Some(value) => value,
                None if policy.missing == Missing::Allow => return Action::Continue,
                None => return Action::Respond(missing_key(name)),
            },
        };
        match policy.take(&store_key(&policy.scope, &key)) {
            None => Action::Continue,
            Some(retry_after_s) => {
                metrics::counter("ratelimit_denied_total", &[], 1);
                Action::Respond(too_many_requests(retry_after_s))
            }
        }
    }
}

impl Policy {
    fn new(config: Config, scope: String) -> Result<Self, String> {
        if !config.rate.is_finite() || config.rate <= 0.0 {
            return Err(format!("`rate` {} must be a positive number of tokens per second", config.rate));
        }
        let burst = match config.burst {
            Some(0) => return Err("`burst` must be at least 1".to_owned()),
            Some(burst) => burst,
            // Saturating float-to-int conversion: a huge rate gives a huge (not a wrapped) burst.
            None => (config.rate.ceil() as u32).max(1),
        };
        let key = parse_key(&config.key)?;
        let capacity_milli = u64::from(burst) * MILLI;
        let refill_ms = capacity_milli as f64 / config.rate;
        let ttl = Duration::from_millis((2.0 * refill_ms).ceil().clamp(1000.0, 1e15) as u64);
        Ok(Policy {
            limit: Limit { rate: config.rate, capacity_milli },
            key,
            missing: config.missing,
            ttl,
            scope,
        })
    }

    /// Takes a token from the bucket under `key` in the shared store, retrying when another
    /// request updated the bucket between the read and the write: `Some(retry_after_s)` if the
    /// bucket is empty. Fails open: if the store refuses, or contention does not let up, the
    /// request passes (and a warning says why).
    fn take(&self, key: &str) -> Option<u64> {
        for _ in 0..MAX_TRIES {
            let stored = match store::get(key) {
                Ok(stored) => stored,
                Err(error) => {
                    log::warn!("rate limit not applied, store read failed: {error}");
                    return None;
                }
            };
            let now_ms = clock::wall_ms();
            // A value this version did not write (or a corrupt one) counts as a full bucket.
            let bucket = stored
                .as_deref()
                .and_then(decode)
                .unwrap_or(Bucket { tokens_milli: self.limit.capacity_milli, last_ms: now_ms });
            let next = match decide(bucket, now_ms, self.limit) {
                Verdict::Allow(next) => next,
                // A denial takes nothing from the bucket: there is nothing to write.
                Verdict::Deny { retry_after_s } => return Some(retry_after_s),
            };
            match store::compare_and_swap(key, stored.as_deref(), encode(next), Some(self.ttl)) {
                Ok(true) => return None,
                Ok(false) => {}
                Err(error) => {
                    log::warn!("rate limit not applied, store write failed: {error}");
                    return None;
                }
            }
        }
        log::warn!("rate limit not applied: bucket {key:?} still contended after {MAX_TRIES} tries");
        None
    }
}

/// Parses the `key` setting: `client-addr` or `header:NAME`.
fn parse_key(key: &str) -> Result<KeySource, String> {
    if key == "client-addr" {
        return Ok(KeySource::ClientAddr);
    }
    match key.strip_prefix("header:") {
        Some(name) if !name.is_empty() && name.bytes().all(is_token_char) => {
            Ok(KeySource::Header(name.to_ascii_lowercase()))
        }
        Some(name) => Err(format!("`key` {key:?}: {name:?} is not a header name (an RFC 9110 token)")),
        None => Err(format!("`key` {key:?} is neither \"client-addr\" nor \"header:NAME\"")),
    }
}

/// `tchar` of RFC 9110 section 5.6.2.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The IP address of a client `ip:port` (`[v6]:port` for IPv6), or the whole string if it
/// does not parse, so that an odd address is still limited, on its own.
fn client_ip(addr: &str) -> String {
    addr.parse::<SocketAddr>().map_or_else(|_| addr.to_owned(), |addr| addr.ip().to_string())
}

/// The store key of a bucket: the scope and request key, or a hash of them when they are too
/// long for the store. The hash (FNV-1a, 64 bits, with the length) is stable across instances
/// and gateways running the same plugin build.
fn store_key(scope: &str, key: &str) -> String {
    let len = scope.len() + key.len();
    if len <= MAX_RAW_KEY {
        return format!("b:{scope}{key}");
    }
    let hash = scope.bytes().chain(key.bytes()).fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("h:{hash:016x}:{len}")
}

/// A bucket in its stored form, `<tokens_milli>:<last_ms>`: readable when debugging the store.
fn encode(bucket: Bucket) -> String {
    format!("{}:{}", bucket.tokens_milli, bucket.last_ms)
}

/// The bucket stored as `<tokens_milli>:<last_ms>`, if `bytes` is one.
fn decode(bytes: &[u8]) -> Option<Bucket> {
    let (tokens, last) = std::str::from_utf8(bytes).ok()?.split_once(':')?;
    Some(Bucket { tokens_milli: tokens.parse().ok()?, last_ms: last.parse().ok()? })
}

/// `bucket` refilled up to `now_ms`.
///
/// Only whole thousandths of a token are added, and the refill time advances by what they
/// took (rounded up), so a slow rate still accrues when requests come faster than it adds a
/// thousandth. A wall clock that stepped back restarts the refill from `now_ms`.
fn refill(bucket: Bucket, now_ms: u64, limit: Limit) -> Bucket {
    if now_ms <= bucket.last_ms {
        return Bucket { tokens_milli: bucket.tokens_milli.min(limit.capacity_milli), last_ms: now_ms };
    }
    let elapsed_ms = now_ms - bucket.last_ms;
    let added = (elapsed_ms as f64 * limit.rate).floor() as u64;
    let tokens_milli = bucket.tokens_milli.saturating_add(added);
    if tokens_milli >= limit.capacity_milli {
        return Bucket { tokens_milli: limit.capacity_milli, last_ms: now_ms };
    }
    // At most `elapsed_ms`, since `added <= elapsed_ms * rate`.
    let used_ms = ((added as f64 / limit.rate).ceil() as u64).min(elapsed_ms);
    Bucket { tokens_milli, last_ms: bucket.last_ms + used_ms }
}

/// Takes one token from `bucket` at `now_ms`, or says how long until one is back.
fn decide(bucket: Bucket, now_ms: u64, limit: Limit) -> Verdict {
    let bucket = refill(bucket, now_ms, limit);
    if bucket.tokens_milli >= MILLI {
        return Verdict::Allow(Bucket { tokens_milli: bucket.tokens_milli - MILLI, ..bucket });
    }
    let wait_ms = ((MILLI - bucket.tokens_milli) as f64 / limit.rate).ceil() as u64;
    Verdict::Deny { retry_after_s: wait_ms.div_ceil(1000).max(1) }
}

/// The answer to a request without the key header, when `missing` is `deny`.
fn missing_key(header: &str) -> LocalResponse {
    LocalResponse::new(400)
        .header("content-type", "text/plain; charset=utf-8")
        .body(format!("missing {header} header\n"))
}

/// The answer to a request over the limit.
fn too_many_requests(retry_after_s: u64) -> LocalResponse {
    LocalResponse::new(429)
        .header("retry-after", retry_after_s.to_string())
        .header("content-type", "text/plain; charset=utf-8")
        .body("too many requests\n")
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`.

    use super::*;

    fn config(rate: f64, burst: Option<u32>, key: &str) -> Config {
        Config { rate, burst, key: key.to_owned(), missing: Missing::Allow }
    }

    fn limit(rate: f64, burst: u64) -> Limit {
        Limit { rate, capacity_milli: burst * MILLI }
    }

    /// Runs `times` requests at `now_ms` against `bucket`, storing what each allowed one leaves.
    fn hammer(bucket: &mut Bucket, now_ms: u64, limit: Limit, times: usize) -> usize {
        let mut allowed = 0;
        for _ in 0..times {
            if let Verdict::Allow(next) = decide(*bucket, now_ms, limit) {
                *bucket = next;
                allowed += 1;
            }
        }
        allowed
    }

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_denies() {
        let limit = limit(2.0, 5);
        let mut bucket = Bucket { tokens_milli: limit.capacity_milli, last_ms: 1_000 };
        assert_eq!(hammer(&mut bucket, 1_000, limit, 10), 5);
        assert_eq!(bucket, Bucket { tokens_milli: 0, last_ms: 1_000 });
        // Empty, 2 tokens per second: the next token is half a second away, reported as 1 s.
        assert_eq!(decide(bucket, 1_000, limit), Verdict::Deny { retry_after_s: 1 });
    }

    #[test]
    fn refills_at_the_rate_up_to_the_burst() {
        let limit = limit(2.0, 5);
        let mut bucket = Bucket { tokens_milli: 0, last_ms: 0 };
        assert_eq!(hammer(&mut bucket, 1_000, limit, 10), 2);
        assert_eq!(hammer(&mut bucket, 1_499, limit, 10), 0);
        assert_eq!(hammer(&mut bucket, 1_500, limit, 10), 1);
        // A long pause fills the bucket, no further.
        assert_eq!(hammer(&mut bucket, 1_000_000, limit, 10), 5);
    }

    #[test]
    fn slow_rates_accrue_even_under_frequent_requests() {
        // One token every 10 s, with a denied request every millisecond: the refill must not
        // be lost to rounding each time the bucket is read.
        let limit = limit(0.1, 1);
        let mut bucket = Bucket { tokens_milli: 0, last_ms: 0 };
        let mut allowed = 0;
        for now_ms in 1..=30_000 {
            allowed += hammer(&mut bucket, now_ms, limit, 1);
        }
        assert_eq!(allowed, 3);
    }

    #[test]
    fn refill_never_adds_more_than_the_elapsed_time_allows() {
        let limit = limit(3.0, 100);
        let mut bucket = Bucket { tokens_milli: 0, last_ms: 0 };
        // 7 ms steps of 3 thousandths per ms: exactly 21 per step, over 1000 steps.
        for step in 1..=1_000 {
            bucket = refill(bucket, step * 7, limit);
        }
        assert_eq!(bucket.tokens_milli, 21_000);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let empty = Bucket { tokens_milli: 0, last_ms: 0 };
        assert_eq!(decide(empty, 0, limit(0.25, 1)), Verdict::Deny { retry_after_s: 4 });
        assert_eq!(decide(empty, 0, limit(0.3, 1)), Verdict::Deny { retry_after_s: 4 });
        assert_eq!(decide(empty, 0, limit(100.0, 1)), Verdict::Deny { retry_after_s: 1 });
        let almost = Bucket { tokens_milli: 999, last_ms: 0 };
        assert_eq!(decide(almost, 0, limit(0.5, 1)), Verdict::Deny { retry_after_s: 1 });
    }

    #[test]
    fn a_clock_stepping_back_restarts_the_refill() {
        let limit = limit(1.0, 10);
        let bucket = refill(Bucket { tokens_milli: 500, last_ms: 10_000 }, 4_000, limit);
        assert_eq!(bucket, Bucket { tokens_milli: 500, last_ms: 4_000 });
        assert_eq!(refill(bucket, 4_500, limit).tokens_milli, 1_000);
    }

    #[test]
    fn the_stored_form_round_trips_and_refuses_garbage() {
        let bucket = Bucket { tokens_milli: 4_250, last_ms: 1_764_000_000_123 };
        assert_eq!(encode(bucket), "4250:1764000000123");
        assert_eq!(decode(encode(bucket).as_bytes()), Some(bucket));
        for garbage in [&b""[..], b"12", b"a:1", b"1:", b"-1:5", b"\xff:1"] {
            assert_eq!(decode(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn keys_by_ip_without_the_port() {
        assert_eq!(client_ip("10.0.0.7:51234"), "10.0.0.7");
        assert_eq!(client_ip("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(client_ip("not an address"), "not an address");
    }

    #[test]
    fn hashes_keys_too_long_for_the_store() {
        assert_eq!(store_key("", "10.0.0.7"), "b:10.0.0.7");
        let long = "k".repeat(1_000);
        let hashed = store_key("", &long);
        assert!(hashed.starts_with("h:") && hashed.ends_with(":1000") && hashed.len() < 64, "{hashed}");
        assert_eq!(hashed, store_key("", &long));
        assert_ne!(hashed, store_key("", &"k".repeat(1_001)));
    }

    #[test]
    fn a_routes_buckets_are_its_own() {
        assert_eq!(store_key("route/api/", "10.0.0.7"), "b:route/api/10.0.0.7");
        assert_ne!(store_key("route/api/", "10.0.0.7"), store_key("", "10.0.0.7"));
        let long = "k".repeat(MAX_RAW_KEY);
        assert_ne!(store_key("route/api/", &long), store_key("route/web/", &long));
    }

    #[test]
    fn takes_a_routes_own_limit_and_refuses_a_bad_one() {
        let mut plugin = RateLimit::new(config(1.0, None, "client-addr")).expect("valid config");
        plugin.init_route("api", RouteConfig::new(r#"{"rate": 100, "burst": 5}"#)).expect("valid");
        let own = plugin.routes.get("api").expect("kept");
        assert_eq!((own.limit.capacity_milli, own.scope.as_str()), (5_000, "route/api/"));
        let error = plugin.init_route("web", RouteConfig::new(r#"{"rate": 0}"#)).expect_err("zero rate");
        assert!(error.starts_with("`rate` 0 must be"), "{error}");
        let error = plugin.init_route("web", RouteConfig::new(r#"{"burst": 1}"#)).expect_err("no rate");
        assert!(error.starts_with("invalid config: missing field `rate`"), "{error}");
    }

    #[test]
    fn parses_the_key_setting() {
        assert_eq!(parse_key("client-addr"), Ok(KeySource::ClientAddr));
        assert_eq!(parse_key("header:X-API-Key"), Ok(KeySource::Header("x-api-key".to_owned())));
        assert_eq!(
            parse_key("header:"),
            Err(r#"`key` "header:": "" is not a header name (an RFC 9110 token)"#.to_owned())
        );
        assert!(parse_key("header:x key").is_err());
        assert_eq!(
            parse_key("ip"),
            Err(r#"`key` "ip" is neither "client-addr" nor "header:NAME""#.to_owned())
        );
    }

    #[test]
    fn builds_from_config_with_defaults_and_refuses_bad_values() {
        let plugin = Policy::new(config(2.5, None, "client-addr"), String::new()).expect("valid config");
        assert_eq!(plugin.limit, Limit { rate: 2.5, capacity_milli: 3_000 });
        // 3 tokens at 2.5 per second refill in 1.2 s: kept for 2.4 s.
        assert_eq!(plugin.ttl, Duration::from_millis(2_400));
        let slow =
            Policy::new(config(0.01, Some(1), "header:x-api-key"), String::new()).expect("valid config");
        assert_eq!(slow.limit.capacity_milli, 1_000);
        assert_eq!(slow.ttl, Duration::from_secs(200));
        // Never shorter than a second.
        assert_eq!(
            Policy::new(config(1e6, Some(1), "client-addr"), String::new()).expect("fast").ttl,
            Duration::from_secs(1)
        );

        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = Policy::new(config(rate, None, "client-addr"), String::new()).expect_err("bad rate");
            assert!(error.starts_with("`rate`"), "{error}");
        }
        assert_eq!(
            Policy::new(config(1.0, Some(0), "client-addr"), String::new()).expect_err("zero burst"),
            "`burst` must be at least 1"
        );
    }

    #[test]
    fn answers_400_without_the_key_header_when_told_to() {
        assert_eq!(
            missing_key("x-api-key"),
            LocalResponse::new(400)
                .header("content-type", "text/plain; charset=utf-8")
                .body("missing x-api-key header\n")
        );
    }

    #[test]
    fn answers_429_with_retry_after() {
        assert_eq!(
            too_many_requests(3),
            LocalResponse::new(429)
                .header("retry-after", "3")
                .header("content-type", "text/plain; charset=utf-8")
                .body("too many requests\n")
        );
    }
}
