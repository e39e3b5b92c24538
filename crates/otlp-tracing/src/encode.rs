//! A batch of finished spans as the bytes of an OTLP `ExportTraceServiceRequest`
//! (opentelemetry-proto `opentelemetry/proto/collector/trace/v1/trace_service.proto`), written
//! straight from the SDK's `SpanData`.
//!
//! opentelemetry-otlp 0.33 first copies the batch (for retries), converts every span into
//! opentelemetry-proto's generated structs (a `String` or `Vec` per id, name, key and value),
//! groups them through a `HashMap`, then lets prost encode them, and prost asks every nested
//! message its length again at each level. For the sample service that was about 23,000
//! instructions per exported span, more than the request it describes. Here every message is
//! written once, straight into one buffer: its length prefix is reserved before its body
//! (one byte for a key-value, two for a span, three for the batch's outer messages) and
//! filled in after it; when the length needs another width, the body is moved once (a
//! `memmove`: rare for the small messages, once per batch for the outer ones). About a sixth
//! of the instructions, and no pass that measures before writing.
//!
//! The output decodes (with prost and opentelemetry-proto's types) to exactly what
//! opentelemetry-proto 0.33.1's `group_spans_by_resource_and_scope` builds for the same batch
//! (`src/transform/trace.rs`, `src/transform/common.rs`): the tests check that field by field on
//! spans with every kind of value, events, links, statuses, parents and several scopes.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{SpanKind, Status, TraceState},
};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanLinks},
};

// Wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// `SpanFlags` of trace.proto: the context's `is_remote` is known (always), and whether it is.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const CONTEXT_IS_REMOTE: u32 = 0x200;

/// Bytes reserved for a length prefix: what most messages of the kind need (a key-value under
/// 128 bytes, a span under 16 KiB, a batch under 2 MiB).
const SMALL: usize = 1;
const SPAN: usize = 2;
const BATCH: usize = 3;

/// The resource of every span of this process, encoded once: the `resource` and `schema_url`
/// fields of a `ResourceSpans`.
#[derive(Debug, Clone, Default)]
pub struct EncodedResource {
    fields: Vec<u8>,
}

impl EncodedResource {
    pub fn new(resource: &Resource) -> Self {
        let attributes: Vec<KeyValue> = resource
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let mut fields = Vec::new();
        // Resource { attributes = 1 } (dropped_attributes_count and entity_refs are empty).
        put_nested(&mut fields, 1, BATCH, |out| {
            put_attributes(out, 1, &attributes)
        });
        put_str(&mut fields, 3, resource.schema_url().unwrap_or_default());
        Self { fields }
    }
}

/// Appends the `ExportTraceServiceRequest` of `spans` (one `ResourceSpans`, one `ScopeSpans`
/// per instrumentation scope in order of first appearance) to `out`.
pub fn encode_export_request(resource: &EncodedResource, spans: &[SpanData], out: &mut Vec<u8>) {
    // Group by scope, keeping the order in which scopes first appear (as the SDK's grouping
    // does). A process has one or two scopes, so a scan beats a hash.
    let mut groups: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
    let mut last = usize::MAX;
    for span in spans {
        let scope = &span.instrumentation_scope;
        if last == usize::MAX || groups[last].0 != scope {
            last = match groups.iter().position(|(s, _)| *s == scope) {
                Some(found) => found,
                None => {
                    groups.push((scope, Vec::new()));
                    groups.len() - 1
                }
            };
        }
        groups[last].1.push(span);
    }
    // About what the sample service's spans take, so the buffer rarely grows.
    out.reserve(resource.fields.len() + 512 * spans.len());
    put_request(
        out,
        resource,
        groups.iter().map(|(scope, members)| {
            (*scope, move |out: &mut Vec<u8>| {
                for span in members {
                    put_scope_span(out, span);
                }
            })
        }),
    );
}

/// Appends `span` as one entry of a `ScopeSpans`'s `spans` (field 2, with its length), the
/// piece [`encode_request_of_encoded`] assembles: a span can be encoded when it ends and its
/// `SpanData` dropped there, long before its batch is sent.
pub fn put_scope_span(out: &mut Vec<u8>, span: &SpanData) {
    put_nested(out, 2, SPAN, |out| put_span(out, span));
}

/// Appends the `ExportTraceServiceRequest` of spans encoded by [`put_scope_span`], given per
/// instrumentation scope (one `ScopeSpans` each, in this order) to `out`.
pub fn encode_request_of_encoded(
    resource: &EncodedResource,
    groups: &[(&InstrumentationScope, &[u8])],
    out: &mut Vec<u8>,
) {
    out.reserve(resource.fields.len() + groups.iter().map(|(_, s)| s.len() + 64).sum::<usize>());
    put_request(
        out,
        resource,
        groups.iter().map(|(scope, spans)| {
            (*scope, move |out: &mut Vec<u8>| {
                out.extend_from_slice(spans)
            })
        }),
    );
}

/// One `ResourceSpans` (field 1 of the request) with a `ScopeSpans` per group, whose spans its
/// function writes.
fn put_request<'a, F: FnOnce(&mut Vec<u8>)>(
    out: &mut Vec<u8>,
    resource: &EncodedResource,
    groups: impl Iterator<Item = (&'a InstrumentationScope, F)>,
) {
    put_nested(out, 1, BATCH, |out| {
        out.extend_from_slice(&resource.fields);
        for (scope, spans) in groups {
            put_nested(out, 2, BATCH, |out| {
                put_nested(out, 1, SMALL, |out| put_scope(out, scope));
                spans(out);
                put_str(out, 3, scope.schema_url().unwrap_or(""));
            });
        }
    });
}

// --- values as trace.proto has them ------------------------------------------------------

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn flags(remote: bool, trace_flags: u8) -> u32 {
    let mut flags = u32::from(trace_flags) | CONTEXT_HAS_IS_REMOTE;
    if remote {
        flags |= CONTEXT_IS_REMOTE;
    }
    flags
}

/// (`StatusCode`, message): the message only for an error, as the SDK's conversion does.
fn status_parts(status: &Status) -> (u64, &str) {
    match status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description),
    }
}

// --- writing -------------------------------------------------------------------------------

fn varint_len(value: u64) -> usize {
    // 7 bits per byte; 0 still takes one.
    ((64 - (value | 1).leading_zeros()) as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u64) {
    put_varint(out, (u64::from(field) << 3) | wire_type);
}

/// A length-delimited field whose body `body` writes: the tag, `reserve` bytes for the length,
/// the body, then the length written into its place (canonical, so the body moves when the
/// length takes another number of bytes than reserved).
fn put_nested(out: &mut Vec<u8>, field: u32, reserve: usize, body: impl FnOnce(&mut Vec<u8>)) {
    put_tag(out, field, LEN);
    let at = out.len();
    out.resize(at + reserve, 0);
    body(out);
    let len = out.len() - at - reserve;
    let width = varint_len(len as u64);
    if width != reserve {
        out.splice(at..at + reserve, std::iter::repeat_n(0, width));
    }
    let mut value = len as u64;
    for byte in &mut out[at..at + width] {
        *byte = value as u8 & 0x7f;
        value >>= 7;
        if value != 0 {
            *byte |= 0x80;
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_tag(out, field, LEN);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
}

/// A string or bytes field: proto3 leaves an empty one out.
fn put_str(out: &mut Vec<u8>, field: u32, value: &str) {
    put_bytes(out, field, value.as_bytes());
}

/// A span's or link's W3C `tracestate`, omitted when empty (almost every span has none); the
/// header is formatted only when there is one.
fn put_trace_state(out: &mut Vec<u8>, field: u32, state: &TraceState) {
    if state.into_iter().len() != 0 {
        put_str(out, field, &state.header());
    }
}

fn put_uint(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_tag(out, field, VARINT);
        put_varint(out, value);
    }
}

fn put_fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_tag(out, field, FIXED64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn put_fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        put_tag(out, field, FIXED32);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// The one field of an `AnyValue` (a oneof: written even when it holds the default; a kind of
/// value this encoder does not know leaves it empty, where the SDK's own conversion panics).
fn put_any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => {
            put_tag(out, 2, VARINT);
            put_varint(out, u64::from(*b));
        }
        Value::I64(i) => {
            put_tag(out, 3, VARINT);
            put_varint(out, *i as u64);
        }
        Value::F64(f) => {
            put_tag(out, 4, FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => {
            put_tag(out, 1, LEN);
            put_varint(out, s.as_str().len() as u64);
            out.extend_from_slice(s.as_str().as_bytes());
        }
        Value::Array(array) => put_nested(out, 5, SMALL, |out| put_array(out, array)),
        _ => {}
    }
}

/// `ArrayValue { repeated AnyValue values = 1 }`.
fn put_array(out: &mut Vec<u8>, array: &Array) {
    fn each<T: Clone>(out: &mut Vec<u8>, values: &[T], value: impl Fn(T) -> Value) {
        for v in values {
            let v = value(v.clone());
            put_nested(out, 1, SMALL, |out| put_any_value(out, &v));
        }
    }
    match array {
        Array::Bool(v) => each(out, v, Value::Bool),
        Array::I64(v) => each(out, v, Value::I64),
        Array::F64(v) => each(out, v, Value::F64),
        Array::String(v) => each(out, v, Value::String),
        _ => {}
    }
}

/// `KeyValue { string key = 1; AnyValue value = 2 }`; the value is always present.
///
/// A scalar or string value (every attribute the services set) has its length known before a
/// byte is written, so its key-value is written front to back with exact prefixes: no reserved
/// bytes to fill in afterwards. Arrays take the general path.
fn put_key_value(out: &mut Vec<u8>, field: u32, kv: &KeyValue) {
    let key = kv.key.as_str();
    let Some(any_value) = scalar_any_value_len(&kv.value) else {
        put_nested(out, field, SMALL, |out| {
            put_str(out, 1, key);
            put_nested(out, 2, SMALL, |out| put_any_value(out, &kv.value));
        });
        return;
    };
    let key_field = if key.is_empty() {
        0
    } else {
        1 + varint_len(key.len() as u64) + key.len()
    };
    let body = key_field + 1 + varint_len(any_value as u64) + any_value;
    put_tag(out, field, LEN);
    put_varint(out, body as u64);
    put_str(out, 1, key);
    put_tag(out, 2, LEN);
    put_varint(out, any_value as u64);
    put_any_value(out, &kv.value);
}

/// What [`put_any_value`] writes for a scalar or a string, in bytes; `None` for an array (or a
/// kind this encoder does not know), whose length is only known once written.
fn scalar_any_value_len(value: &Value) -> Option<usize> {
    match value {
        Value::Bool(_) => Some(2),
        Value::I64(i) => Some(1 + varint_len(*i as u64)),
        Value::F64(_) => Some(1 + 8),
        Value::String(s) => {
            let len = s.as_str().len();
            Some(1 + varint_len(len as u64) + len)
        }
        _ => None,
    }
}

fn put_attributes(out: &mut Vec<u8>, field: u32, attributes: &[KeyValue]) {
    for kv in attributes {
        put_key_value(out, field, kv);
    }
}

fn put_scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    put_str(out, 1, scope.name());
    put_str(out, 2, scope.version().unwrap_or(""));
    for kv in scope.attributes() {
        put_key_value(out, 3, kv);
    }
}

fn put_events(out: &mut Vec<u8>, events: &SpanEvents) {
    for event in events.iter() {
        put_nested(out, 11, SMALL, |out| {
            put_fixed64(out, 1, nanos(event.timestamp));
            put_str(out, 2, &event.name);
            put_attributes(out, 3, &event.attributes);
            put_uint(out, 4, u64::from(event.dropped_attributes_count));
        });
    }
    put_uint(out, 12, u64::from(events.dropped_count));
}

fn put_links(out: &mut Vec<u8>, links: &SpanLinks) {
    for link in links.iter() {
        let context = &link.span_context;
        put_nested(out, 13, SMALL, |out| {
            put_bytes(out, 1, &context.trace_id().to_bytes());
            put_bytes(out, 2, &context.span_id().to_bytes());
            put_trace_state(out, 3, context.trace_state());
            put_attributes(out, 4, &link.attributes);
            put_uint(out, 5, u64::from(link.dropped_attributes_count));
            put_fixed32(
                out,
                6,
                flags(context.is_remote(), context.trace_flags().to_u8()),
            );
        });
    }
    put_uint(out, 14, u64::from(links.dropped_count));
}

fn put_span(out: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    put_bytes(out, 1, &context.trace_id().to_bytes());
    put_bytes(out, 2, &context.span_id().to_bytes());
    put_trace_state(out, 3, context.trace_state());
    if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        put_bytes(out, 4, &span.parent_span_id.to_bytes());
    }
    put_str(out, 5, &span.name);
    put_uint(out, 6, kind(&span.span_kind));
    put_fixed64(out, 7, nanos(span.start_time));
    put_fixed64(out, 8, nanos(span.end_time));
    put_attributes(out, 9, &span.attributes);
    put_uint(out, 10, u64::from(span.dropped_attributes_count));
    put_events(out, &span.events);
    put_links(out, &span.links);
    let (code, message) = status_parts(&span.status);
    put_nested(out, 15, SMALL, |out| {
        put_str(out, 2, message);
        put_uint(out, 3, code);
    });
    put_fixed32(
        out,
        16,
        flags(span.parent_span_is_remote, context.trace_flags().to_u8()),
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{borrow::Cow, time::Duration};

    use opentelemetry::{
        InstrumentationScope, KeyValue, StringValue,
        trace::{
            Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
        },
    };
    use opentelemetry_proto::{
        tonic::collector::trace::v1::ExportTraceServiceRequest,
        transform::{
            common::tonic::ResourceAttributesWithSchema,
            trace::tonic::group_spans_by_resource_and_scope,
        },
    };
    use opentelemetry_sdk::{
        Resource,
        trace::{SpanData, SpanEvents, SpanLinks},
    };
    use prost::Message;

    use super::*;

    fn context(trace: u128, span: u64, sampled: bool, remote: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            remote,
            state.parse::<TraceState>().unwrap(),
        )
    }

    fn every_value() -> Vec<KeyValue> {
        vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.path", String::from("/api/orders/1")),
            KeyValue::new("empty", ""),
            KeyValue::new("http.response.status_code", 200_i64),
            KeyValue::new("negative", -7_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("ratio", 0.25),
            KeyValue::new("yes", true),
            KeyValue::new("no", false),
            KeyValue::new("ünïcode \"quoted\"", "välue\n"),
            KeyValue::new("long", "x".repeat(300)),
            KeyValue::new(
                "strings",
                opentelemetry::Value::Array(
                    vec![StringValue::from("a"), StringValue::from("")].into(),
                ),
            ),
            KeyValue::new(
                "ints",
                opentelemetry::Value::Array(vec![1_i64, -1, 0, i64::MAX].into()),
            ),
            KeyValue::new(
                "floats",
                opentelemetry::Value::Array(vec![0.0, -1.5].into()),
            ),
            KeyValue::new(
                "bools",
                opentelemetry::Value::Array(vec![true, false].into()),
            ),
            KeyValue::new("", "no key"),
        ]
    }

    pub(crate) fn span(n: u64, scope: &InstrumentationScope) -> SpanData {
        let start =
            UNIX_EPOCH + Duration::new(1_764_790_402, 123_456_789) + Duration::from_millis(n);
        let mut events = SpanEvents::default();
        let mut links = SpanLinks::default();
        let mut status = Status::Unset;
        let mut parent = SpanId::INVALID;
        let mut attributes = every_value();
        match n % 5 {
            0 => {
                events.events.push(Event::new(
                    "exception",
                    start + Duration::from_micros(5),
                    vec![KeyValue::new("exception.message", "boom")],
                    2,
                ));
                events
                    .events
                    .push(Event::new("no attributes", start, vec![], 0));
                events.dropped_count = 3;
                status = Status::error("it failed");
            }
            1 => {
                links.links.push(Link::new(
                    context(7, 8, true, true, "vendor=value,other=1"),
                    vec![KeyValue::new("link.kind", "follows")],
                    1,
                ));
                links
                    .links
                    .push(Link::new(context(9, 10, false, false, ""), vec![], 0));
                links.dropped_count = 4;
                status = Status::Ok;
                parent = SpanId::from(0x00f0_67aa_0ba9_02b7);
            }
            2 => {
                attributes.clear();
                status = Status::error("");
            }
            3 => parent = SpanId::from(1),
            _ => {}
        }
        SpanData {
            span_context: context(
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736 + u128::from(n),
                n + 1,
                n.is_multiple_of(2),
                false,
                if n % 4 == 3 { "congo=t61rcWkgMzE" } else { "" },
            ),
            parent_span_id: parent,
            parent_span_is_remote: n % 3 == 1,
            span_kind: [
                SpanKind::Server,
                SpanKind::Client,
                SpanKind::Internal,
                SpanKind::Producer,
                SpanKind::Consumer,
            ][n as usize % 5]
                .clone(),
            name: if n % 6 == 5 {
                Cow::Borrowed("")
            } else {
                Cow::Owned(format!("GET /api/orders/{n}"))
            },
            start_time: start,
            end_time: if n == 7 {
                UNIX_EPOCH
            } else {
                start + Duration::from_micros(40 + n)
            },
            attributes,
            dropped_attributes_count: (n % 3) as u32,
            events,
            links,
            status,
            instrumentation_scope: scope.clone(),
        }
    }

    pub(crate) fn expected(batch: Vec<SpanData>, resource: &Resource) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch,
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    fn decoded(batch: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
        let mut out = Vec::new();
        encode_export_request(&EncodedResource::new(resource), batch, &mut out);
        ExportTraceServiceRequest::decode(out.as_slice()).expect("prost decodes the bytes")
    }

    #[test]
    fn a_batch_decodes_to_what_the_sdk_conversion_builds() {
        let resource = Resource::builder_empty()
            .with_service_name("sample-app")
            .with_attributes([
                KeyValue::new("service.version", "0.1.0"),
                KeyValue::new("service.instance.id", "host:42"),
                KeyValue::new("process.pid", 42_i64),
            ])
            .build();
        let app = InstrumentationScope::builder("sample-app").build();
        let versioned = InstrumentationScope::builder("load-gen")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
            .with_attributes([KeyValue::new("scope.attr", 1_i64)])
            .build();
        // Scopes interleaved, so grouping and its order are tested too.
        let batch: Vec<SpanData> = (0..40)
            .map(|n| span(n, if n % 7 == 3 { &versioned } else { &app }))
            .collect();
        let got = decoded(&batch, &resource);
        assert_eq!(got, expected(batch, &resource));
        assert_eq!(got.resource_spans[0].scope_spans.len(), 2);
    }

    #[test]
    fn one_span_and_a_resource_with_a_schema_url_decode_the_same() {
        let resource = Resource::builder_empty()
            .with_schema_url(
                [KeyValue::new("service.name", "x")],
                "https://example.com/s",
            )
            .build();
        let scope = InstrumentationScope::builder("").build();
        for n in 0..10 {
            let batch = vec![span(n, &scope)];
            assert_eq!(
                decoded(&batch, &resource),
                expected(batch, &resource),
                "span {n}"
            );
        }
    }

    #[test]
    fn key_values_whose_lengths_cross_a_varint_width_decode_the_same() {
        // Key-value bodies and values of 1, 2 and 3 length bytes, and the edges between them.
        let resource = Resource::builder_empty().build();
        let scope = InstrumentationScope::builder("sample-app").build();
        for len in (110..=135).chain(16_360..=16_390) {
            let mut data = span(1, &scope);
            data.attributes = vec![
                KeyValue::new("k", "x".repeat(len)),
                KeyValue::new("k".repeat(len), -1_i64),
                KeyValue::new("", "y".repeat(len)),
            ];
            let batch = vec![data];
            assert_eq!(
                decoded(&batch, &resource),
                expected(batch, &resource),
                "length {len}"
            );
        }
    }

    #[test]
    fn lengths_agree_with_prost_at_every_varint_boundary() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
            assert_eq!(out.len(), prost::encoding::encoded_len_varint(value));
        }
    }

    #[test]
    fn a_nested_length_is_canonical_whatever_was_reserved() {
        // Bodies around each width boundary, with each reservation: the prefix is always
        // prost's, so the body moved when it had to.
        for len in [
            0, 1, 127, 128, 300, 16_383, 16_384, 70_000, 2_097_151, 2_097_152,
        ] {
            let body = vec![0xab_u8; len];
            let mut expected = Vec::new();
            prost::encoding::bytes::encode(7, &body, &mut expected);
            for reserve in [SMALL, SPAN, BATCH] {
                let mut out = vec![0x55];
                put_nested(&mut out, 7, reserve, |out| out.extend_from_slice(&body));
                assert_eq!(out[0], 0x55);
                assert!(out[1..] == expected[..], "len {len}, reserved {reserve}");
            }
        }
    }
}
