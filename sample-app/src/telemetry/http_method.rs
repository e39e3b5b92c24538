//! The request method as the OpenTelemetry HTTP semantic conventions record it: one of the
//! methods of RFC 9110 (plus PATCH), or `_OTHER` for anything else, with the original kept
//! (shortened) only where it cannot become a label. Without this, every made-up method a client
//! sends would become a new metric series and a new span name — a probe with 20,000 methods
//! grew `/metrics` to 52 MB.
//!
//! Semantic conventions, HTTP spans and metrics (v1.26+): `http.request.method` "MUST be set to
//! `_OTHER`" for methods the instrumentation does not know, `http.request.method_original`
//! holds the original, and the span name uses `HTTP` in place of the method.

use actix_web::http::Method;

/// The value recorded for a method outside the known set.
pub const OTHER: &str = "_OTHER";

/// The longest original method kept in a span attribute or log field.
pub const MAX_ORIGINAL_LEN: usize = 32;

/// A request method, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestMethod<'a> {
    /// `GET` … `PATCH`, or `_OTHER`: the value of every label and attribute.
    pub normalised: &'static str,
    /// The method as sent, when it was not a known one (at most [`MAX_ORIGINAL_LEN`] bytes).
    pub original: Option<&'a str>,
}

impl<'a> RequestMethod<'a> {
    pub fn of(method: &'a Method) -> Self {
        let known = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::CONNECT => "CONNECT",
            Method::OPTIONS => "OPTIONS",
            Method::TRACE => "TRACE",
            Method::PATCH => "PATCH",
            _ => {
                return Self {
                    normalised: OTHER,
                    original: Some(shorten(method.as_str())),
                };
            }
        };
        Self {
            normalised: known,
            original: None,
        }
    }

    /// The method part of a span name: the method, or `HTTP` for an unknown one.
    pub fn span_name_prefix(&self) -> &'static str {
        if self.original.is_some() {
            "HTTP"
        } else {
            self.normalised
        }
    }
}

fn shorten(raw: &str) -> &str {
    if raw.len() <= MAX_ORIGINAL_LEN {
        return raw;
    }
    let mut end = MAX_ORIGINAL_LEN;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    &raw[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nine_known_methods_are_kept_as_they_are() {
        for name in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            let m = RequestMethod::of(&method);
            assert_eq!((m.normalised, m.original), (name, None));
            assert_eq!(m.span_name_prefix(), name);
        }
    }

    #[test]
    fn any_other_method_is_other_and_keeps_a_short_original() {
        let method = Method::from_bytes(b"X1").unwrap();
        let m = RequestMethod::of(&method);
        assert_eq!((m.normalised, m.original), ("_OTHER", Some("X1")));
        assert_eq!(m.span_name_prefix(), "HTTP");

        let long = "Y".repeat(500);
        let method = Method::from_bytes(long.as_bytes()).unwrap();
        assert_eq!(
            RequestMethod::of(&method).original.map(str::len),
            Some(MAX_ORIGINAL_LEN)
        );
        // Methods are case-sensitive: `get` is not GET.
        let method = Method::from_bytes(b"get").unwrap();
        assert_eq!(RequestMethod::of(&method).normalised, "_OTHER");
    }
}
