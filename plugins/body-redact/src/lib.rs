//! body-redact: replaces the values of named fields in JSON response bodies as they stream to
//! the client. A small scanner follows the JSON structure byte by byte; its state is kept in
//! per-request `state` between chunks, since consecutive chunks may run on different instances.

use serde::{Deserialize, Serialize};
use wasmgate_sdk::{Action, BodyAction, LocalResponse, Plugin, Request, Response, log, state};

/// The `state` key of the scanner; present only while a JSON response is being redacted.
const SCAN_KEY: &str = "scan";

/// The deepest nesting followed. Deeper JSON is not redacted but cut: the rest of the body is
/// dropped, since passing it on unread could leak a field. This also bounds the saved state
/// well under the host's 64 KiB.
const MAX_DEPTH: usize = 4096;

/// The plugin's table in the gateway config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Object keys whose values are replaced.
    fields: Vec<String>,
    /// The JSON text put in place of each value.
    #[serde(default = "default_replacement")]
    replacement: String,
}

fn default_replacement() -> String {
    "\"[REDACTED]\"".to_owned()
}

/// The field names, and the longest raw (escaped) key that could still spell one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    names: Vec<Vec<u8>>,
    /// Six bytes per byte of the longest name: `\u0070` spells one byte in six, and no escape
    /// spells a UTF-8 byte in more. Keys longer than this cannot match and are not kept.
    max_raw: usize,
}

impl Fields {
    fn new(names: Vec<String>) -> Self {
        let max_raw = names.iter().map(String::len).max().unwrap_or(0) * 6;
        Fields { names: names.into_iter().map(String::into_bytes).collect(), max_raw }
    }

    /// Whether the raw key (as written between its quotes) is one of the names.
    fn matches(&self, raw: &[u8]) -> bool {
        if raw.len() > self.max_raw {
            return false;
        }
        if !raw.contains(&b'\\') {
            return self.names.iter().any(|name| name == raw);
        }
        // Escaped: compare what the key spells (`"pass\u0077ord"` is `"password"`).
        let mut quoted = Vec::with_capacity(raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(raw);
        quoted.push(b'"');
        serde_json::from_slice::<String>(&quoted)
            .is_ok_and(|key| self.names.iter().any(|name| name == key.as_bytes()))
    }
}

/// Where the scanner is in the JSON text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Mode {
    /// Between tokens, or in a number or literal that is passed on.
    #[default]
    Structure,
    /// In a string that is passed on; `key` if it is an object key (its bytes are kept).
    Str { key: bool, escaped: bool },
    /// After a key to redact, before its `:`.
    MatchedKey,
    /// After the `:` of a key to redact, before its value.
    ValueNext,
    /// Dropping a string being redacted.
    SkipString { escaped: bool },
    /// Dropping an object or array being redacted.
    SkipContainer { depth: u32, in_string: bool, escaped: bool },
    /// Dropping a number or literal being redacted, up to the byte that ends it.
    SkipScalar,
    /// Nesting deeper than [`MAX_DEPTH`]: the rest of the body is dropped.
    Cut,
}

/// The streaming redactor. It never holds output back: key bytes go out as they come (keys
/// are never redacted; a copy of the key being read is kept, to decide on its value), and a
/// redacted value's bytes are dropped as they come, its replacement going out where it begins.
/// So concatenating the outputs of any split of a body gives the output of the whole body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Scanner {
    /// The open containers, innermost last: `{` or `[`.
    stack: String,
    /// Whether the next string is a key: in an object, after `{` or `,`.
    expect_key: bool,
    mode: Mode,
    /// The raw bytes of the key being read, at most `max_raw + 1` of them.
    key: Vec<u8>,
}

/// Whether a byte was used, or must be looked at again in the mode it switched to.
enum Step {
    Used,
    Again,
}

impl Scanner {
    /// A scanner that drops whatever it is fed.
    fn cut() -> Self {
        Scanner { mode: Mode::Cut, ..Scanner::default() }
    }

    /// Scans `chunk`, appending what goes to the client to `out`.
    fn feed(&mut self, chunk: &[u8], fields: &Fields, replacement: &[u8], out: &mut Vec<u8>) {
        let mut bytes = chunk.iter().copied().peekable();
        while let Some(&byte) = bytes.peek() {
            if let Step::Used = self.step(byte, fields, replacement, out) {
                bytes.next();
            }
        }
    }

    fn step(&mut self, byte: u8, fields: &Fields, replacement: &[u8], out: &mut Vec<u8>) -> Step {
        match self.mode {
            Mode::Structure => return self.structure(byte, out),
            Mode::Str { key, escaped } => {
                out.push(byte);
                if escaped || byte != b'"' {
                    self.mode = Mode::Str { key, escaped: !escaped && byte == b'\\' };
                    if key && self.key.len() <= fields.max_raw {
                        self.key.push(byte);
                    }
                } else {
                    self.mode =
                        if key && fields.matches(&self.key) { Mode::MatchedKey } else { Mode::Structure };
                    self.key.clear();
                }
            }
            Mode::MatchedKey => match byte {
                b':' => {
                    out.push(byte);
                    self.mode = Mode::ValueNext;
                }
                _ if is_space(byte) => out.push(byte),
                // Not JSON (`{"password" 1}`): nothing to redact.
                _ => {
                    self.mode = Mode::Structure;
                    return Step::Again;
                }
            },
            Mode::ValueNext => match byte {
                _ if is_space(byte) => out.push(byte),
                // No value (`{"password":}`): nothing to redact.
                b',' | b'}' | b']' => {
                    self.mode = Mode::Structure;
                    return Step::Again;
                }
                _ => {
                    out.extend_from_slice(replacement);
                    self.mode = match byte {
                        b'"' => Mode::SkipString { escaped: false },
                        b'{' | b'[' => Mode::SkipContainer { depth: 1, in_string: false, escaped: false },
                        _ => Mode::SkipScalar,
                    };
                }
            },
            Mode::SkipString { escaped } => {
                self.mode = match byte {
                    _ if escaped => Mode::SkipString { escaped: false },
                    b'\\' => Mode::SkipString { escaped: true },
                    b'"' => Mode::Structure,
                    _ => Mode::SkipString { escaped: false },
                };
            }
            Mode::SkipContainer { depth, in_string, escaped } => {
                self.mode = match byte {
                    _ if in_string => {
                        let closes = !escaped && byte == b'"';
                        let escaped = !escaped && byte == b'\\';
                        Mode::SkipContainer { depth, in_string: !closes, escaped }
                    }
                    b'"' => Mode::SkipContainer { depth, in_string: true, escaped: false },
                    b'{' | b'[' => Mode::SkipContainer { depth: depth.saturating_add(1), in_string, escaped },
                    b'}' | b']' if depth <= 1 => Mode::Structure,
                    b'}' | b']' => Mode::SkipContainer { depth: depth - 1, in_string, escaped },
                    _ => self.mode,
                };
            }
            Mode::SkipScalar => {
                if is_space(byte) || matches!(byte, b',' | b'}' | b']') {
                    self.mode = Mode::Structure;
                    return Step::Again;
                }
            }
            Mode::Cut => {}
        }
        Step::Used
    }

    /// A byte between tokens (or of a number or literal), passed on.
    fn structure(&mut self, byte: u8, out: &mut Vec<u8>) -> Step {
        let in_object = self.stack.ends_with('{');
        match byte {
            b'{' | b'[' if self.stack.len() >= MAX_DEPTH => {
                self.mode = Mode::Cut;
                return Step::Used;
            }
            b'"' => {
                self.mode = Mode::Str { key: self.expect_key && in_object, escaped: false };
                self.key.clear();
                self.expect_key = false;
            }
            b'{' => {
                self.stack.push('{');
                self.expect_key = true;
            }
            b'[' => {
                self.stack.push('[');
                self.expect_key = false;
            }
            b'}' | b']' => {
                self.stack.pop();
                self.expect_key = false;
            }
            b',' => self.expect_key = in_object,
            b':' => self.expect_key = false,
            _ => {}
        }
        out.push(byte);
        Step::Used
    }
}

/// JSON whitespace.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether a `content-type` announces JSON (`application/json`, `application/problem+json`,
/// `application/x-ndjson`…).
fn is_json(content_type: &str) -> bool {
    content_type.to_ascii_lowercase().contains("json")
}

/// The scanner as saved in `state`.
fn save(scanner: &Scanner) -> bool {
    match serde_json::to_vec(scanner) {
        Ok(bytes) => state::set(SCAN_KEY, bytes),
        Err(_) => false,
    }
}

/// The answer when a JSON response cannot be scanned: better no body than a leaked field.
fn unredactable() -> LocalResponse {
    LocalResponse::new(502)
        .header("content-type", "text/plain; charset=utf-8")
        .body("the response could not be redacted\n")
}

#[derive(Debug)]
struct BodyRedact {
    fields: Fields,
    replacement: Vec<u8>,
}

#[wasmgate_sdk::plugin]
impl Plugin for BodyRedact {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.fields.is_empty() {
            return Err("`fields` must not be empty: list the keys whose values to redact".to_owned());
        }
        if config.fields.iter().any(String::is_empty) {
            return Err("`fields` must not hold an empty name".to_owned());
        }
        let replacement = config.replacement.trim();
        if let Err(error) = serde_json::from_str::<serde_json::Value>(replacement) {
            return Err(format!(
                "`replacement` {:?} is not JSON text ({error}); a string needs its quotes, e.g. \"\\\"***\\\"\"",
                config.replacement
            ));
        }
        Ok(BodyRedact { fields: Fields::new(config.fields), replacement: replacement.as_bytes().to_vec() })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        // A compressed body cannot be scanned: ask the upstream for an uncompressed one.
        if let Err(error) = req.remove_header("accept-encoding") {
            log::warn!("accept-encoding not removed: {error}");
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, _req: &Request, resp: &mut Response) -> Action {
        if !resp.header("content-type").is_some_and(|content_type| is_json(&content_type)) {
            return Action::Continue;
        }
        if let Some(encoding) = resp.header("content-encoding")
            && !encoding.trim().eq_ignore_ascii_case("identity")
        {
            log::error!("JSON response with content-encoding {encoding:?} cannot be redacted: answering 502");
            return Action::Respond(unredactable());
        }
        if !save(&Scanner::default()) {
            log::error!("per-request state refused the scanner: answering 502");
            return Action::Respond(unredactable());
        }
        Action::Continue
    }

    fn on_response_body(&mut self, _req: &Request, chunk: Vec<u8>, end: bool) -> BodyAction {
        // No saved scanner: not a JSON response.
        let Some(saved) = state::get(SCAN_KEY) else { return BodyAction::Continue };
        let mut scanner = serde_json::from_slice::<Scanner>(&saved).unwrap_or_else(|error| {
            log::error!("saved scanner unreadable ({error}): dropping the rest of the body");
            Scanner::cut()
        });
        let was_cut = scanner.mode == Mode::Cut;
        let mut out = Vec::with_capacity(chunk.len());
        scanner.feed(&chunk, &self.fields, &self.replacement, &mut out);
        if scanner.mode == Mode::Cut && !was_cut {
            log::error!("JSON nested deeper than {MAX_DEPTH} levels: dropping the rest of the body");
        }
        // A scanner that cannot be saved must not leave the next chunk to a stale one, which
        // would misread where it is: a tiny cut one takes its place.
        if !end && !save(&scanner) && !save(&Scanner::cut()) {
            log::error!("per-request state refused the scanner: later chunks may go unredacted");
        }
        if out == chunk { BodyAction::Continue } else { BodyAction::Replace(out) }
    }
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`.

    use super::*;

    fn fields(names: &[&str]) -> Fields {
        Fields::new(names.iter().map(|name| name.to_string()).collect())
    }

    /// Redacts `chunks` in turn, saving and restoring the scanner between them as the plugin
    /// does through `state`.
    fn redact_chunks(chunks: &[&[u8]], names: &[&str]) -> Vec<u8> {
        let fields = fields(names);
        let mut saved = serde_json::to_vec(&Scanner::default()).expect("serialise");
        let mut out = Vec::new();
        for chunk in chunks {
            let mut scanner: Scanner = serde_json::from_slice(&saved).expect("deserialise");
            scanner.feed(chunk, &fields, br#""[REDACTED]""#, &mut out);
            saved = serde_json::to_vec(&scanner).expect("serialise");
        }
        out
    }

    fn redact(json: &str, names: &[&str]) -> String {
        String::from_utf8(redact_chunks(&[json.as_bytes()], names)).expect("UTF-8")
    }

    const DOCUMENTS: [&str; 9] = [
        r#"{"user":"bob","password":"hunter2","n":1}"#,
        r#"{"a":{"ssn":123,"b":[{"password":null},{"password":true}]},"password":{"x":[1,{"y":"}]"}]}}"#,
        r#"{"note":"say \"password\": \"x\"","password":"a\"b\\","k":"\\"}"#,
        r#"{"pass":"1","passwords":"2","xpassword":"3","password":"4","Password":"5"}"#,
        r#"["password",{"k":"password"},{"password":["password",{"password":1}]}]"#,
        r#"{"pass\u0077ord":"x","pa\"ssword":"y","ssn":-1.5e+3}"#,
        "{ \"password\" : \"x\" ,\n\t\"ssn\" :\r\n 12.5e3 , \"other\" : [ ] }",
        r#"[{"ssn":false},{"ssn":{}},{"ssn":[]},{"ssn":""},{"id":7}]"#,
        "{\"password\":\"caf\u{e9} \u{1f600}\",\"name\":\"\u{e9}t\u{e9}\"}\n{\"ssn\":1}\n",
    ];

    const REDACTED: [&str; 9] = [
        r#"{"user":"bob","password":"[REDACTED]","n":1}"#,
        r#"{"a":{"ssn":"[REDACTED]","b":[{"password":"[REDACTED]"},{"password":"[REDACTED]"}]},"password":"[REDACTED]"}"#,
        r#"{"note":"say \"password\": \"x\"","password":"[REDACTED]","k":"\\"}"#,
        r#"{"pass":"1","passwords":"2","xpassword":"3","password":"[REDACTED]","Password":"5"}"#,
        r#"["password",{"k":"password"},{"password":"[REDACTED]"}]"#,
        r#"{"pass\u0077ord":"[REDACTED]","pa\"ssword":"y","ssn":"[REDACTED]"}"#,
        "{ \"password\" : \"[REDACTED]\" ,\n\t\"ssn\" :\r\n \"[REDACTED]\" , \"other\" : [ ] }",
        r#"[{"ssn":"[REDACTED]"},{"ssn":"[REDACTED]"},{"ssn":"[REDACTED]"},{"ssn":"[REDACTED]"},{"id":7}]"#,
        "{\"password\":\"[REDACTED]\",\"name\":\"\u{e9}t\u{e9}\"}\n{\"ssn\":\"[REDACTED]\"}\n",
    ];

    #[test]
    fn redacts_named_fields_at_any_depth_whole_chunk() {
        for (json, expected) in DOCUMENTS.iter().zip(REDACTED) {
            assert_eq!(redact(json, &["password", "ssn"]), expected, "{json}");
        }
    }

    #[test]
    fn the_redacted_documents_are_still_json() {
        for expected in REDACTED {
            // A stream of values, for the newline-delimited one.
            let values = serde_json::Deserializer::from_str(expected).into_iter::<serde_json::Value>();
            assert!(values.collect::<Result<Vec<_>, _>>().is_ok_and(|v| !v.is_empty()), "{expected}");
        }
    }

    #[test]
    fn any_two_way_split_gives_the_whole_chunk_result() {
        for json in DOCUMENTS {
            let whole = redact(json, &["password", "ssn"]);
            let bytes = json.as_bytes();
            for at in 0..=bytes.len() {
                let (a, b) = bytes.split_at(at);
                let split = redact_chunks(&[a, b], &["password", "ssn"]);
                assert_eq!(String::from_utf8_lossy(&split), whole, "{json} split at {at}");
            }
        }
    }

    #[test]
    fn any_three_way_split_gives_the_whole_chunk_result() {
        let json = DOCUMENTS[1].as_bytes();
        let whole = redact(DOCUMENTS[1], &["password", "ssn"]);
        for i in 0..=json.len() {
            for j in i..=json.len() {
                let split = redact_chunks(&[&json[..i], &json[i..j], &json[j..]], &["password", "ssn"]);
                assert_eq!(String::from_utf8_lossy(&split), whole, "split at {i} and {j}");
            }
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = json.chunks(1).collect();
        assert_eq!(String::from_utf8_lossy(&redact_chunks(&bytes, &["password", "ssn"])), whole);
    }

    #[test]
    fn leaves_documents_without_the_fields_alone() {
        for json in [r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#, "[]", "\"password\"", "42", ""] {
            assert_eq!(redact(json, &["password"]), json);
        }
    }

    #[test]
    fn uses_the_configured_replacement() {
        let plugin =
            BodyRedact::new(Config { fields: vec!["pin".to_owned()], replacement: " null ".to_owned() })
                .expect("valid config");
        let mut out = Vec::new();
        Scanner::default().feed(br#"{"pin":"1234"}"#, &plugin.fields, &plugin.replacement, &mut out);
        assert_eq!(out, br#"{"pin":null}"#);
    }

    #[test]
    fn cuts_the_body_when_nesting_is_too_deep() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 10), "]".repeat(MAX_DEPTH + 10));
        let out = redact(&deep, &["password"]);
        assert_eq!(out, "[".repeat(MAX_DEPTH));
    }

    #[test]
    fn keeps_no_more_of_a_long_key_than_could_match() {
        let fields = fields(&["password"]);
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        let long_key = format!("{{\"{}", "p".repeat(10_000));
        scanner.feed(long_key.as_bytes(), &fields, b"0", &mut out);
        assert_eq!(scanner.key.len(), fields.max_raw + 1);
        scanner.feed(b"\":1}", &fields, b"0", &mut out);
        assert_eq!(out, format!("{long_key}\":1}}").as_bytes());
        // The state stays small whatever the document.
        assert!(serde_json::to_vec(&scanner).expect("serialise").len() < 200);
    }

    #[test]
    fn recognises_json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(is_json("application/x-ndjson"));
        assert!(!is_json("text/html"));
        assert!(!is_json("application/octet-stream"));
    }

    #[test]
    fn validates_the_config() {
        let plugin =
            BodyRedact::new(Config { fields: vec!["ssn".to_owned()], replacement: default_replacement() })
                .expect("defaults");
        assert_eq!(plugin.replacement, br#""[REDACTED]""#);
        assert_eq!(plugin.fields.max_raw, 18);
        let error = BodyRedact::new(Config { fields: vec![], replacement: default_replacement() })
            .expect_err("no fields");
        assert!(error.starts_with("`fields` must not be empty"), "{error}");
        assert!(
            BodyRedact::new(Config { fields: vec![String::new()], replacement: default_replacement() })
                .is_err()
        );
        let error =
            BodyRedact::new(Config { fields: vec!["ssn".to_owned()], replacement: "[REDACTED]".to_owned() })
                .expect_err("bare text");
        assert!(error.starts_with(r#"`replacement` "[REDACTED]" is not JSON text"#), "{error}");
    }
}
