//! Turns instruction addresses into function names and remembers each answer: the code of a
//! process does not change, so after warm-up symbolising a profile window costs a hash lookup
//! per address.
//!
//! Addresses are named from the **symbol tables** of the objects mapped where they point
//! ([`ElfSymbols`]: the executable, shared libraries, the vDSO): fully qualified names, from
//! an index of 16 bytes a function, each name read from its file when first needed. Resolving them from DWARF instead (what `backtrace` does, and what the `pprof`
//! crate did) adds inlined frames and line numbers, but parses and keeps the line tables:
//! 90–150 MiB of resident memory for the sample service's release build, in a container
//! limited to 256 MiB, and 38 MiB for libc alone where its debug file is installed.

use std::collections::HashMap;

use crate::elf_symbols::ElfSymbols;

/// The function at an address (from a symbol table: an inlined call shows as its caller).
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
    /// The objects read so far, each on the first address that falls in it.
    objects: Vec<ElfSymbols>,
    /// Address ranges with nothing to read (anonymous memory, objects without symbols).
    nameless: Vec<(usize, usize)>,
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
        if !self.cache.contains_key(&lookup) {
            let frame = self
                .object_at(lookup)
                .and_then(|object| object.frame(lookup))
                .unwrap_or_else(|| unnamed(lookup));
            self.cache.insert(lookup, vec![frame]);
        }
        &self.cache[&lookup]
    }

    fn object_at(&mut self, address: usize) -> Option<&ElfSymbols> {
        let index = match self.objects.iter().position(|o| o.contains(address)) {
            Some(index) => index,
            None => {
                if self
                    .nameless
                    .iter()
                    .any(|&(s, e)| (s..e).contains(&address))
                {
                    return None;
                }
                match ElfSymbols::containing(address) {
                    Ok(object) => {
                        self.objects.push(object);
                        self.objects.len() - 1
                    }
                    Err(range) => {
                        self.nameless.push(range);
                        return None;
                    }
                }
            }
        };
        Some(&self.objects[index])
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
