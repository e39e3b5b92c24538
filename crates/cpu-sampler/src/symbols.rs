//! Turns instruction addresses into function names, files and lines, with inlined frames
//! expanded, and remembers each answer: the code of a process does not change, so after warm-up
//! symbolising a profile window costs a hash lookup per address.

use std::collections::HashMap;

/// One function at an address (an address has several when calls were inlined into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Demangled, without the hash suffix (`sample_app::routes::demo::burn_cpu`).
    pub function: String,
    /// The mangled name, when known.
    pub system_name: String,
    pub file: String,
    pub line: u32,
}

/// A cache from address to its frames (innermost first).
#[derive(Debug, Default)]
pub struct Symbolizer {
    cache: HashMap<usize, Vec<Frame>>,
}

impl Symbolizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The frames at `address`. `is_return_address`: the address follows a call (every frame but
    /// a CPU sample's innermost), so the call itself is one byte before it.
    pub fn frames(&mut self, address: usize, is_return_address: bool) -> &[Frame] {
        let lookup = if is_return_address {
            address.saturating_sub(1)
        } else {
            address
        };
        self.cache.entry(lookup).or_insert_with(|| resolve(lookup))
    }

    /// Addresses resolved so far.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

fn resolve(address: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    backtrace::resolve(address as *mut std::ffi::c_void, |symbol| {
        let Some(name) = symbol.name() else {
            return;
        };
        frames.push(Frame {
            function: format!("{name:#}"),
            system_name: String::from_utf8_lossy(name.as_bytes()).into_owned(),
            file: symbol
                .filename()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            line: symbol.lineno().unwrap_or(0),
        });
    });
    if frames.is_empty() {
        frames.push(Frame {
            function: format!("{address:#x}"),
            system_name: String::new(),
            file: String::new(),
            line: 0,
        });
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The return addresses on the stack while inside this function.
    #[inline(never)]
    fn a_function_with_a_name() -> Vec<usize> {
        let mut addresses = Vec::new();
        backtrace::trace(|frame| {
            addresses.push(frame.ip() as usize);
            true
        });
        std::hint::black_box(addresses)
    }

    #[test]
    fn an_address_resolves_to_its_function_and_is_cached() {
        let mut symbols = Symbolizer::new();
        let addresses = a_function_with_a_name();
        let names: Vec<String> = addresses
            .iter()
            .flat_map(|&a| symbols.frames(a, true).to_vec())
            .map(|f| f.function)
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with("a_function_with_a_name")),
            "{names:?}"
        );
        let cached = symbols.len();
        symbols.frames(addresses[0], true);
        assert_eq!(symbols.len(), cached);
    }
}
