//! W3C trace context (`traceparent`, `tracestate`) in NATS and HTTP headers: written from a
//! span, read into a span's parent.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The headers of W3C trace context.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// NATS headers being written.
struct Writing<'a>(&'a mut HeaderMap);

impl Injector for Writing<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// NATS headers being read: only the trace context's.
struct Reading<'a>(&'a HeaderMap);

impl Extractor for Reading<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        TRACE_HEADERS.into_iter().filter(|key| self.0.get(*key).is_some()).collect()
    }
}

/// Writes `span`'s trace context into `headers`; nothing when no trace is being recorded.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut Writing(headers));
    }
}

/// The trace context of `headers` alone, to pass a message on without its other headers.
pub fn carried(headers: Option<&HeaderMap>) -> HeaderMap {
    let mut carried = HeaderMap::new();
    for key in TRACE_HEADERS {
        if let Some(value) = headers.and_then(|headers| headers.get(key)) {
            carried.insert(key, value.clone());
        }
    }
    carried
}

/// Makes `span` a child of the trace context `headers` carry; nothing if they carry none or
/// a malformed one (a client's header never fails a payment).
pub fn adopt(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers.filter(|headers| headers.get(TRACE_HEADERS[0]).is_some()) else {
        return;
    };
    let parent = TraceContextPropagator::new().extract(&Reading(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// [`adopt`] for an HTTP request's headers: a client calling the API is the parent of what
/// the node does for it.
pub fn adopt_http(span: &tracing::Span, headers: &hyper::HeaderMap) {
    if headers.get(TRACE_HEADERS[0]).is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_or_missing_trace_context_is_ignored() {
        let span = tracing::Span::none();
        adopt(&span, None);
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-zz-not-a-trace");
        adopt(&span, Some(&headers));
        let mut written = HeaderMap::new();
        inject(&span, &mut written);
        assert!(written.get("traceparent").is_none(), "no trace, no header");
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceContextPropagator::new().extract(&Reading(&{
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", valid);
            headers
        }));
        assert_eq!(parent.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
