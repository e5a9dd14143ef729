//! Recording a sample of a route's real requests into a file, one JSON line each, in the format
//! `wasmgate plugin test` reads (`docs/plugin-tools.md`), so that what production sent can be
//! replayed against a new plugin version. Only sampled requests pay: their heads are copied
//! (configured headers redacted) and their bodies kept up to a bound. Lines are written by a
//! task of their own; when it falls behind, a line is dropped and counted, never waited for.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName};
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::config::RecordConfig;

/// Lines waiting for the writer at most.
const QUEUE: usize = 256;

/// One route's recorder.
#[derive(Debug)]
pub struct Recorder {
    /// What it was made from: a reload with the same config keeps it, and its writer.
    config: RecordConfig,
    redact: Vec<HeaderName>,
    /// Requests the route saw, for the sampling.
    seen: AtomicU64,
    dropped: AtomicU64,
    lines: mpsc::Sender<String>,
}

impl Recorder {
    /// A recorder appending to `path` (resolved), whose writer runs on the current runtime and
    /// opens the file when the first line comes (so `check` creates no file).
    pub fn open(config: &RecordConfig, path: PathBuf, route: &str) -> Arc<Recorder> {
        let (lines, mut queued) = mpsc::channel::<String>(QUEUE);
        let (max_file, route) = (config.max_file as u64, route.to_owned());
        tokio::spawn(async move {
            let Some(first) = queued.recv().await else { return };
            let opened = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await;
            let file = match opened {
                Ok(file) => file,
                Err(error) => {
                    tracing::error!(route, path = %path.display(), %error, "cannot open the recording file: nothing is recorded");
                    return;
                }
            };
            let mut written = file.metadata().await.map_or(0, |m| m.len());
            let mut file = tokio::io::BufWriter::new(file);
            let mut next = Some(first);
            while let Some(line) = next.take() {
                if written + line.len() as u64 > max_file {
                    tracing::warn!(route, path = %path.display(), max_file, "the recording file is full: recording stops");
                    break;
                }
                written += line.len() as u64;
                let mut result = file.write_all(line.as_bytes()).await;
                if result.is_ok() && queued.is_empty() {
                    result = file.flush().await;
                }
                if let Err(error) = result {
                    tracing::error!(route, path = %path.display(), %error, "cannot write the recording file: recording stops");
                    break;
                }
                next = queued.recv().await;
            }
            let _ = file.flush().await;
        });
        let redact =
            config.redact.iter().filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok()).collect();
        Arc::new(Recorder {
            config: config.clone(),
            redact,
            seen: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lines,
        })
    }

    /// A recording of this request if it is in the sample: the first, then every
    /// `1 / share`-th, so the sample needs no random numbers and no lock.
    pub fn sample(
        self: &Arc<Self>,
        method: &http::Method,
        target: &str,
        headers: &HeaderMap,
        client: SocketAddr,
    ) -> Option<Box<Recording>> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        // A writer that stopped (the file is full) takes no more.
        if ((n + 1.0) * self.config.share).ceil() <= (n * self.config.share).ceil() || self.lines.is_closed()
        {
            return None;
        }
        Some(Box::new(Recording {
            recorder: self.clone(),
            line: json!({
                "method": method.as_str(),
                "path": target,
                "headers": self.heads(headers),
                "client": client.to_string(),
            }),
            response_body: Vec::new(),
        }))
    }

    /// The config it was made from.
    pub fn config(&self) -> &RecordConfig {
        &self.config
    }

    fn heads(&self, headers: &HeaderMap) -> Value {
        let mut out = Map::new();
        for name in headers.keys() {
            // Repeated fields come back as one.
            let value = if self.redact.contains(name) {
                "[redacted]".to_owned()
            } else {
                crate::head::joined(headers, name)
            };
            out.insert(name.as_str().to_owned(), Value::String(value));
        }
        Value::Object(out)
    }

    fn body(&self, bytes: &[u8]) -> Value {
        Value::String(String::from_utf8_lossy(&bytes[..bytes.len().min(self.config.max_body)]).into_owned())
    }
}

/// One sampled request, filled in as it goes and written when it is done.
#[derive(Debug)]
pub struct Recording {
    recorder: Arc<Recorder>,
    line: Value,
    response_body: Vec<u8>,
}

impl Recording {
    /// The request body, when the route held it whole.
    pub fn request_body(&mut self, bytes: &[u8]) {
        let body = self.recorder.body(bytes);
        self.line["body"] = body;
    }

    /// The upstream's response head, before the response plugins saw it.
    pub fn response(&mut self, status: http::StatusCode, headers: &HeaderMap) {
        self.line["response"] = json!({ "status": status.as_u16(), "headers": self.recorder.heads(headers) });
    }

    /// A chunk of the response body as it goes to the client, up to the bound.
    pub fn response_chunk(&mut self, bytes: &[u8]) {
        let room = self.recorder.config.max_body.saturating_sub(self.response_body.len());
        self.response_body.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Writes the line, with the status the client got as what a replay expects.
    pub fn finish(mut self, status: u16) {
        if let Some(response) = self.line.get_mut("response") {
            response["body"] = self.recorder.body(&self.response_body);
        }
        if status != 0 {
            self.line["expect"] = json!({ "status": status });
        }
        let mut line = self.line.to_string();
        line.push('\n');
        // Closed: the writer stopped, and logged why (a full file, a write error).
        if let Err(mpsc::error::TrySendError::Full(_)) = self.recorder.lines.try_send(line) {
            let dropped = self.recorder.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "recording falls behind: requests in the sample were not written");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn samples_the_first_request_then_every_nth_and_creates_no_file_until_a_line_comes() {
        let path = std::env::temp_dir().join(format!("wasmgate-recording-unit-{}.jsonl", std::process::id()));
        let config = RecordConfig {
            path: path.clone(),
            share: 0.25,
            max_body: 4,
            redact: vec!["authorization".to_owned()],
            max_file: 1 << 20,
        };
        let recorder = Recorder::open(&config, path.clone(), "r");
        let client = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", http::HeaderValue::from_static("Bearer secret"));
        let sampled: Vec<usize> = (0..12)
            .filter(|_| recorder.sample(&http::Method::GET, "/", &headers, client).is_some())
            .collect();
        assert_eq!(sampled, [0, 4, 8]);
        tokio::task::yield_now().await;
        assert!(!path.exists(), "dropped recordings write nothing");

        let mut recording =
            recorder.sample(&http::Method::POST, "/x?y=1", &headers, client).expect("the 13th");
        recording.request_body(b"0123456789");
        recording.response(http::StatusCode::CREATED, &HeaderMap::new());
        recording.response_chunk(b"abc");
        recording.response_chunk(b"defgh");
        recording.finish(201);
        let line = loop {
            if let Some(line) = std::fs::read_to_string(&path).ok().filter(|text| text.ends_with('\n')) {
                break line;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        let _ = std::fs::remove_file(&path);
        let value: Value = serde_json::from_str(&line).expect("one JSON line");
        assert_eq!(value["path"], "/x?y=1");
        assert_eq!(value["headers"]["authorization"], "[redacted]");
        assert_eq!(
            (value["body"].as_str(), value["response"]["body"].as_str()),
            (Some("0123"), Some("abcd"))
        );
        assert_eq!(
            (value["response"]["status"].as_u64(), value["expect"]["status"].as_u64()),
            (Some(201), Some(201))
        );
    }
}
