//! JSON logs: one object per line with `timestamp` (RFC 3339, UTC), `level`, `target`,
//! `message`, then `trace_id` and `span_id` of the span the event happened in (so Loki can link
//! each line to its trace), then the event's own fields. Alloy parses exactly these keys.
//! The span is the event's `tracing` span when it has an OpenTelemetry span, else the request
//! being served on the thread ([`RequestScope`]: the server span, which has no `tracing` span).
//!
//! Lines are written straight into a reused per-thread buffer: the access log runs on every
//! request, so a line must not cost a map of boxed JSON values. For the same reason a request's
//! ids are read from its scope as numbers, the timestamp's date and time are formatted once a
//! second, and strings that need no escaping are copied as they are.
//!
//! [`RequestScope`]: super::request_scope::RequestScope

use std::{
    cell::RefCell,
    io::Write,
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use opentelemetry::trace::TraceContextExt;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tracing::{
    Event, Subscriber,
    dispatcher::WeakDispatch,
    field::{Field, Visit},
};
use tracing_log::NormalizeEvent;
use tracing_subscriber::{Layer, fmt::MakeWriter, layer::Context, registry::LookupSpan};

use super::{ids::SpanIds, request_scope};

/// Keys the layer writes itself; an event field with one of these names is dropped.
const RESERVED: [&str; 6] = [
    "timestamp",
    "level",
    "target",
    "message",
    "trace_id",
    "span_id",
];

/// A `tracing` layer that writes every event as one JSON line.
pub struct JsonLogLayer<W> {
    make_writer: W,
    /// The subscriber this layer is part of, to ask the OpenTelemetry layer for span ids.
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> JsonLogLayer<W> {
    pub fn new(make_writer: W) -> Self {
        Self {
            make_writer,
            dispatch: OnceLock::new(),
        }
    }

    fn trace_ids<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>) -> Option<SpanIds>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let in_span = ctx.event_span(event).and_then(|span| {
            let dispatch = self.dispatch.get()?.upgrade()?;
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            SpanIds::of(cx.span().span_context())
        });
        in_span.or_else(|| request_scope::current().map(|scope| scope.ids))
    }
}

/// Per-thread buffers, reused so a log line costs no allocation once warm.
#[derive(Default)]
struct LineBuffers {
    line: Vec<u8>,
    fields: Vec<u8>,
    message: String,
    clock: Clock,
}

/// The `YYYY-MM-DDTHH:MM:SS` of the last second a line was written in.
#[derive(Default)]
struct Clock {
    second: Option<i64>,
    date_time: Vec<u8>,
}

impl Clock {
    /// Appends the time `since_epoch` in RFC 3339, UTC, exactly as `time`'s `Rfc3339` writes
    /// it: nanoseconds without trailing zeros (none at all on a whole second), then `Z`.
    fn push(&mut self, out: &mut Vec<u8>, since_epoch: std::time::Duration) {
        let second = since_epoch.as_secs() as i64;
        if self.second != Some(second) {
            let text = OffsetDateTime::from_unix_timestamp(second)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_default();
            self.date_time.clear();
            self.date_time
                .extend_from_slice(text.as_bytes().get(..19).unwrap_or_default());
            self.second = Some(second);
        }
        out.extend_from_slice(&self.date_time);
        let mut nanos = since_epoch.subsec_nanos();
        if nanos != 0 {
            let mut digits = 9;
            while nanos.is_multiple_of(10) {
                nanos /= 10;
                digits -= 1;
            }
            out.push(b'.');
            let start = out.len();
            out.resize(start + digits, b'0');
            for slot in out[start..].iter_mut().rev() {
                *slot = b'0' + (nanos % 10) as u8;
                nanos /= 10;
            }
        }
        out.push(b'Z');
    }
}

thread_local! {
    static BUFFERS: RefCell<LineBuffers> = RefCell::default();
}

impl<S, W> Layer<S> for JsonLogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Events bridged from the `log` crate carry their real target in normalized metadata.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let trace_ids = self.trace_ids(event, &ctx);
        BUFFERS.with_borrow_mut(|buffers| {
            let mut fields = FieldWriter {
                message: std::mem::take(&mut buffers.message),
                out: std::mem::take(&mut buffers.fields),
            };
            fields.out.clear();
            fields.message.clear();
            event.record(&mut fields);

            let out = &mut buffers.line;
            out.clear();
            out.extend_from_slice(b"{\"timestamp\":\"");
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            buffers.clock.push(out, now);
            out.push(b'"');
            for (key, value) in [
                (",\"level\":", level_name(metadata.level())),
                (",\"target\":", metadata.target()),
                (",\"message\":", fields.message.as_str()),
            ] {
                out.extend_from_slice(key.as_bytes());
                push_json_str(out, value);
            }
            if let Some(ids) = trace_ids {
                out.extend_from_slice(b",\"trace_id\":\"");
                out.extend_from_slice(&ids.trace_hex());
                out.extend_from_slice(b"\",\"span_id\":\"");
                out.extend_from_slice(&ids.span_hex());
                out.push(b'"');
            }
            out.extend_from_slice(&fields.out);
            out.extend_from_slice(b"}\n");
            buffers.fields = fields.out;
            buffers.message = fields.message;
            // One write per line keeps lines whole when several threads log at once (the
            // service's writer copies it into the next batch, `log_writer`).
            let _ = self.make_writer.make_writer_for(metadata).write_all(out);
        });
    }
}

fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

fn push_json_str(out: &mut Vec<u8>, value: &str) {
    // Most strings (keys, targets, routes, messages) need no escaping: copy them.
    if !needs_escape(value.as_bytes()) {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        return;
    }
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Whether `bytes` holds one JSON must escape: a control character, `"` or `\\`. Eight bytes
/// at a time: a byte-by-byte scan was a sixth of the access line's instructions. Per word, `x -
/// 0x2020…` borrows into the high bit of a byte below 0x20 that had it clear, and a byte equal
/// to `q` is a zero byte of `x ^ qq…` (the "has less than" and "has zero byte" tests of Bit
/// Twiddling Hacks: exact for "is there one", which is all this asks).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let escapes = |word: [u8; 8]| {
        let x = u64::from_ne_bytes(word);
        below(x, 0x20)
            | below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            != 0
    };
    let mut words = bytes.chunks_exact(8);
    if words
        .by_ref()
        .any(|word| escapes(word.try_into().unwrap_or_default()))
    {
        return true;
    }
    let rest = words.remainder();
    if rest.is_empty() {
        false
    } else if let Some(last) = bytes.last_chunk::<8>() {
        // The last eight bytes again, overlapping the words already tested.
        escapes(*last)
    } else {
        // Shorter than a word: padded with a byte that needs nothing.
        let mut word = [b'a'; 8];
        word[..rest.len()].copy_from_slice(rest);
        escapes(word)
    }
}

/// Writes an event's fields as `,"key":value` pairs and keeps its message aside.
struct FieldWriter {
    /// The message (empty when the event has none).
    message: String,
    out: Vec<u8>,
}

impl FieldWriter {
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("log.") || RESERVED.contains(&name) {
            return false;
        }
        self.out.push(b',');
        push_json_str(&mut self.out, name);
        self.out.push(b':');
        true
    }

    fn number(&mut self, field: &Field, value: impl serde::Serialize) {
        if self.key(field) {
            // Numbers and booleans into a Vec cannot fail (serde_json: itoa and ryu).
            let _ = serde_json::to_writer(&mut self.out, &value);
        }
    }

    fn text(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.clear();
            self.message.push_str(value);
        } else if self.key(field) {
            push_json_str(&mut self.out, value);
        }
    }
}

impl Visit for FieldWriter {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.number(field, value);
        } else {
            self.text(field, &value.to_string());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, &format!("{value:#}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            // The message (`format_args!`) straight into its reused buffer.
            use std::fmt::Write as _;
            self.message.clear();
            let _ = write!(self.message, "{value:?}");
        } else {
            self.text(field, &format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn a_line_outside_any_span_has_the_standard_keys_then_fields_and_no_trace_ids() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(JsonLogLayer::new(out.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                order_id = 7u64,
                item = "widget",
                ratio = 0.5,
                ok = true,
                level = "dropped",
                "order \"stored\""
            );
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1);
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "target",
                "message",
                "order_id",
                "item",
                "ratio",
                "ok"
            ]
        );
        assert_eq!(line["level"], "warn");
        assert_eq!(line["message"], "order \"stored\"");
        assert_eq!(line["order_id"], 7);
        assert_eq!(
            (line["ratio"].as_f64(), line["ok"].as_bool()),
            (Some(0.5), Some(true))
        );
        assert!(OffsetDateTime::parse(line["timestamp"].as_str().unwrap(), &Rfc3339).is_ok());
    }

    /// The `(trace_id, span_id)` of each line, `None` for a line without them.
    fn ids_of(out: &Captured) -> Vec<Option<(String, String)>> {
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).unwrap();
                let id = |key: &str| line[key].as_str().map(str::to_owned);
                id("trace_id").zip(id("span_id"))
            })
            .collect()
    }

    #[test]
    fn a_line_carries_its_own_spans_ids_else_the_requests_it_is_written_for() {
        use crate::telemetry::request_scope::RequestScope;
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceFlags, TraceId, TraceState, TracerProvider as _,
        };
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry()
            .with(otlp_tracing::SpansOnly::new(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("test"))
                    .with_context_activation(false),
            ))
            .with(JsonLogLayer::new(out.clone()));
        // A server span as the middleware keeps it: its context attached, its scope entered.
        let server = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let scope = RequestScope {
            ids: SpanIds::of(&server).unwrap(),
            profile: None,
        };
        let handler_span_id = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before the request");
            let _attached = opentelemetry::Context::new()
                .with_remote_span_context(server.clone())
                .attach();
            let _entered = scope.enter();
            tracing::info!("in the handler");
            tracing::info!(parent: None, "the access line");
            let handler = tracing::info_span!("handler work");
            handler.in_scope(|| tracing::info!("in the handler's span"));
            let id = handler
                .context()
                .span()
                .span_context()
                .span_id()
                .to_string();
            drop(_entered);
            tracing::info!("after the request");
            id
        });
        let request = Some((
            "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            "00f067aa0ba902b7".to_owned(),
        ));
        let in_handler_span = Some((
            "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            handler_span_id,
        ));
        assert_ne!(
            in_handler_span, request,
            "the handler's span is a span of its own"
        );
        assert_eq!(
            ids_of(&out),
            [None, request.clone(), request, in_handler_span, None]
        );
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_written_exactly_as_the_time_crate_writes_rfc3339() {
        let mut clock = Clock::default();
        for (secs, nanos) in [
            (1_764_790_402, 0),
            (1_764_790_402, 1),
            (1_764_790_402, 120_000_000),
            (1_764_790_402, 999_999_999),
            (1_764_790_403, 5_000),
            (0, 10),
        ] {
            let mut out = Vec::new();
            clock.push(&mut out, Duration::new(secs, nanos));
            let expected = OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(secs) * 1_000_000_000 + i128::from(nanos),
            )
            .unwrap()
            .format(&Rfc3339)
            .unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn the_word_scan_finds_exactly_the_bytes_json_escapes() {
        let naive = |bytes: &[u8]| bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        // Every byte value at every position of every length up to three words, in a run of
        // bytes that need nothing (and next to high bytes, whose borrows must not count).
        for len in 1..=24 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    for fill in [b'a', 0xff, 0x20, 0x21] {
                        let mut bytes = vec![fill; len];
                        bytes[at] = byte;
                        assert_eq!(needs_escape(&bytes), naive(&bytes), "{bytes:?}");
                    }
                }
            }
        }
        assert!(!needs_escape(b""));
    }

    #[test]
    fn strings_are_escaped_only_when_they_must_be() {
        for text in [
            "request completed",
            "a \"quoted\" \\ path\n",
            "tab\there",
            "ünïcode",
        ] {
            let mut out = Vec::new();
            push_json_str(&mut out, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text}");
        }
    }
}
