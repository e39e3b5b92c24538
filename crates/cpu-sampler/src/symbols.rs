//! Turns instruction addresses into function names and remembers each answer: the code of a
//! process does not change, so after warm-up symbolising a profile window costs a hash lookup
//! per address.
//!
//! Addresses in the executable are named from its **symbol table** ([`ExeSymbols`]): fully
//! qualified names for a few MiB. Resolving them from DWARF instead (what `backtrace` does, and
//! what the `pprof` crate did) adds inlined frames and line numbers, but parses and keeps the
//! line tables: 90–150 MiB of resident memory for the sample service's release build, in a
//! container limited to 256 MiB. Addresses in shared libraries (libc, libgcc) go to
//! `backtrace`, which for them reads little more than their dynamic symbols.

use std::collections::HashMap;

use crate::exe_symbols::ExeSymbols;

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
    /// Loaded on first use; `Some(None)` when the executable's symbols could not be read.
    exe: Option<Option<ExeSymbols>>,
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
        let exe = self.exe.get_or_insert_with(ExeSymbols::load).as_ref();
        self.cache.entry(lookup).or_insert_with(|| match exe {
            // Never `backtrace` for the executable: it would parse its DWARF for one address.
            Some(exe) if exe.contains(lookup) => {
                vec![exe.frame(lookup).unwrap_or_else(|| unnamed(lookup))]
            }
            _ => resolve(lookup),
        })
    }

    /// Addresses resolved so far.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// A frame no symbol covers, named by its address.
fn unnamed(address: usize) -> Frame {
    Frame {
        function: format!("{address:#x}"),
        system_name: String::new(),
        file: String::new(),
        line: 0,
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
        frames.push(unnamed(address));
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
