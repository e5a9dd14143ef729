//! chaos: a test guest that returns arbitrary values from every phase and passes arbitrary
//! arguments to every host call. What it does is drawn from a generator seeded by its config's
//! `seed` and the request's `x-chaos-seed` header, so that a failing case can be replayed.

use std::time::Duration;

use serde::Deserialize;
use wasmgate_sdk::{
    Action, BodyAction, ErrorAction, LocalResponse, LogEntry, Plugin, Request, Response, Trailers, Upstream,
    UpstreamChoice, UpstreamFailure, log, metrics, outbound, state, store,
};

/// The guest's config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Mixed into every request's seed.
    seed: u64,
}

/// xorshift64*: small, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Bytes that matter to HTTP, of a length that is usually small and sometimes not.
    fn bytes(&mut self) -> Vec<u8> {
        const ALPHABET: &[u8] = b"aZ09 -_:;,=/.%\r\n\t\0\x7f\xff\"";
        let len = match self.below(10) {
            0 => self.below(70_000),
            1 => 0,
            _ => self.below(24),
        };
        (0..len).map(|_| ALPHABET[self.below(ALPHABET.len())]).collect()
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    fn header_name(&mut self) -> String {
        const NAMES: [&str; 14] = [
            "x-chaos",
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "te",
            "upgrade",
            ":path",
            "x-wasmgate-error",
            "a b",
            "",
            "X-Upper",
            "cookie",
            "x-forwarded-for",
        ];
        if self.one_in(4) { self.text() } else { self.pick(&NAMES).to_owned() }
    }

    fn status(&mut self) -> u16 {
        const STATUSES: [u16; 14] = [0, 1, 99, 100, 101, 199, 200, 204, 304, 404, 500, 599, 600, u16::MAX];
        match self.below(8) {
            0 => self.next() as u16,
            1 | 2 => STATUSES[self.below(STATUSES.len())],
            _ => 200 + self.below(400) as u16,
        }
    }

    /// Mostly valid, so that most requests get past the first phase and the later phases are
    /// reached too.
    fn local_response(&mut self) -> LocalResponse {
        let mut response = LocalResponse::new(self.status());
        for _ in 0..self.below(3) {
            response = if self.one_in(6) {
                let name = self.header_name();
                response.header(name, self.bytes())
            } else {
                response.header(self.pick(&["x-chaos", "cache-control", "set-cookie"]), "v")
            };
        }
        let size = if self.one_in(8) { self.below(3 << 20) } else { self.below(64) };
        response.body(vec![b'c'; size])
    }

    fn action(&mut self) -> Action {
        if self.one_in(6) { Action::Respond(self.local_response()) } else { Action::Continue }
    }

    fn body_action(&mut self) -> BodyAction {
        match self.below(6) {
            0 => BodyAction::Replace(self.bytes()),
            1 => BodyAction::Respond(self.local_response()),
            _ => BodyAction::Continue,
        }
    }

    fn ttl(&mut self) -> Option<Duration> {
        self.one_in(2).then(|| Duration::from_millis(self.next() % 100_000))
    }

    /// A host call of every other kind, with arbitrary arguments; the answers are ignored,
    /// only how the host takes them matters.
    fn host_calls(&mut self) {
        for _ in 0..self.below(4) {
            match self.below(7) {
                0 => {
                    let key = self.text();
                    let _ = state::set(&key, self.bytes());
                    let _ = state::get(&key);
                }
                1 => {
                    let key = self.text();
                    let _ = match self.below(5) {
                        0 => store::set(&key, self.bytes(), self.ttl()).map(|_| 0),
                        1 => store::get(&key).map(|_| 0),
                        2 => store::delete(&key).map(|_| 0),
                        3 => store::increment(&key, self.next() as i64, self.ttl()),
                        _ => store::compare_and_swap(&key, None, self.bytes(), self.ttl()).map(|_| 0),
                    };
                }
                2 => {
                    let name = self.text();
                    let label = self.text();
                    let labels = [(label.as_str(), "v")];
                    match self.below(3) {
                        0 => metrics::counter(&name, &labels, self.next()),
                        1 => metrics::gauge(&name, &labels, f64::from_bits(self.next())),
                        _ => metrics::histogram(&name, &labels, f64::from_bits(self.next())),
                    };
                }
                3 => log::info(&self.text()),
                4 => log::error(&self.text()),
                5 if self.one_in(3) => {
                    let group = self.pick(&["o", "nope", ""]);
                    let path = self.pick(&["/", "/echo", "", "no-slash", "/%00", "/a b"]);
                    let name = self.header_name();
                    let request =
                        outbound::OutboundRequest::get(path).header(name, self.bytes()).timeout_ms(200);
                    let _ = outbound::call(group, request);
                }
                _ => {}
            }
        }
    }

    fn edit_request(&mut self, req: &mut Request) {
        for _ in 0..self.below(4) {
            let name = self.header_name();
            let _ = match self.below(4) {
                0 => req.set_header(&name, self.bytes()),
                1 => req.add_header(&name, self.bytes()),
                2 => req.remove_header(&name).map(|_| ()),
                _ => {
                    let path = self.pick(&[
                        "/",
                        "/../x",
                        "",
                        "no-slash",
                        "/a?b=c",
                        "/%00",
                        "//x",
                        "/%zz",
                        "http://h/x",
                    ]);
                    let path = if self.one_in(3) { self.text() } else { path.to_owned() };
                    req.set_path(&path)
                }
            };
        }
    }

    fn edit_response(&mut self, resp: &mut Response) {
        for _ in 0..self.below(4) {
            let name = self.header_name();
            let _ = match self.below(4) {
                0 => resp.set_header(&name, self.bytes()),
                1 => resp.add_header(&name, self.bytes()),
                2 => resp.remove_header(&name).map(|_| ()),
                _ => resp.set_status(self.status()),
            };
        }
    }

    /// Now and then, fault on purpose: a trap must cost the request only.
    fn maybe_trap(&mut self) {
        if self.one_in(40) {
            panic!("chaos: trapping on purpose");
        }
    }
}

/// The phases, for the seed: each phase draws from its own stream.
#[derive(Clone, Copy)]
enum Phase {
    RequestHeaders = 1,
    RequestBody,
    SelectUpstream,
    UpstreamRequest,
    UpstreamError,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    Log,
}

struct Chaos {
    seed: u64,
    /// This request's seed, read in `on_request_headers` (0 before).
    request: u64,
    /// Calls within the request, so that each body chunk draws anew.
    calls: u64,
}

impl Chaos {
    fn rng(&mut self, phase: Phase) -> Rng {
        self.calls += 1;
        let mixed = self.seed
            ^ self.request.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ ((phase as u64) << 56)
            ^ self.calls;
        let mut rng = Rng(mixed | 1);
        rng.next();
        rng
    }
}

#[wasmgate_sdk::plugin]
impl Plugin for Chaos {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Chaos { seed: config.seed, request: 0, calls: 0 })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        self.request = req.header("x-chaos-seed").and_then(|s| s.parse().ok()).unwrap_or(0);
        self.calls = 0;
        let mut rng = self.rng(Phase::RequestHeaders);
        rng.maybe_trap();
        rng.edit_request(req);
        rng.host_calls();
        rng.action()
    }

    fn on_request_body(&mut self, req: &mut Request, _chunk: Vec<u8>, _end: bool) -> BodyAction {
        let mut rng = self.rng(Phase::RequestBody);
        rng.maybe_trap();
        rng.edit_request(req);
        rng.host_calls();
        rng.body_action()
    }

    fn select_upstream(&mut self, _req: &Request, upstream: &Upstream) -> UpstreamChoice {
        let mut rng = self.rng(Phase::SelectUpstream);
        rng.maybe_trap();
        let _ = upstream.backends_of(rng.pick(&["o", "nope"]));
        if rng.one_in(4) {
            let _ = upstream.set_sni(&rng.text());
        }
        rng.host_calls();
        match rng.below(14) {
            0 => UpstreamChoice::Backend(rng.below(2) as u32),
            1 => UpstreamChoice::Group(rng.pick(&["o", "nope", ""]).to_owned()),
            2 => UpstreamChoice::GroupBackend(rng.pick(&["o", "nope"]).to_owned(), rng.next() as u32 % 5),
            3 => UpstreamChoice::HashKey(rng.text()),
            4 => UpstreamChoice::Respond(rng.local_response()),
            _ => UpstreamChoice::Default,
        }
    }

    fn on_upstream_request(&mut self, req: &mut Request) -> Action {
        let mut rng = self.rng(Phase::UpstreamRequest);
        rng.maybe_trap();
        rng.edit_request(req);
        rng.host_calls();
        rng.action()
    }

    fn on_upstream_error(&mut self, _req: &Request, _failure: &UpstreamFailure) -> ErrorAction {
        let mut rng = self.rng(Phase::UpstreamError);
        rng.maybe_trap();
        match rng.below(3) {
            0 => ErrorAction::Retry,
            1 => ErrorAction::Respond(rng.local_response()),
            _ => ErrorAction::Default,
        }
    }

    fn on_response_headers(&mut self, _req: &Request, resp: &mut Response) -> Action {
        let mut rng = self.rng(Phase::ResponseHeaders);
        rng.maybe_trap();
        rng.edit_response(resp);
        rng.host_calls();
        rng.action()
    }

    fn on_response_body(&mut self, _req: &Request, _chunk: Vec<u8>, _end: bool) -> BodyAction {
        let mut rng = self.rng(Phase::ResponseBody);
        rng.maybe_trap();
        rng.host_calls();
        rng.body_action()
    }

    fn on_response_trailers(&mut self, trailers: &mut Trailers) {
        let mut rng = self.rng(Phase::ResponseTrailers);
        rng.maybe_trap();
        let name = rng.header_name();
        let _ = trailers.set_header(&name, rng.bytes());
    }

    fn on_log(&mut self, _req: &Request, _entry: &LogEntry) {
        let mut rng = self.rng(Phase::Log);
        rng.maybe_trap();
        rng.host_calls();
    }
}
