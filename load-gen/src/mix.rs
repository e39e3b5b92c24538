//! What to send: a weighted mix of requests whose paths and bodies are small templates,
//! `{{int 1 200}}` (a random integer, inclusive) and `{{pick a,b,c}}` (one of the choices),
//! filled from a seeded generator so a run with `--seed` is reproducible.
//!
//! A mix file is TOML with one `[[request]]` table per entry (see `load-gen/mixes/`).

use std::{collections::BTreeMap, path::Path, sync::Arc};

use anyhow::{Context, bail};
use rand::{Rng, rngs::SmallRng};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub name: String,
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    pub weight: u32,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MixFile {
    request: Vec<RequestSpec>,
}

/// One request, filled in and ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRequest {
    pub name: Arc<str>,
    pub method: hyper::Method,
    pub path_and_query: String,
    pub body: Option<String>,
    /// Parsed once when the mix is loaded and shared by every request drawn from the entry.
    pub headers: Headers,
}

pub type Headers = Arc<[(hyper::header::HeaderName, hyper::header::HeaderValue)]>;

/// A validated mix, with templates parsed once.
#[derive(Debug, Clone)]
pub struct RequestMix {
    entries: Vec<Entry>,
    total_weight: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    method: hyper::Method,
    path: Template,
    body: Option<Template>,
    headers: Headers,
    weight: u64,
}

/// The sample app's routes, weighted like a small shop's traffic.
pub const DEFAULT_MIX: &str = include_str!("../mixes/default.toml");

impl RequestMix {
    pub fn default_mix() -> Self {
        Self::parse(DEFAULT_MIX).expect("the built-in mix is valid")
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("while reading the mix file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the mix file {}", path.display()))
    }

    pub fn parse(toml_text: &str) -> anyhow::Result<Self> {
        let file: MixFile =
            toml::from_str(toml_text).context("not a valid mix (TOML with [[request]] tables)")?;
        if file.request.is_empty() {
            bail!("the mix has no [[request]]");
        }
        let mut entries = Vec::new();
        for spec in file.request {
            let what = format!("request '{}'", spec.name);
            if spec.weight == 0 {
                bail!("{what}: weight must be at least 1");
            }
            if !spec.path.starts_with('/') {
                bail!("{what}: path must start with '/', got '{}'", spec.path);
            }
            let method = spec
                .method
                .to_ascii_uppercase()
                .parse::<hyper::Method>()
                .with_context(|| format!("{what}: '{}' is not an HTTP method", spec.method))?;
            entries.push(Entry {
                name: Arc::from(spec.name.as_str()),
                method,
                path: Template::parse(&spec.path).with_context(|| format!("{what}: path"))?,
                body: spec
                    .body
                    .as_deref()
                    .map(Template::parse)
                    .transpose()
                    .with_context(|| format!("{what}: body"))?,
                headers: parse_headers(&spec.headers)
                    .with_context(|| format!("{what}: headers"))?,
                weight: u64::from(spec.weight),
            });
        }
        let total_weight = entries.iter().map(|e| e.weight).sum();
        Ok(Self {
            entries,
            total_weight,
        })
    }

    /// Draws one request.
    pub fn draw(&self, rng: &mut SmallRng) -> PlannedRequest {
        let mut pick = rng.random_range(0..self.total_weight);
        let entry = self
            .entries
            .iter()
            .find(|e| {
                if pick < e.weight {
                    true
                } else {
                    pick -= e.weight;
                    false
                }
            })
            .unwrap_or(&self.entries[0]);
        PlannedRequest {
            name: entry.name.clone(),
            method: entry.method.clone(),
            path_and_query: entry.path.fill(rng),
            body: entry.body.as_ref().map(|b| b.fill(rng)),
            headers: entry.headers.clone(),
        }
    }
}

fn parse_headers(headers: &BTreeMap<String, String>) -> anyhow::Result<Headers> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("'{name}' is not a header name"))?;
            let value = hyper::header::HeaderValue::from_str(value)
                .with_context(|| format!("'{value}' is not a header value"))?;
            Ok((name, value))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Arc::from)
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Int(i64, i64),
    Pick(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Piece>);

impl Template {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            pieces.push(Piece::Text(rest[..open].to_owned()));
            let close = rest[open..]
                .find("}}")
                .map(|c| open + c)
                .with_context(|| format!("unclosed '{{{{' in '{text}'"))?;
            let inner = rest[open + 2..close].trim();
            pieces.push(Self::placeholder(inner).with_context(|| format!("in '{{{{{inner}}}}}'"))?);
            rest = &rest[close + 2..];
        }
        pieces.push(Piece::Text(rest.to_owned()));
        Ok(Self(pieces))
    }

    fn placeholder(inner: &str) -> anyhow::Result<Piece> {
        let (function, args) = inner.split_once(' ').unwrap_or((inner, ""));
        match function {
            "int" => {
                let bounds: Vec<i64> = args
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("int takes two whole numbers")?;
                match bounds[..] {
                    [low, high] if low <= high => Ok(Piece::Int(low, high)),
                    _ => bail!("int takes LOW HIGH with LOW ≤ HIGH"),
                }
            }
            "pick" => {
                let choices: Vec<String> = args
                    .split(',')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect();
                if choices.is_empty() {
                    bail!("pick takes a comma-separated list");
                }
                Ok(Piece::Pick(choices))
            }
            other => bail!("unknown template function '{other}' (use int or pick)"),
        }
    }

    fn fill(&self, rng: &mut SmallRng) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Int(low, high) => out.push_str(&rng.random_range(*low..=*high).to_string()),
                Piece::Pick(choices) => out.push_str(&choices[rng.random_range(0..choices.len())]),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_default_mix_covers_the_sample_apps_routes() {
        let mix = RequestMix::default_mix();
        let mut rng = SmallRng::seed_from_u64(7);
        let paths: Vec<String> = (0..2000)
            .map(|_| mix.draw(&mut rng).path_and_query)
            .collect();
        for prefix in [
            "/api/orders",
            "/api/orders/",
            "/external",
            "/slow",
            "/error",
            "/",
        ] {
            assert!(
                paths.iter().any(|p| p.starts_with(prefix)),
                "{prefix} never drawn"
            );
        }
        let slow = paths.iter().filter(|p| p.as_str() == "/slow").count();
        assert!(slow < 60, "/slow is only a little of the mix: {slow}/2000");
    }

    #[test]
    fn the_same_seed_draws_the_same_requests() {
        let mix = RequestMix::default_mix();
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..50).map(|_| mix.draw(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn templates_fill_within_their_bounds() {
        let t = Template::parse(r#"{"item": "{{pick a, b}}", "quantity": {{int 1 3}}}"#).unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..100 {
            let v: serde_json::Value = serde_json::from_str(&t.fill(&mut rng)).unwrap();
            assert!(["a", "b"].contains(&v["item"].as_str().unwrap()));
            assert!((1..=3).contains(&v["quantity"].as_i64().unwrap()));
        }
    }

    #[test]
    fn invalid_mixes_say_what_is_wrong() {
        for (text, says) in [
            ("", "[[request]]"),
            ("[[request]]\nname='a'\npath='/'\nweight=0", "weight"),
            (
                "[[request]]\nname='a'\npath='x'\nweight=1",
                "must start with '/'",
            ),
            (
                "[[request]]\nname='a'\npath='/{{int 5 1}}'\nweight=1",
                "LOW ≤ HIGH",
            ),
            (
                "[[request]]\nname='a'\npath='/{{rand}}'\nweight=1",
                "unknown template function",
            ),
            (
                "[[request]]\nname='a'\npath='/{{int 1 2'\nweight=1",
                "unclosed",
            ),
            (
                "[[request]]\nname='a'\nmethod='GE T'\npath='/'\nweight=1",
                "HTTP method",
            ),
            (
                "[[request]]\nname='a'\npath='/'\nweight=1\ncolour='red'",
                "colour",
            ),
        ] {
            let err = format!("{:#}", RequestMix::parse(text).unwrap_err());
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
