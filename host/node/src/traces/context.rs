//! W3C trace context in NATS and HTTP headers: written from a span, read into a span's
//! parent. Only `traceparent` is read and passed on: `tracestate` is a caller's vendor data,
//! which would otherwise be echoed into every event its payment causes (up to 32 entries).

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header of W3C trace context that is read and carried.
const TRACEPARENT: &str = "traceparent";

/// NATS headers being written.
struct Writing<'a>(&'a mut HeaderMap);

impl Injector for Writing<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0.insert(key, value.as_str());
        }
    }
}

/// A `traceparent` read from a message or a request, and nothing else of its headers.
struct Reading<'a>(&'a str);

impl Extractor for Reading<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
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
    if let Some(value) = headers.and_then(|headers| headers.get(TRACEPARENT)) {
        carried.insert(TRACEPARENT, value.clone());
    }
    carried
}

/// Makes `span` a child of the trace `traceparent` names; nothing for a malformed one (a
/// client's header never fails a payment).
fn adopt_parent(span: &tracing::Span, traceparent: &str) {
    let parent = TraceContextPropagator::new().extract(&Reading(traceparent));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Makes `span` a child of the trace context a message's `headers` carry, if any.
pub fn adopt(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if let Some(traceparent) = headers.and_then(|headers| headers.get(TRACEPARENT)) {
        adopt_parent(span, traceparent.as_str());
    }
}

/// [`adopt`] for an HTTP request's headers: a client calling the API is the parent of what
/// the node does for it.
pub fn adopt_http(span: &tracing::Span, headers: &hyper::HeaderMap) {
    if let Some(traceparent) = headers.get(TRACEPARENT).and_then(|value| value.to_str().ok()) {
        adopt_parent(span, traceparent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_valid_traceparent_is_read_and_carried() {
        let span = tracing::Span::none();
        adopt(&span, None);
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-zz-not-a-trace");
        adopt(&span, Some(&headers));
        let mut written = HeaderMap::new();
        inject(&span, &mut written);
        assert!(written.get("traceparent").is_none(), "no trace, no header");
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceContextPropagator::new().extract(&Reading(valid));
        assert_eq!(parent.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut sent = HeaderMap::new();
        sent.insert("traceparent", valid);
        sent.insert("tracestate", "vendor=".repeat(1000).as_str());
        sent.insert(wasmpay_protocol::routing::subjects::CLIENT_KEY_HEADER, "wpk_forged");
        let passed = carried(Some(&sent));
        assert_eq!(passed.get("traceparent").map(|value| value.as_str()), Some(valid));
        assert!(passed.get("tracestate").is_none() && passed.len() == 1, "nothing else is passed on");
    }
}
