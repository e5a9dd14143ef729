//! request-id: gives every request an id — the client's, if it sent a sane one, else a new
//! UUID v4 — sets it on the request (for the upstream and later plugins) and on the response,
//! and logs it with the status and duration when the request is over.

use std::fmt::Write;

use serde::Deserialize;
use wasmgate_sdk::{Action, LogEntry, Plugin, Request, Response, clock, log, state};

/// The `state` key holding the request's id between phases.
const ID_KEY: &str = "id";

/// The longest id kept from a client; longer ones are replaced.
const MAX_ID_LEN: usize = 128;

/// The plugin's table in the gateway config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The header carrying the id, on the request and on the response.
    #[serde(default = "default_header")]
    header: String,
}

fn default_header() -> String {
    "x-request-id".to_owned()
}

#[derive(Debug)]
struct RequestId {
    /// Lowercased.
    header: String,
}

#[wasmgate_sdk::plugin]
impl Plugin for RequestId {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.header.is_empty() || !config.header.bytes().all(is_token_char) {
            return Err(format!("`header` {:?} is not a header name (an RFC 9110 token)", config.header));
        }
        Ok(RequestId { header: config.header.to_ascii_lowercase() })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        let id = match req.header_bytes(&self.header) {
            Some(id) if is_sane(&id) => String::from_utf8_lossy(&id).into_owned(),
            _ => uuid_v4(&clock::random_bytes(16)),
        };
        // Set even when kept: it collapses repeated headers into the one value that is logged.
        if let Err(error) = req.set_header(&self.header, &id) {
            log::warn!("request id {id} not set on the request: {error}");
        }
        if !state::set(ID_KEY, &id) {
            log::warn!("request id {id} not kept for the response: per-request state is full");
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, _req: &Request, resp: &mut Response) -> Action {
        if let Some(id) = state::get(ID_KEY)
            && let Err(error) = resp.set_header(&self.header, &id)
        {
            log::warn!("request id not set on the response: {error}");
        }
        Action::Continue
    }

    fn on_log(&mut self, _req: &Request, entry: &LogEntry) {
        // No id if an earlier plugin answered before this one ran.
        let id =
            state::get(ID_KEY).map_or_else(|| "-".to_owned(), |id| String::from_utf8_lossy(&id).into_owned());
        log::info(&log_line(&id, entry));
    }
}

/// Whether a client-sent id is kept: 1 to 128 visible ASCII characters, so that it is safe in
/// headers and log lines alike.
fn is_sane(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.iter().all(|b| b.is_ascii_graphic())
}

/// A random (version 4, RFC 9562) UUID from 16 random bytes, lowercase hex with dashes. If the
/// host gave fewer bytes, the rest are zero: an id that is less unique, not a failed request.
fn uuid_v4(random: &[u8]) -> String {
    let mut bytes = [0u8; 16];
    for (byte, random) in bytes.iter_mut().zip(random) {
        *byte = *random;
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut uuid = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            uuid.push('-');
        }
        // Writing to a `String` cannot fail.
        let _ = write!(uuid, "{byte:02x}");
    }
    uuid
}

/// The `on_log` line: `request_id=… status=… duration_ms=…` (milliseconds, 3 decimals).
fn log_line(id: &str, entry: &LogEntry) -> String {
    format!(
        "request_id={id} status={} duration_ms={}.{:03}",
        entry.status,
        entry.duration_us / 1000,
        entry.duration_us % 1000
    )
}

/// `tchar` of RFC 9110 section 5.6.2.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`.

    use super::*;

    #[test]
    fn formats_a_version_4_uuid() {
        let uuid = uuid_v4(&[0xff; 16]);
        assert_eq!(uuid, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let uuid = uuid_v4(&(0u8..16).collect::<Vec<_>>());
        assert_eq!(uuid, "00010203-0405-4607-8809-0a0b0c0d0e0f");
        // Short randomness pads with zeros instead of failing.
        assert_eq!(uuid_v4(&[]), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn keeps_only_sane_client_ids() {
        assert!(is_sane(b"abc-123"));
        assert!(is_sane(b"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"));
        assert!(is_sane(&[b'a'; 128]));
        assert!(!is_sane(&[b'a'; 129]));
        assert!(!is_sane(b""));
        assert!(!is_sane(b"has space"));
        assert!(!is_sane(b"tab\there"));
        assert!(!is_sane("caf\u{e9}".as_bytes()));
        assert!(!is_sane(b"nul\0"));
    }

    #[test]
    fn logs_id_status_and_duration() {
        let entry = LogEntry {
            status: 200,
            duration_us: 12_345,
            upstream_us: Some(10_000),
            bytes_in: 0,
            bytes_out: 2,
            backend: None,
            error: None,
        };
        assert_eq!(log_line("abc", &entry), "request_id=abc status=200 duration_ms=12.345");
        assert_eq!(
            log_line("-", &LogEntry { duration_us: 7, status: 0, ..entry }),
            "request_id=- status=0 duration_ms=0.007"
        );
    }

    #[test]
    fn lowercases_the_header_and_refuses_bad_names() {
        let plugin = RequestId::new(Config { header: "X-Correlation-ID".to_owned() }).expect("valid");
        assert_eq!(plugin.header, "x-correlation-id");
        assert_eq!(
            RequestId::new(Config { header: default_header() }).expect("default").header,
            "x-request-id"
        );
        assert_eq!(
            RequestId::new(Config { header: "x id".to_owned() }).expect_err("space").as_str(),
            r#"`header` "x id" is not a header name (an RFC 9110 token)"#
        );
    }
}
