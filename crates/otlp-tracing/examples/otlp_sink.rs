//! An OTLP/gRPC trace receiver for benchmarks: it decodes every `ExportTraceServiceRequest`
//! it receives into opentelemetry-proto's messages (as a collector or Tempo's distributor does
//! before it can do anything with the spans), counts the spans and drops them, and answers
//! success.
//!
//! The benchmarks run the service and its receivers on the same two cores, so a receiver's
//! own CPU per span lowers the throughput measured for "all signals". The Python receiver of
//! the end-to-end tests (scripts/otlp_sink.py) spends about 4 µs of CPU per span here, more
//! than the service's telemetry itself; a compiled receiver's cost is closer to what the real
//! backends' is, and it runs on their machines, not the service's, in a deployment.
//!
//! Protocol (what scripts/bench_sample_app.py uses): prints `{"grpc_port": N}` once listening
//! on 127.0.0.1; answers each line on standard input with `{"spans": S, "calls": C,
//! "rejected": R}` (totals so far: the spans of the export calls answered with success, the
//! calls received, the calls whose body was not one whole, valid, uncompressed gRPC message,
//! answered with `INVALID_ARGUMENT`); exits when standard input closes.
//!
//!     cargo run --release -p otlp-tracing --example otlp_sink

use std::{
    io::BufRead,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::net::TcpListener;

/// HTTP/2 flow-control window, per stream and per connection. With h2's default (64 KiB) a batch
/// of spans larger than that (512 spans are about 130 KiB) waits for a window update before the
/// rest may be sent: a round trip more per export, which at tens of thousands of spans a second
/// on two busy cores left the exporter's queue full (a third of the spans were dropped,
/// measured). grpc-go servers, which Tempo's and Alloy's receivers are, grow their windows from
/// the measured bandwidth-delay product instead.
const FLOW_CONTROL_WINDOW: u32 = 4 << 20;

#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    calls: AtomicU64,
    rejected: AtomicU64,
}

/// The spans in one gRPC request body (compressed flag, 4-byte big-endian length, the
/// protobuf), or why it is not an export request.
fn spans_in(mut body: &[u8]) -> Result<u64, String> {
    if body.len() < 5 {
        return Err(format!("{} bytes is no gRPC message", body.len()));
    }
    if body.get_u8() != 0 {
        return Err("compressed messages are not accepted".into());
    }
    let len = body.get_u32() as usize;
    if body.len() != len {
        return Err(format!(
            "the message says {len} bytes and {} follow",
            body.len()
        ));
    }
    let request = ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())?;
    Ok(request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum())
}

async fn answer(
    counts: &Counts,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) -> Result<(), h2::Error> {
    let mut body = request.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let head = Response::builder()
        .header("content-type", "application/grpc")
        .body(())
        .expect("a valid response head");
    let mut trailers = HeaderMap::new();
    counts.calls.fetch_add(1, Ordering::Relaxed);
    match spans_in(&data) {
        Ok(spans) => {
            let mut stream = respond.send_response(head, false)?;
            // An empty ExportTraceServiceResponse: a zero-length message.
            stream.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), false)?;
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            stream.send_trailers(trailers)?;
            // Counted once answered: an export whose answer could not be sent is retried by the
            // exporter, and counting it here too would count its spans twice.
            counts.spans.fetch_add(spans, Ordering::Relaxed);
            Ok(())
        }
        Err(problem) => {
            counts.rejected.fetch_add(1, Ordering::Relaxed);
            let mut stream = respond.send_response(head, false)?;
            trailers.insert("grpc-status", http::HeaderValue::from_static("3"));
            let message = http::HeaderValue::from_str(&problem)
                .unwrap_or(http::HeaderValue::from_static("invalid export request"));
            trailers.insert("grpc-message", message);
            stream.send_trailers(trailers)
        }
    }
}

async fn serve(listener: TcpListener, counts: Arc<Counts>) {
    while let Ok((socket, _)) = listener.accept().await {
        let counts = counts.clone();
        tokio::spawn(async move {
            let Ok(mut connection) = h2::server::Builder::new()
                .initial_window_size(FLOW_CONTROL_WINDOW)
                .initial_connection_window_size(FLOW_CONTROL_WINDOW)
                .handshake(socket)
                .await
            else {
                return;
            };
            while let Some(Ok((request, respond))) = connection.accept().await {
                let counts = counts.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(&counts, request, respond).await {
                        eprintln!("otlp_sink: a call failed: {e}");
                    }
                });
            }
        });
    }
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let counts = Arc::new(Counts::default());
    let serving = counts.clone();
    std::thread::Builder::new()
        .name("otlp-sink".into())
        .spawn(move || runtime.block_on(serve(listener, serving)))?;
    println!("{{\"grpc_port\": {port}}}");
    for line in std::io::stdin().lock().lines() {
        line?;
        println!(
            "{{\"spans\": {}, \"calls\": {}, \"rejected\": {}}}",
            counts.spans.load(Ordering::Relaxed),
            counts.calls.load(Ordering::Relaxed),
            counts.rejected.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        body
    }

    #[test]
    fn spans_are_counted_across_resources_and_scopes_and_bad_bodies_are_refused() {
        let scope = |spans: usize| ScopeSpans {
            spans: vec![Span::default(); spans],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource::default()),
                    scope_spans: vec![scope(2), scope(3)],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![scope(1)],
                    ..Default::default()
                },
            ],
        }
        .encode_to_vec();
        assert_eq!(spans_in(&framed(&request)), Ok(6));
        assert_eq!(spans_in(&framed(&[])), Ok(0));
        let mut compressed = framed(&request);
        compressed[0] = 1;
        assert!(spans_in(&compressed).is_err());
        assert!(spans_in(&framed(&request)[..10]).is_err(), "cut short");
        assert!(spans_in(&[0, 0]).is_err());
        assert!(
            spans_in(&framed(&[0xff, 0xff, 0xff])).is_err(),
            "not protobuf"
        );
    }
}
