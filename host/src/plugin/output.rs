//! What a plugin writes to its stdout and stderr (`print`, `println!`, `console.log`): each
//! line goes to the gateway log as the plugin's (target `wasmgate::plugin`, with `plugin` and
//! `stream`), stdout at info and stderr at warn, within the plugin's `log_rate` (shared with
//! its `log` calls) and cut at [`MAX_LOG_LINE`] bytes like them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::log_limit::{LogLimit, MAX_LOG_LINE};

/// One of a plugin's output streams; see the module docs.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    plugin: Arc<str>,
    stream: Stream,
    log: Arc<LogLimit>,
}

#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl GuestOutput {
    pub(crate) fn new(plugin: Arc<str>, stream: Stream, log: Arc<LogLimit>) -> Self {
        GuestOutput { plugin, stream, log }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Lines::new(self.clone()))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(Lines::new(self.clone()))
    }
}

/// A stream the guest holds: bytes gathered into lines.
struct Lines {
    out: GuestOutput,
    pending: Vec<u8>,
    /// The line under way is past [`MAX_LOG_LINE`]: its written part went, the rest is dropped.
    cut: bool,
}

impl Lines {
    fn new(out: GuestOutput) -> Self {
        Lines { out, pending: Vec::new(), cut: false }
    }

    fn take(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (line, rest, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                None => (bytes, &[][..], false),
            };
            if !self.cut {
                let room = MAX_LOG_LINE - self.pending.len();
                self.pending.extend_from_slice(&line[..line.len().min(room)]);
                if line.len() > room {
                    self.emit(true);
                    self.cut = true;
                }
            }
            if ended {
                if !self.cut {
                    self.emit(false);
                }
                self.cut = false;
            }
            bytes = rest;
        }
    }

    /// Writes the pending line, if any (`cut` when the rest of it is dropped).
    fn emit(&mut self, cut: bool) {
        if self.pending.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let plugin = &*self.out.plugin;
        if self.out.log.admit_line(plugin) {
            let cut = if cut { " [cut]" } else { "" };
            match self.out.stream {
                Stream::Stdout => {
                    tracing::info!(target: "wasmgate::plugin", plugin, stream = "stdout", "{line}{cut}")
                }
                Stream::Stderr => {
                    tracing::warn!(target: "wasmgate::plugin", plugin, stream = "stderr", "{line}{cut}")
                }
            }
        }
        self.pending.clear();
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.emit(false);
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Lines {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.take(&bytes);
        Ok(())
    }

    /// A line without its newline goes when the guest flushes.
    fn flush(&mut self) -> Result<(), StreamError> {
        self.emit(false);
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Lines {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Lines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.take(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit(false);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}
