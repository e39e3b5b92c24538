//! The direct OTLP/gRPC exporter against a gRPC server written here on `h2`, so each answer
//! (success, a retryable or a final error, a partial success) can be chosen per call and what
//! arrives can be read back: the request decoded with opentelemetry-proto's types, its path,
//! content type and metadata, and how many attempts an export made.

#[path = "../../../test-support/unused_port.rs"]
mod unused_port;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Response};
use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkError,
    trace::{SpanData, SpanEvents, SpanExporter, SpanLinks},
};
use otlp_tracing::grpc::{GrpcConfig, GrpcSpanExporter};
use prost::Message;
use tokio::net::TcpListener;

/// What the server answers to one call: a gRPC status code (0 = OK) and, for OK, the
/// response's partial success.
#[derive(Clone, Copy)]
struct Answer {
    code: u8,
    rejected: i64,
}

const OK: Answer = Answer {
    code: 0,
    rejected: 0,
};
const UNAVAILABLE: Answer = Answer {
    code: 14,
    rejected: 0,
};
const INVALID_ARGUMENT: Answer = Answer {
    code: 3,
    rejected: 0,
};

#[derive(Debug)]
struct Call {
    path: String,
    content_type: String,
    metadata: HeaderMap,
    request: ExportTraceServiceRequest,
}

#[derive(Default)]
struct Server {
    /// Answers in order; the last one repeats.
    answers: Mutex<Vec<Answer>>,
    calls: Mutex<Vec<Call>>,
}

impl Server {
    async fn start(answers: Vec<Answer>) -> (Arc<Self>, String) {
        let server = Arc::new(Self {
            answers: Mutex::new(answers),
            calls: Mutex::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let serving = server.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let serving = serving.clone();
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(socket).await.unwrap();
                    while let Some(Ok((request, respond))) = connection.accept().await {
                        let serving = serving.clone();
                        tokio::spawn(async move { serving.answer(request, respond).await });
                    }
                });
            }
        });
        (server, endpoint)
    }

    async fn answer(
        &self,
        request: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
    ) {
        let (parts, mut body) = request.into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        // A gRPC message: compressed flag, 4-byte big-endian length, the protobuf.
        let mut frame = data.as_slice();
        assert_eq!(frame.get_u8(), 0, "the message is not compressed");
        let len = frame.get_u32() as usize;
        assert_eq!(frame.len(), len, "one whole message per call");
        let call = Call {
            path: parts.uri.path().to_owned(),
            content_type: parts.headers[http::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned(),
            request: ExportTraceServiceRequest::decode(frame).expect("a valid request"),
            metadata: parts.headers,
        };
        let answer = {
            let mut answers = self.answers.lock().unwrap();
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0]
            }
        };
        self.calls.lock().unwrap().push(call);

        let head = Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", answer.code.to_string().parse().unwrap());
        if answer.code != 0 {
            let mut stream = respond.send_response(head, false).unwrap();
            trailers.insert("grpc-message", "chosen by the test".parse().unwrap());
            stream.send_trailers(trailers).unwrap();
            return;
        }
        let response = ExportTraceServiceResponse {
            partial_success: (answer.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: answer.rejected,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        let mut message = vec![0];
        message.extend_from_slice(&(response.len() as u32).to_be_bytes());
        message.extend_from_slice(&response);
        let mut stream = respond.send_response(head, false).unwrap();
        stream.send_data(Bytes::from(message), false).unwrap();
        stream.send_trailers(trailers).unwrap();
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap()
    }
}

fn exporter(endpoint: &str, vars: &[(&str, &str)]) -> GrpcSpanExporter {
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    };
    let config = GrpcConfig::from_env(endpoint, Duration::from_secs(10), env)
        .unwrap()
        .expect("a plaintext endpoint is exported directly");
    let mut exporter = GrpcSpanExporter::new(&config).unwrap();
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name("sample-app")
            .build(),
    );
    exporter
}

fn span(n: u64) -> SpanData {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_800_000 + n);
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736 + u128::from(n)),
            SpanId::from(0x00f0_67aa_0ba9_02b7 + n),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: format!("GET /api/orders/{n}").into(),
        start_time: start,
        end_time: start + Duration::from_millis(3),
        attributes: vec![KeyValue::new("http.response.status_code", 200_i64)],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("sample-app").build(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_arrives_whole_with_the_configured_metadata() {
    let (server, endpoint) = Server::start(vec![OK]).await;
    let exporter = exporter(
        &endpoint,
        &[(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "x-scope-orgid=team-a,authorization=Basic%20abc",
        )],
    );
    exporter.export((0..3).map(span).collect()).await.unwrap();

    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        call.path,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    assert_eq!(call.content_type, "application/grpc");
    assert_eq!(call.metadata["x-scope-orgid"], "team-a");
    assert_eq!(call.metadata["authorization"], "Basic abc");
    let resource_spans = &call.request.resource_spans;
    assert_eq!(resource_spans.len(), 1);
    let resource = resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(resource.attributes[0].key, "service.name");
    let spans = &resource_spans[0].scope_spans[0].spans;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "GET /api/orders/0",
            "GET /api/orders/1",
            "GET /api/orders/2"
        ]
    );
    assert_eq!(spans[1].span_id, 0x00f0_67aa_0ba9_02b8_u64.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_collector_is_retried_until_it_answers() {
    let (server, endpoint) = Server::start(vec![UNAVAILABLE, UNAVAILABLE, OK]).await;
    exporter(&endpoint, &[])
        .export(vec![span(1)])
        .await
        .unwrap();
    let calls = server.calls();
    assert_eq!(calls.len(), 3, "two refusals, then the export");
    assert!(
        calls.iter().all(|c| c.request == calls[0].request),
        "every attempt sends the same batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_after_three_and_the_error_names_the_code() {
    let (server, endpoint) = Server::start(vec![UNAVAILABLE]).await;
    let err = exporter(&endpoint, &[])
        .export(vec![span(1)])
        .await
        .unwrap_err();
    assert_eq!(
        server.calls().len(),
        4,
        "the first attempt and three retries"
    );
    assert!(
        matches!(&err, OTelSdkError::InternalFailure(m) if m.contains("Unavailable")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_error_is_not_retried() {
    let (server, endpoint) = Server::start(vec![INVALID_ARGUMENT]).await;
    let err = exporter(&endpoint, &[])
        .export(vec![span(1)])
        .await
        .unwrap_err();
    assert_eq!(server.calls().len(), 1);
    assert!(
        matches!(&err, OTelSdkError::InternalFailure(m) if m.contains("InvalidArgument")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_success_is_a_success_and_after_shutdown_nothing_is_sent() {
    let (server, endpoint) = Server::start(vec![Answer {
        code: 0,
        rejected: 2,
    }])
    .await;
    let exporter = exporter(&endpoint, &[]);
    exporter.export(vec![span(1), span(2)]).await.unwrap();
    exporter
        .shutdown_with_timeout(Duration::from_secs(1))
        .unwrap();
    let after = exporter.export(vec![span(3)]).await.unwrap_err();
    assert!(matches!(after, OTelSdkError::AlreadyShutdown), "{after:?}");
    assert_eq!(server.calls().len(), 1);
}

/// No export waits longer than this here; each case is far shorter (a hang fails, not blocks).
const HANG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_not_there_fails_the_export_without_hanging() {
    // A port nothing listens on: connection refused, retried as Unavailable, then given up.
    let port = unused_port::unused_port();
    let exporter = exporter(&format!("http://127.0.0.1:{port}"), &[]);
    let err = tokio::time::timeout(HANG, exporter.export(vec![span(1)]))
        .await
        .expect("the export ends")
        .unwrap_err();
    assert!(
        matches!(&err, OTelSdkError::InternalFailure(m) if m.contains("Unavailable")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_accepts_and_never_answers_times_the_export_out() {
    // Accepts connections and holds them without a word, not even HTTP/2's handshake.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let exporter = exporter(&endpoint, &[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "300")]);
    let err = tokio::time::timeout(HANG, exporter.export(vec![span(1)]))
        .await
        .expect("the export ends")
        .unwrap_err();
    assert!(
        matches!(err, OTelSdkError::Timeout(t) if t == Duration::from_millis(300)),
        "{err:?}"
    );
    held.abort();
}
