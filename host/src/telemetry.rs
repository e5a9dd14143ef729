//! Traces: an OpenTelemetry span per request, with a child per plugin call and per upstream
//! attempt, named and attributed by the HTTP semantic conventions, exported over OTLP (HTTP,
//! protobuf or JSON). W3C `traceparent` is read from requests and sent upstream. Off unless
//! `[traces]` is configured; then nothing is made per request but a `None` check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider};

use crate::config::{TraceProtocol, TracesConfig};

/// The tracer and its exporter.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// The exporter and tracer `config` describes. Needs a tokio runtime: spans are batched
    /// and sent from a task on it.
    pub fn new(config: &TracesConfig) -> Result<Arc<Telemetry>, String> {
        let protocol = match config.protocol {
            TraceProtocol::HttpProtobuf => Protocol::HttpBinary,
            TraceProtocol::HttpJson => Protocol::HttpJson,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(config.endpoint.clone())
            .with_protocol(protocol)
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let batch = BatchConfigBuilder::default().with_scheduled_delay(config.export_interval).build();
        let processor =
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .with_batch_config(batch)
            .build();
        let resource =
            opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("wasmgate");
        Ok(Arc::new(Telemetry { provider, tracer, propagator: TraceContextPropagator::new() }))
    }

    /// The server span of a request, child of the client's `traceparent` if it sent one.
    pub(crate) fn request(
        &self,
        parts: &http::request::Parts,
        route: &str,
        client: SocketAddr,
        tls: bool,
    ) -> Context {
        let parent = self.propagator.extract(&HeaderExtractor(&parts.headers));
        let method = parts.method.as_str().to_owned();
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("url.path", parts.uri.path().to_owned()),
            KeyValue::new("url.scheme", if tls { "https" } else { "http" }),
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("client.address", client.ip().to_string()),
            KeyValue::new("network.protocol.version", version(parts.version)),
        ];
        if let Some(host) = crate::head::request_host(parts) {
            attributes.push(KeyValue::new("server.address", host.to_owned()));
        }
        let span = self
            .tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// A child span of `parent`.
    pub(crate) fn child(
        &self,
        parent: &Context,
        name: String,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// Writes `cx` as `traceparent` (and `tracestate`) into an upstream request's headers.
    pub(crate) fn inject(&self, cx: &Context, headers: &mut http::HeaderMap) {
        self.propagator.inject_context(cx, &mut HeaderInjector(headers));
    }
}

/// A traced request: the tracer and the request's server span, which every span made for the
/// request is a child of.
#[derive(Debug, Clone)]
pub(crate) struct RequestTrace {
    telemetry: Arc<Telemetry>,
    cx: Context,
}

impl RequestTrace {
    /// The server span of a request (see [`Telemetry::request`]).
    pub(crate) fn start(
        telemetry: &Arc<Telemetry>,
        parts: &http::request::Parts,
        route: &str,
        client: SocketAddr,
        tls: bool,
    ) -> Self {
        RequestTrace { telemetry: telemetry.clone(), cx: telemetry.request(parts, route, client, tls) }
    }

    /// The request's server span.
    pub(crate) fn context(&self) -> &Context {
        &self.cx
    }

    /// The client span of one upstream attempt; it goes upstream as the request's
    /// `traceparent`.
    pub(crate) fn upstream_attempt<B>(
        &self,
        request: &mut http::Request<B>,
        backend: SocketAddr,
        attempt: u32,
    ) -> Span {
        let method = request.method().as_str().to_owned();
        let attributes = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("server.address", backend.ip().to_string()),
            KeyValue::new("server.port", i64::from(backend.port())),
            KeyValue::new("http.request.resend_count", i64::from(attempt)),
        ];
        let cx = self.telemetry.child(&self.cx, method, SpanKind::Client, attributes);
        self.telemetry.inject(&cx, request.headers_mut());
        Span(Some(cx))
    }

    /// The span of one plugin call.
    pub(crate) fn plugin_call(&self, plugin: &str, phase: &'static str) -> Span {
        let attributes = vec![
            KeyValue::new("wasmgate.plugin.name", plugin.to_owned()),
            KeyValue::new("wasmgate.plugin.phase", phase),
        ];
        let name = format!("plugin {plugin} {phase}");
        Span(Some(self.telemetry.child(&self.cx, name, SpanKind::Internal, attributes)))
    }
}

/// A child span of a traced request (or nothing, for a request that is not traced). It ends
/// when dropped, so an attempt or call that is cancelled still closes its span.
#[derive(Debug)]
pub(crate) struct Span(Option<Context>);

impl Span {
    /// The span of an untraced request.
    pub(crate) fn none() -> Self {
        Span(None)
    }

    /// Adds what a plugin call used of its limits: its time over the deadline, the most linear
    /// memory its instance has reached, and how long it waited for the instance.
    pub(crate) fn describe(&self, took: Duration, deadline: Duration, memory: usize, waited: Duration) {
        if let Some(cx) = &self.0 {
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "wasmgate.plugin.pool_wait_us",
                i64::try_from(waited.as_micros()).unwrap_or(i64::MAX),
            ));
            span.set_attribute(KeyValue::new(
                "wasmgate.plugin.deadline_used",
                took.as_secs_f64() / deadline.as_secs_f64(),
            ));
            span.set_attribute(KeyValue::new(
                "wasmgate.plugin.memory_bytes",
                i64::try_from(memory).unwrap_or(i64::MAX),
            ));
        }
    }

    /// Ends the span with `status` (an HTTP status, 0 for none) and `error`, if any.
    pub(crate) fn end(mut self, status: u16, error: Option<&str>) {
        if let Some(cx) = self.0.take() {
            finish(&cx, status, error);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(cx) = self.0.take() {
            finish(&cx, 0, None);
        }
    }
}

/// Ends the span of `cx` with `status` (an HTTP status, 0 for none) and `error`, if any.
pub(crate) fn finish(cx: &Context, status: u16, error: Option<&str>) {
    let span = cx.span();
    if status != 0 {
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
    }
    if let Some(error) = error {
        span.set_attribute(KeyValue::new("error.type", error.to_owned()));
        span.set_status(Status::error(error.to_owned()));
    }
    span.end();
}

fn version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

impl Telemetry {
    /// Sends what is batched and stops the exporter. It blocks until the export task on the
    /// runtime has finished (bounded by the export timeout), so it runs on the blocking pool.
    pub async fn shutdown(self: Arc<Self>) {
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(error) = self.provider.shutdown() {
                tracing::debug!(%error, "trace exporter shut down with an error");
            }
        })
        .await;
    }
}
