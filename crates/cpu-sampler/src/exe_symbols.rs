//! The running executable's symbol table, for naming addresses cheaply: read once from
//! `/proc/self/exe` (only the symbol and string tables, through a read cache, not the whole
//! file), sorted by address, and matched to run-time addresses through the load bias found in
//! `/proc/self/maps`.

use std::{fs::File, path::Path};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind, read::ReadCache};

use crate::Frame;

/// The executable's functions, by address.
#[derive(Debug)]
pub struct ExeSymbols {
    /// Run-time address range of the executable's mappings.
    start: usize,
    end: usize,
    /// Run-time address − link-time address.
    bias: usize,
    /// (link-time address, size, mangled name), sorted by address.
    functions: Vec<(u64, u64, Box<str>)>,
}

impl ExeSymbols {
    /// Reads the symbol table of the running executable; `None` when it cannot be read or has
    /// no symbols (stripped), in which case addresses fall back to `backtrace`.
    pub fn load() -> Option<Self> {
        let path = std::fs::read_link("/proc/self/exe").ok()?;
        let (start, end, first_offset_zero) = mappings_of(&path)?;
        let cache = ReadCache::new(File::open(&path).ok()?);
        let object = object::File::parse(&cache).ok()?;
        let linked_base = object
            .segments()
            .find(|segment| segment.file_range().0 == 0)?
            .address();
        let mut functions: Vec<(u64, u64, Box<str>)> = object
            .symbols()
            .filter(|symbol| symbol.kind() == SymbolKind::Text && symbol.address() != 0)
            .filter_map(|symbol| {
                let name = symbol.name().ok()?;
                Some((symbol.address(), symbol.size(), name.into()))
            })
            .collect();
        if functions.is_empty() {
            return None;
        }
        functions.sort_unstable_by_key(|&(address, _, _)| address);
        functions.shrink_to_fit();
        Some(Self {
            start,
            end,
            bias: first_offset_zero.checked_sub(linked_base as usize)?,
            functions,
        })
    }

    /// Whether `address` is in the executable's mappings.
    pub fn contains(&self, address: usize) -> bool {
        (self.start..self.end).contains(&address)
    }

    /// The function containing `address`, if it is in the executable and one covers it (PLT
    /// stubs, for one, have no symbol).
    pub fn frame(&self, address: usize) -> Option<Frame> {
        if !self.contains(address) {
            return None;
        }
        let linked = (address - self.bias) as u64;
        let index = self
            .functions
            .partition_point(|&(start, _, _)| start <= linked)
            .checked_sub(1)?;
        let (start, size, name) = &self.functions[index];
        let next = self.functions.get(index + 1).map_or(u64::MAX, |f| f.0);
        let end = if *size > 0 { start + size } else { next };
        if linked >= end {
            return None;
        }
        Some(Frame {
            function: format!("{:#}", rustc_demangle::demangle(name)),
            system_name: name.to_string(),
            file: String::new(),
            line: 0,
        })
    }
}

/// (lowest start, highest end, start of the mapping at file offset 0) of `path`'s mappings.
fn mappings_of(path: &Path) -> Option<(usize, usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let wanted = path.to_str()?;
    let (mut start, mut end, mut offset_zero) = (usize::MAX, 0, None);
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.len() < 6 || fields[5..].join(" ") != wanted {
            continue;
        }
        let (from, to) = fields[0].split_once('-')?;
        let from = usize::from_str_radix(from, 16).ok()?;
        let to = usize::from_str_radix(to, 16).ok()?;
        start = start.min(from);
        end = end.max(to);
        if u64::from_str_radix(fields[2], 16).ok()? == 0 {
            offset_zero.get_or_insert(from);
        }
    }
    Some((start, end, offset_zero?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_in_the_executable() -> usize {
        a_function_in_the_executable as *const () as usize
    }

    #[test]
    fn an_address_of_the_executable_is_named_by_its_symbol_table() {
        let symbols = ExeSymbols::load().expect("the test binary has a symbol table");
        let address = std::hint::black_box(a_function_in_the_executable());
        let frame = symbols
            .frame(address + 1)
            .expect("an address inside the function");
        assert!(
            frame.function.ends_with("a_function_in_the_executable"),
            "{frame:?}"
        );
        assert!(
            symbols.frame(8).is_none(),
            "an address outside the executable"
        );
    }
}
