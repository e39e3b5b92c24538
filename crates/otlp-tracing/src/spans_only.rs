//! [`SpansOnly`]: a `tracing` layer (the OpenTelemetry one) that sees spans but no events.
//!
//! Log events already reach Loki with their span's ids, so copying each one into its span as
//! an OpenTelemetry event would double the data. The usual way to keep events away from
//! tracing-opentelemetry's layer is a per-layer filter (`.with_filter(filter_fn(|m|
//! m.is_span()))`), and that costs on every request far more than the one decision it makes:
//!
//! - a per-layer filter that rejects events makes the subscriber's interest in every event
//!   callsite `sometimes` (tracing-subscriber 0.3.23 src/layer/layered.rs:470), so every event
//!   asks every layer's `enabled` again instead of using the callsite's cached interest;
//! - a per-layer filter without a level hint leaves the whole subscriber without one
//!   (`pick_level_hint`), so the global maximum level was TRACE whatever `RUST_LOG` said;
//! - each span then carries a filter bitmap, and every enter, exit, record and close of a span
//!   looks the span up once more to read it (`Context::if_enabled_for`).
//!
//! This wrapper makes the same decision with no bookkeeping: it forwards every span callback
//! and drops `on_event`. The interest in a callsite stays what the global filter says
//! (`always` or `never` for `RUST_LOG` directives without span or field filters), so an event
//! costs no `enabled` pass at all. What the OpenTelemetry layer exports is unchanged.

use std::any::TypeId;

use tracing::{Event, Metadata, Subscriber, span, subscriber::Interest};
use tracing_subscriber::{Layer, filter::LevelFilter, layer::Context, registry::LookupSpan};

/// `layer` with every span callback and no events (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct SpansOnly<L> {
    layer: L,
}

impl<L> SpansOnly<L> {
    pub fn new(layer: L) -> Self {
        Self { layer }
    }
}

impl<S, L> Layer<S> for SpansOnly<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.layer.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.layer.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.is_event() {
            // Whether an event is recorded is the other layers' business.
            Interest::always()
        } else {
            self.layer.register_callsite(metadata)
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        metadata.is_event() || self.layer.enabled(metadata, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.layer.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.layer.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.layer.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.layer.on_follows_from(span, follows, ctx);
    }

    fn on_event(&self, _event: &Event<'_>, _ctx: Context<'_, S>) {}

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.layer.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.layer.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.layer.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.layer.on_id_change(old, new, ctx);
    }

    // The OpenTelemetry layer answers `downcast_raw` for its `WithContext`, which is how
    // `OpenTelemetrySpanExt` (`span.context()`, `set_parent`) finds it: the wrapper must pass
    // the question on, as tracing-subscriber's own `Filtered` does.
    #[allow(unsafe_code)]
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else {
            // SAFETY: the inner layer's answer is a pointer to a value of the type `id` names,
            // valid as long as `self.layer` is, which is as long as `self` is: exactly the contract
            // `downcast_raw` asks of us, passed through unchanged.
            unsafe { self.layer.downcast_raw(id) }
        }
    }
}
