//! Requests refused before routing — a head actix could not parse (400), one too large (431),
//! one that did not arrive in time (408) — get the JSON body every other error has, are counted
//! in `http_server_protocol_errors_total{reason}` and are logged, one `warn` line each.
//!
//! Actix's HTTP/1 dispatcher answers these itself, with an empty body
//! (`actix-http-3.20.0/src/h1/dispatcher.rs:1029-1034` for 431, `:1049-1052` for 400,
//! `:1076-1079` for 408), and no hook lets an application change that answer or learn of it: the
//! parse error is only the dispatcher future's output (`:1464-1467`), which actix-web's
//! `HttpServer` lets actix-server discard (`actix-server-2.10.0/src/service.rs:74-75`). So the service runs its own copy of `HttpServer::listen`
//! ([`super::listen`]) that keeps the output, and its stream ([`super::connection`]) holds
//! back the empty answer ([`actix_error_answer`]); [`answer`] writes the JSON one in its place.

use std::time::{Duration, SystemTime};

use actix_http::{
    error::{DispatchError, ParseError},
    header::HttpDate,
};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::connection::{Connection, Refusal};
use crate::telemetry::metrics::AppMetrics;

/// Why a request was refused before routing: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    InvalidMethod,
    InvalidTarget,
    InvalidVersion,
    InvalidHeader,
    HeadTooLarge,
    RequestTimeout,
    Malformed,
}

impl Reason {
    /// Every reason: the label's values, all exported from start-up (a rate needs the zero).
    pub const ALL: [Self; 7] = [
        Self::InvalidMethod,
        Self::InvalidTarget,
        Self::InvalidVersion,
        Self::InvalidHeader,
        Self::HeadTooLarge,
        Self::RequestTimeout,
        Self::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidMethod => "invalid_method",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidVersion => "invalid_version",
            Self::InvalidHeader => "invalid_header",
            Self::HeadTooLarge => "head_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::Malformed => "malformed_request",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::HeadTooLarge => 431,
            Self::RequestTimeout => 408,
            _ => 400,
        }
    }

    fn detail(self, head_timeout: Duration) -> String {
        match self {
            Self::InvalidMethod => "the request method is not a valid token".to_owned(),
            Self::InvalidTarget => "the request target is not a valid URI".to_owned(),
            Self::InvalidVersion => "the HTTP version is not HTTP/1.0 or HTTP/1.1".to_owned(),
            // actix-http reports all of these as one `ParseError::Header`
            // (actix-http-3.20.0/src/h1/decoder.rs:101-160, :307-336).
            Self::InvalidHeader => "a header is malformed (a control character, an invalid name \
                 or value, an invalid Content-Length), repeated where only one is allowed \
                 (Content-Length, Host, Transfer-Encoding), contradicts another \
                 (Content-Length with Transfer-Encoding), or missing (Host in HTTP/1.1)"
                .to_owned(),
            Self::HeadTooLarge => {
                "the request head is too large (over 96 headers or 128 KiB)".to_owned()
            }
            Self::RequestTimeout => format!(
                "the request head did not arrive within {} ms",
                head_timeout.as_millis()
            ),
            Self::Malformed => "the request could not be parsed as HTTP/1.1".to_owned(),
        }
    }

    fn of_parse_error(error: &ParseError) -> Self {
        match error {
            ParseError::Method => Self::InvalidMethod,
            ParseError::Uri(_) => Self::InvalidTarget,
            ParseError::Version => Self::InvalidVersion,
            ParseError::Header => Self::InvalidHeader,
            ParseError::TooLarge => Self::HeadTooLarge,
            ParseError::Timeout => Self::RequestTimeout,
            _ => Self::Malformed,
        }
    }

    /// The reason for an empty answer held back when the dispatcher's output said nothing
    /// more (actix's first-head timer ends the connection without an error).
    fn of_status(status: u16) -> Self {
        match status {
            408 => Self::RequestTimeout,
            431 => Self::HeadTooLarge,
            _ => Self::Malformed,
        }
    }
}

/// Whether `bytes`, about to be written, are one of actix's own empty-bodied answers (400, 408,
/// 431 with `content-length: 0` and nothing after the head); returns its status. The
/// application never answers these statuses without a body (every error is JSON, and a HEAD
/// answer keeps its body's length), so this cannot catch one of its answers. The dispatcher
/// writes such an answer on its own, as the connection's last bytes.
pub fn actix_error_answer(bytes: &[u8]) -> Option<u16> {
    let status = bytes
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| bytes.strip_prefix(b"HTTP/1.0 "))?
        .get(..4)?;
    let status = match status {
        b"400 " => 400,
        b"408 " => 408,
        b"431 " => 431,
        _ => return None,
    };
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let empty = bytes[..head_end]
        .windows(21)
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    (head_end == bytes.len() && empty).then_some(status)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: String,
}

/// The JSON answer for `reason`, as bytes on the wire; the connection closes after it.
fn response(reason: Reason, head_timeout: Duration) -> Vec<u8> {
    let body = serde_json::to_vec(&ErrorBody {
        error: reason.as_str(),
        detail: reason.detail(head_timeout),
    })
    .unwrap_or_default();
    let status = reason.status();
    let phrase = actix_web::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\ndate: {}\r\n\r\n",
        body.len(),
        HttpDate::from(SystemTime::now())
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Settings [`answer`] needs.
#[derive(Clone, Copy, Debug)]
pub struct AnswerSettings {
    pub head_timeout: Duration,
    /// How long writing the answer may take (the client disconnect timeout).
    pub write_timeout: Duration,
}

/// After the dispatcher is done with a connection: if it refused a request, counts and logs
/// why, and writes the JSON answer in place of actix's empty one.
pub async fn answer(
    connection: &Connection,
    output: &Result<(), DispatchError>,
    metrics: &AppMetrics,
    settings: AnswerSettings,
) {
    let parse_error = match output {
        Err(DispatchError::Parse(e)) => Some(e),
        _ => None,
    };
    let reason = match (parse_error, connection.refusal()) {
        (Some(e), _) => Reason::of_parse_error(e),
        (None, Some(Refusal::HeadTimedOut)) => Reason::RequestTimeout,
        (None, Some(Refusal::HeldAnswer(status))) => Reason::of_status(status),
        (None, None) => return,
    };
    metrics.count_protocol_error(reason.as_str());
    let detail = match parse_error {
        Some(e) => e.to_string(),
        None => reason.detail(settings.head_timeout),
    };
    tracing::warn!(
        reason = reason.as_str(),
        status = reason.status(),
        detail,
        "request refused before routing"
    );
    // A refusal seen only in the output (its empty answer went out with an earlier one, say)
    // has no socket left to answer on.
    let Some(mut socket) = connection.take_socket() else {
        return;
    };
    let bytes = response(reason, settings.head_timeout);
    let _ = tokio::time::timeout(settings.write_timeout, async {
        socket.write_all(&bytes).await?;
        socket.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actix_own_empty_answers_are_recognised_and_nothing_else() {
        let date = "date: Thu, 03 Dec 2026 20:41:37 GMT\r\n\r\n";
        for (status, line) in [
            (400, "400 Bad Request"),
            (408, "408 Request Timeout"),
            (431, "431 Request Header Fields Too Large"),
        ] {
            let answer =
                format!("HTTP/1.1 {line}\r\ncontent-length: 0\r\nconnection: close\r\n{date}");
            assert_eq!(actix_error_answer(answer.as_bytes()), Some(status));
        }
        for other in [
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 80\r\nconnection: close\r\n{date}"
            ),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n{date}{{}}"),
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n{date}"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{date}HTTP/1.1 200 OK"),
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n".to_owned(),
            "{\"error\": \"HTTP/1.1 400 \"}".to_owned(),
        ] {
            assert_eq!(actix_error_answer(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn the_answer_is_json_naming_the_reason() {
        let bytes = response(Reason::InvalidHeader, Duration::from_secs(5));
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "invalid_header");
        assert!(body["detail"].as_str().unwrap().contains("Content-Length"));
        let timeout = String::from_utf8(response(
            Reason::RequestTimeout,
            Duration::from_millis(5000),
        ))
        .unwrap();
        assert!(timeout.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        assert!(timeout.contains("within 5000 ms"));
    }
}
