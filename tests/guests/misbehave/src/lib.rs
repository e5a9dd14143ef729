//! misbehave: a test guest whose config `{ "mode": "..." }` picks what it does, from hostile
//! (loop, trap, grow, recurse, hand the host bad values) to reporting (count its calls, echo a
//! header, mark the header phases). The body, trailer and error phases are the `tracer`
//! guest's.

use std::hint::black_box;

use serde::Deserialize;
use wasmgate_sdk::{
    Action, LocalResponse, LogEntry, Plugin, Request, Response, Upstream, UpstreamChoice, clock, log, state,
};

/// The guest's config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// One of [`MODES`]; checked in `new` so that the refusal lists them.
    mode: String,
}

/// What the guest does; see the README for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Loop,
    Trap,
    Grow,
    Recurse,
    BadValues,
    RejectConfig,
    Counter,
    Echo,
    Phases,
    Sni,
    StoreFlood,
    BigReply,
    LogFlood,
    Print,
    Leak,
    SlowInit,
    Sandbox,
    OutboundBig,
    BadChoice,
    StateLeak,
    ManyHeaders,
}

/// The modes by their config name.
const MODES: [(&str, Mode); 21] = [
    ("loop", Mode::Loop),
    ("trap", Mode::Trap),
    ("grow", Mode::Grow),
    ("recurse", Mode::Recurse),
    ("bad-values", Mode::BadValues),
    ("reject-config", Mode::RejectConfig),
    ("counter", Mode::Counter),
    ("echo", Mode::Echo),
    ("phases", Mode::Phases),
    ("sni", Mode::Sni),
    ("store-flood", Mode::StoreFlood),
    ("big-reply", Mode::BigReply),
    ("log-flood", Mode::LogFlood),
    ("print", Mode::Print),
    ("leak", Mode::Leak),
    ("slow-init", Mode::SlowInit),
    ("sandbox", Mode::Sandbox),
    ("outbound-big", Mode::OutboundBig),
    ("bad-choice", Mode::BadChoice),
    ("state-leak", Mode::StateLeak),
    ("many-headers", Mode::ManyHeaders),
];

/// Values `store-flood` writes per request, of [`FLOOD_VALUE`] bytes each.
const FLOOD_SETS: usize = 32;
/// The largest value the store takes.
const FLOOD_VALUE: usize = 64 * 1024;
/// Lines `log-flood` writes per request, of [`FLOOD_LINE`] bytes each.
const FLOOD_LINES: usize = 200;
const FLOOD_LINE: usize = 64 * 1024;

#[derive(Debug)]
struct Misbehave {
    mode: Mode,
    /// `on_request_headers` calls on this instance (`counter` mode).
    calls: u64,
}

#[wasmgate_sdk::plugin]
impl Plugin for Misbehave {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let Some(&(_, mode)) = MODES.iter().find(|(name, _)| *name == config.mode) else {
            let names: Vec<&str> = MODES.iter().map(|(name, _)| *name).collect();
            return Err(format!("unknown mode {:?}: expected one of {}", config.mode, names.join(", ")));
        };
        if mode == Mode::RejectConfig {
            return Err("mode reject-config: refusing this config on purpose".to_owned());
        }
        // The host's clock is there only in wasm (the native unit tests have stubs).
        if mode == Mode::SlowInit && cfg!(target_family = "wasm") {
            // A runtime's start, busy for 30 ms.
            let started = clock::monotonic_ns();
            while clock::monotonic_ns() - started < 30_000_000 {}
        }
        Ok(Misbehave { mode, calls: 0 })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        // The faulty modes fault only on paths under `/bad`, so a test can show that the next,
        // ordinary request to the same plugin is served.
        let faulty = matches!(
            self.mode,
            Mode::Loop
                | Mode::Trap
                | Mode::Grow
                | Mode::Recurse
                | Mode::BadValues
                | Mode::StoreFlood
                | Mode::BigReply
                | Mode::LogFlood
                | Mode::Print
                | Mode::Sandbox
                | Mode::OutboundBig
                | Mode::ManyHeaders
        );
        if faulty && !req.path().starts_with("/bad") {
            return Action::Continue;
        }
        match self.mode {
            Mode::Loop => spin_forever(),
            Mode::Trap => panic!("mode trap: panicking on purpose"),
            Mode::Grow => grow_forever(),
            Mode::Recurse => {
                // Never returns: the stack runs out long before `depth` reaches `u64::MAX`.
                black_box(recurse(0, black_box(u64::MAX)));
                Action::Continue
            }
            Mode::BadValues => match req.set_header("x-bad", "a\r\nb") {
                Ok(()) => Action::Respond(LocalResponse::new(200).body("host accepted CR LF")),
                // The host refused the header, as it must; now hand it a status it must
                // refuse as well.
                Err(_) => Action::Respond(LocalResponse::new(42)),
            },
            Mode::Counter => {
                self.calls += 1;
                set_request_header(req, "x-instance-calls", self.calls.to_string());
                Action::Continue
            }
            Mode::Echo => {
                // The benchmark's "read one header, set one": nothing else, not even a log
                // line on failure.
                if let Some(value) = req.header_bytes("x-in") {
                    let _ = req.set_header("x-out", value);
                }
                Action::Continue
            }
            Mode::Phases => {
                log::info("phases: on_request_headers");
                set_request_header(req, "x-phase", "request-headers");
                if !state::set("seen", b"request-headers") {
                    log::warn("phases: state refused `seen`");
                }
                Action::Continue
            }
            Mode::StoreFlood => {
                // New keys every time: the plugin's share fills and must drop its oldest.
                let (mut stored, mut refused) = (0, 0);
                for _ in 0..FLOOD_SETS {
                    self.calls += 1;
                    let key = format!("flood:{}:{}", wasmgate_sdk::clock::monotonic_ns(), self.calls);
                    match wasmgate_sdk::store::set(&key, vec![0x5a; FLOOD_VALUE], None) {
                        Ok(()) => stored += 1,
                        Err(_) => refused += 1,
                    }
                }
                Action::Respond(LocalResponse::new(200).body(format!("stored {stored} refused {refused}")))
            }
            Mode::BigReply => {
                // `/bad/<bytes>`: a local response body of that many bytes.
                let size = req.path().trim_start_matches("/bad/").parse::<usize>().unwrap_or(2 << 20);
                Action::Respond(LocalResponse::new(200).body(vec![b'r'; size]))
            }
            Mode::LogFlood => {
                let line = "l".repeat(FLOOD_LINE);
                for _ in 0..FLOOD_LINES {
                    log::info(&line);
                }
                Action::Respond(LocalResponse::new(200).body("logged"))
            }
            Mode::Leak => {
                // A megabyte kept for good on every call, as a leaking runtime would.
                let kept: &'static mut [u8] = Box::leak(vec![1u8; 1 << 20].into_boxed_slice());
                set_request_header(req, "x-leaked", kept.len().to_string());
                Action::Continue
            }
            Mode::Print => {
                // One line on each stream, one too long for the log, then a flood.
                println!("printed to stdout by {}", req.path());
                eprintln!("printed to stderr");
                println!("{}", "p".repeat(FLOOD_LINE));
                for i in 0..FLOOD_LINES {
                    println!("flood {i}");
                }
                Action::Respond(LocalResponse::new(200).body("printed"))
            }
            Mode::ManyHeaders => {
                let refused = (0..300).filter(|i| req.add_header(&format!("x-h{i}"), "v").is_err()).count();
                Action::Respond(LocalResponse::new(200).body(format!("refused {refused}")))
            }
            Mode::StateLeak => {
                // `/set` leaves a value in the per-request state; no other request may see it.
                if req.path() == "/set" && !state::set("secret", b"from /set") {
                    log::warn("state-leak: the state refused `secret`");
                }
                Action::Continue
            }
            Mode::Sandbox => Action::Respond(LocalResponse::new(200).body(sandbox_report(req))),
            Mode::OutboundBig => {
                // `/bad/<bytes>`: an outbound call to group `o` for a body of that size.
                let size = req.path().trim_start_matches("/bad/").to_owned();
                let call = wasmgate_sdk::outbound::OutboundRequest::get(format!("/bytes/{size}"));
                let report = match wasmgate_sdk::outbound::call("o", call) {
                    Ok(response) => format!("ok {}", response.body.len()),
                    Err(error) => format!("err {error}"),
                };
                Action::Respond(LocalResponse::new(200).body(report))
            }
            // `new` never builds this mode; the others act in other phases.
            Mode::RejectConfig | Mode::Sni | Mode::BadChoice | Mode::SlowInit => Action::Continue,
        }
    }

    fn select_upstream(&mut self, req: &Request, upstream: &Upstream) -> UpstreamChoice {
        if self.mode == Mode::Sni
            && let Err(error) = upstream.set_sni("api.test")
        {
            log::warn(&format!("sni: the host refused api.test: {error}"));
        }
        if self.mode == Mode::BadChoice {
            return match req.path().as_str() {
                "/bad/backend" => UpstreamChoice::Backend(99),
                "/bad/group" => UpstreamChoice::Group("nope".to_owned()),
                "/bad/group-backend" => UpstreamChoice::GroupBackend("o".to_owned(), 7),
                _ => UpstreamChoice::Default,
            };
        }
        if self.mode == Mode::Phases && upstream.backends().len() >= 2 {
            UpstreamChoice::Backend(1)
        } else {
            UpstreamChoice::Default
        }
    }

    fn on_upstream_request(&mut self, req: &mut Request) -> Action {
        if self.mode == Mode::Phases {
            set_request_header(req, "x-upstream-request", "1");
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, req: &Request, resp: &mut Response) -> Action {
        if self.mode == Mode::StateLeak {
            let seen = state::get("secret").unwrap_or_else(|| b"missing".to_vec());
            set_response_header(resp, "x-state", seen);
        }
        if self.mode == Mode::Phases {
            let seen = state::get("seen").unwrap_or_else(|| b"missing".to_vec());
            set_response_header(resp, "x-state", seen);
            set_response_header(resp, "x-request-method", req.method());
        }
        Action::Continue
    }

    fn on_log(&mut self, _req: &Request, entry: &LogEntry) {
        if self.mode == Mode::Phases {
            log::info!("phases: on_log status {}", entry.status);
        }
    }
}

/// Sets a request header, logging a refusal so that a failing test shows why.
fn set_request_header(req: &mut Request, name: &str, value: impl AsRef<[u8]>) {
    if let Err(error) = req.set_header(name, value) {
        log::warn!("request header {name} refused: {error}");
    }
}

/// Sets a response header, logging a refusal so that a failing test shows why.
fn set_response_header(resp: &mut Response, name: &str, value: impl AsRef<[u8]>) {
    if let Err(error) = resp.set_header(name, value) {
        log::warn!("response header {name} refused: {error}");
    }
}

/// What the guest can reach beyond the WIT: the filesystem, the environment, the network
/// (the port in request header `x-port`).
fn sandbox_report(req: &Request) -> String {
    let outcome = |ok: bool| if ok { "reached" } else { "denied" };
    let root = std::fs::read_dir("/").is_ok();
    let file = std::fs::read("/etc/hostname").is_ok() || std::fs::read("/proc/self/environ").is_ok();
    let written = std::fs::write("/tmp/wasmgate-sandbox", b"x").is_ok();
    let env = std::env::vars().count();
    let port = req.header("x-port").and_then(|p| p.parse::<u16>().ok()).unwrap_or(1);
    let net = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    format!(
        "fs-list={} fs-read={} fs-write={} env={env} net={}",
        outcome(root),
        outcome(file),
        outcome(written),
        outcome(net)
    )
}

/// Burns CPU until the host interrupts the call.
fn spin_forever() -> ! {
    let mut turns: u64 = 0;
    loop {
        // `black_box` hides the counter from the optimiser, which would otherwise be free to
        // reduce the loop to nothing observable.
        turns = black_box(turns).wrapping_add(1);
    }
}

/// Allocates 1 MiB chunks and keeps them until the host's memory limit stops the growth (the
/// failed allocation aborts, which traps).
fn grow_forever() -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        // Non-zero bytes: every page is written, so the memory is really used.
        kept.push(black_box(vec![0xa5_u8; 1 << 20]));
        black_box(&kept);
    }
}

/// Calls itself until the wasm call stack runs out, which the host reports as a stack
/// overflow trap.
///
/// Every frame keeps its values in wasm locals: a `black_box` per frame would put them on the
/// shadow stack in linear memory, which could overflow first and trap as an out-of-bounds
/// access instead. The optimiser cannot fold the recursion into a loop: the work after the
/// call (rotate, then xor) is no accumulator it can hoist, and `limit` is opaque, so there is
/// a way out it must keep.
#[inline(never)]
fn recurse(depth: u64, limit: u64) -> u64 {
    if depth == limit {
        return depth;
    }
    let below = recurse(depth + 1, limit);
    below.rotate_left((depth % 64) as u32) ^ depth
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`.

    use super::*;

    fn new(mode: &str) -> Result<Misbehave, String> {
        Misbehave::new(Config { mode: mode.to_owned() })
    }

    #[test]
    fn builds_every_mode_but_reject_config() {
        for (name, mode) in MODES {
            match new(name) {
                Ok(guest) => assert_eq!(guest.mode, mode),
                Err(error) => {
                    assert_eq!(mode, Mode::RejectConfig);
                    assert_eq!(error, "mode reject-config: refusing this config on purpose");
                }
            }
        }
    }

    #[test]
    fn refuses_an_unknown_mode_listing_the_modes() {
        assert_eq!(
            new("explode").expect_err("unknown mode"),
            "unknown mode \"explode\": expected one of loop, trap, grow, recurse, bad-values, \
             reject-config, counter, echo, phases, sni, store-flood, big-reply, log-flood, print, leak, slow-init, sandbox, \
             outbound-big, bad-choice, state-leak, many-headers"
        );
    }
}
