//! Distributed traces. A payment crosses processes (a client, the HTTP node that forwards it,
//! the partition's owner) and threads (its partition worker, a blocking thread for its
//! plugins, the ledger's committer); W3C trace context in NATS headers (`traceparent`,
//! `tracestate`) ties the pieces into one trace, and OpenTelemetry exports its spans over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set. Without it nothing is exported and the spans stay what they were: log context.
//!
//! A payment's trace: the client's span, then on the owner `payment` (its id, partition and
//! method), inside it one `plugin call` per export called (`plugin`, `export`) and `ledger
//! commit` (submission to its batch's commit). Its event (`wasmpay.events.<status>`) carries
//! the payment's context on, so a consumer's span joins the same trace.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

pub use context::{adopt, adopt_http, carried, inject};

pub mod context;

/// How long one export may take: a collector that does not answer costs a batch, never a
/// payment (spans are exported off the payment path, and dropped when the queue is full).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a process waits at exit for its last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The endpoint or protocol is one this exporter does not speak.
    #[error("{0}")]
    Unsupported(String),
    /// The exporter could not be built.
    #[error("the OTLP exporter could not be set up: {0}")]
    Exporter(String),
}

/// The exporter of a process's spans, once set up; [`Traces::finish`] flushes it.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// The exporter the environment asks for: `None` unless an OTLP endpoint is set (and
    /// `OTEL_SDK_DISABLED` is not `true`). The standard variables apply
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
    /// `OTEL_BSP_*`); `service` names the process when `OTEL_SERVICE_NAME` does not. Exports go
    /// out on `runtime`, over plain HTTP/1 with protobuf bodies (`http/protobuf`, port 4318).
    pub fn from_env(
        service: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Option<(Traces, SdkTracer)>, TracesError> {
        let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
        if variable("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let Some(endpoint) =
            variable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| variable("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        if !endpoint.starts_with("http://") {
            return Err(TracesError::Unsupported(format!(
                "OTLP endpoint {endpoint:?}: wasmpay exports over plain http:// (run a collector beside the node, e.g. \
                 http://127.0.0.1:4318)"
            )));
        }
        let protocol =
            variable("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| variable("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol.filter(|protocol| protocol != "http/protobuf") {
            return Err(TracesError::Unsupported(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: wasmpay exports http/protobuf (the collector's port 4318)"
            )));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime { runtime })
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|error| TracesError::Exporter(error.to_string()))?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if variable("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service.to_owned());
        }
        let provider =
            SdkTracerProvider::builder().with_resource(resource.build()).with_batch_exporter(exporter).build();
        let tracer = provider.tracer("wasmpay");
        Ok(Some((Traces { provider }, tracer)))
    }

    /// Exports what is left, within [`FLUSH_TIMEOUT`]. Call it before the runtime the exports
    /// run on is dropped.
    pub fn finish(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(%error, "the last spans could not be exported");
        }
    }
}

/// Sends the exporter's requests on the process's tokio runtime: the SDK exports from a
/// thread of its own, where no runtime runs, and the request's future only waits for the
/// task that makes it.
#[derive(Debug)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: hyper::Request<Bytes>) -> Result<hyper::Response<Bytes>, HttpError> {
        let (mut parts, body) = request.into_parts();
        let target = parts.uri.to_string();
        let authority = parts.uri.authority().map(|authority| authority.as_str().to_owned()).ok_or("no host")?;
        // HTTP/1 sends the path in the request line and the host in its header.
        parts.uri = parts.uri.path_and_query().map_or("/", |path| path.as_str()).parse()?;
        parts.headers.insert(hyper::header::HOST, authority.parse()?);
        let request = hyper::Request::from_parts(parts, Full::new(body));
        let sent = self
            .runtime
            .spawn(async move { crate::client::send_http(&target, &authority, request, EXPORT_TIMEOUT).await });
        let (status, body) = sent.await??;
        let mut response = hyper::Response::new(body);
        *response.status_mut() = status;
        Ok(response)
    }
}
