//! Function names from ELF symbol tables, for every object mapped in this process: the
//! executable, the shared libraries (libc, libgcc) and the kernel's vDSO. Each is read once,
//! only its symbol and string tables (through a read cache, not the whole file), sorted by
//! address, and matched to run-time addresses through the load bias found in
//! `/proc/self/maps`.
//!
//! No DWARF is ever parsed. `backtrace::resolve` did that for shared libraries: on a machine
//! with libc's separate debug file installed (`/usr/lib/debug/.build-id/…`, Debian's
//! `libc6-dbg`) it parsed that file's line and abbreviation tables and kept them, 38 MiB of
//! the sample service's 55 MiB resident memory with the profiler on. A stripped library is
//! named from its separate debug file's symbol table when one is installed (internal
//! functions such as `__memcpy_avx_unaligned_erms` are only there), else from its dynamic
//! symbols.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind, read::ReadCache};

use crate::Frame;

/// Where Debian and most distributions install separate debug files, by build id.
const DEBUG_DIR: &str = "/usr/lib/debug/.build-id";
/// The vDSO is one or two pages; anything larger is not one.
const MAX_VDSO: usize = 1 << 20;

/// One mapped object's functions, by address.
#[derive(Debug)]
pub struct ElfSymbols {
    /// Run-time address range of the object's mappings.
    start: usize,
    end: usize,
    /// Run-time address − link-time address.
    bias: usize,
    /// (link-time address, size, mangled name), sorted by address.
    functions: Vec<(u64, u64, Box<str>)>,
}

/// One line of `/proc/self/maps`.
#[derive(Clone, Copy)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    offset: u64,
    /// Device and inode: which file, whatever its name.
    file: (&'a str, &'a str),
    /// The file (or `[vdso]`-style name); empty for anonymous memory.
    name: &'a str,
}

fn mappings(maps: &str) -> impl Iterator<Item = Mapping<'_>> {
    maps.lines().filter_map(|line| {
        let mut fields = line.splitn(6, ' ');
        let (from, to) = fields.next()?.split_once('-')?;
        let _perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let device = fields.next()?;
        let inode = fields.next()?;
        Some(Mapping {
            start: usize::from_str_radix(from, 16).ok()?,
            end: usize::from_str_radix(to, 16).ok()?,
            offset,
            file: (device, inode),
            name: fields.next().unwrap_or("").trim_start(),
        })
    })
}

impl ElfSymbols {
    /// The functions of the object mapped at `address`. `Err` carries the address range not
    /// to ask about again: the mapping's when it is anonymous or its file has no symbols, the
    /// gap between its neighbours when nothing is mapped there.
    pub fn containing(address: usize) -> Result<Self, (usize, usize)> {
        let alone = (address, address.saturating_add(1));
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|_| alone)?;
        let all: Vec<Mapping<'_>> = mappings(&maps).collect();
        let Some(at) = all.iter().position(|m| (m.start..m.end).contains(&address)) else {
            let below = all
                .iter()
                .map(|m| m.end)
                .filter(|&end| end <= address)
                .max();
            let above = all
                .iter()
                .map(|m| m.start)
                .filter(|&start| start > address)
                .min();
            return Err((below.unwrap_or(0), above.unwrap_or(usize::MAX)));
        };
        let mapping = all[at];
        // The object is the run of neighbouring mappings of the same file (the loader maps one
        // object as adjacent segments); another mapping of that file elsewhere (a read-only
        // copy, as a panic's backtrace makes) is not part of it.
        let same = |m: &Mapping<'_>| m.file == mapping.file && m.name == mapping.name;
        let first = all[..at].iter().rev().take_while(|m| same(m)).count();
        let last = all[at + 1..].iter().take_while(|m| same(m)).count();
        let object = &all[at - first..=at + last];
        let (start, end) = (object[0].start, object[object.len() - 1].end);
        let symbols = match mapping.name {
            "[vdso]" => Self::load_vdso(mapping.start, mapping.end),
            name if name.starts_with('/') => {
                // A file replaced since it was mapped is named `path (deleted)`; its old
                // contents cannot be opened by that name.
                let path = Path::new(name.strip_suffix(" (deleted)").unwrap_or(name));
                // The loader maps the object's first page (file offset 0) first.
                let base = object.iter().find(|m| m.offset == 0).map(|m| m.start);
                base.and_then(|base| Self::load_file(path, start, end, base))
            }
            _ => None,
        };
        symbols.ok_or((start, end))
    }

    /// An object on disk, mapped at `start..end` with its file offset 0 at `base`.
    fn load_file(path: &Path, start: usize, end: usize, base: usize) -> Option<Self> {
        let cache = ReadCache::new(File::open(path).ok()?);
        let object = object::File::parse(&cache).ok()?;
        // Run-time address minus link-time address (prelinked objects may have any, hence
        // wrapping).
        let bias = base.wrapping_sub(first_segment(&object)?);
        let mut functions = functions_of(&object, false);
        if functions.is_empty() {
            // Stripped: its separate debug file's symbol table, else its dynamic symbols.
            functions = debug_file(&object)
                .and_then(|debug| {
                    let cache = ReadCache::new(File::open(debug).ok()?);
                    let object = object::File::parse(&cache).ok()?;
                    Some(functions_of(&object, false))
                })
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| functions_of(&object, true));
        }
        Self::new(start, end, bias, functions)
    }

    /// The vDSO, read from this process's own memory (`/proc/self/mem`): it exists only there.
    fn load_vdso(start: usize, end: usize) -> Option<Self> {
        let len = end.checked_sub(start).filter(|&len| len <= MAX_VDSO)?;
        let mut image = vec![0; len];
        let mut mem = File::open("/proc/self/mem").ok()?;
        mem.seek(SeekFrom::Start(start as u64)).ok()?;
        mem.read_exact(&mut image).ok()?;
        let object = object::File::parse(image.as_slice()).ok()?;
        let linked_base = first_segment(&object)?;
        let functions = functions_of(&object, true);
        Self::new(start, end, start.wrapping_sub(linked_base), functions)
    }

    fn new(
        start: usize,
        end: usize,
        bias: usize,
        mut functions: Vec<(u64, u64, Box<str>)>,
    ) -> Option<Self> {
        if functions.is_empty() {
            return None;
        }
        functions.sort_unstable_by_key(|&(address, _, _)| address);
        functions.dedup_by_key(|&mut (address, _, _)| address);
        functions.shrink_to_fit();
        Some(Self {
            start,
            end,
            bias,
            functions,
        })
    }

    /// Whether `address` is in this object's mappings.
    pub fn contains(&self, address: usize) -> bool {
        (self.start..self.end).contains(&address)
    }

    /// The function containing `address`, if it is in this object and one covers it (PLT
    /// stubs, for one, have no symbol).
    pub fn frame(&self, address: usize) -> Option<Frame> {
        if !self.contains(address) {
            return None;
        }
        let linked = address.wrapping_sub(self.bias) as u64;
        let index = self
            .functions
            .partition_point(|&(start, _, _)| start <= linked)
            .checked_sub(1)?;
        let (start, size, name) = &self.functions[index];
        let next = self.functions.get(index + 1).map_or(u64::MAX, |f| f.0);
        let end = if *size > 0 {
            start.saturating_add(*size)
        } else {
            next
        };
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

/// The link-time address of the segment at file offset 0 (what the mapping at offset 0
/// holds at run time).
fn first_segment<'a>(object: &object::File<'a, impl object::ReadRef<'a>>) -> Option<usize> {
    object
        .segments()
        .find(|segment| segment.file_range().0 == 0)
        .map(|segment| segment.address() as usize)
}

/// The functions of `object`'s symbol table, or of its dynamic symbols when `dynamic`.
fn functions_of<'a>(
    object: &object::File<'a, impl object::ReadRef<'a>>,
    dynamic: bool,
) -> Vec<(u64, u64, Box<str>)> {
    fn function<'a>(symbol: impl ObjectSymbol<'a>) -> Option<(u64, u64, Box<str>)> {
        (symbol.kind() == SymbolKind::Text && symbol.address() != 0)
            .then(|| Some((symbol.address(), symbol.size(), symbol.name().ok()?.into())))?
    }
    if dynamic {
        object.dynamic_symbols().filter_map(function).collect()
    } else {
        object.symbols().filter_map(function).collect()
    }
}

/// `/usr/lib/debug/.build-id/ab/cdef….debug` for an object whose build id is `abcdef…`, when
/// installed.
fn debug_file<'a>(object: &object::File<'a, impl object::ReadRef<'a>>) -> Option<PathBuf> {
    let id = object.build_id().ok()??;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let (dir, file) = hex.split_at_checked(2)?;
    let path = Path::new(DEBUG_DIR).join(dir).join(format!("{file}.debug"));
    path.is_file().then_some(path)
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
        let address = std::hint::black_box(a_function_in_the_executable());
        let symbols = ElfSymbols::containing(address).expect("the test binary has a symbol table");
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

    #[test]
    fn an_address_in_libc_is_named_from_libcs_own_symbols() {
        let address = libc::getpid as *const () as usize;
        let libc = ElfSymbols::containing(address).expect("libc is mapped and has symbols");
        let frame = libc.frame(address).expect("getpid has a symbol");
        // `getpid` or an alias of the same code (`__getpid`).
        assert!(frame.function.ends_with("getpid"), "{frame:?}");
        assert!(!libc.contains(a_function_in_the_executable()));
    }

    #[test]
    fn an_address_in_the_vdso_is_named_from_the_vdsos_symbols() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let Some(vdso) = mappings(&maps).find(|m| m.name == "[vdso]") else {
            return; // a kernel without a vDSO: nothing to name
        };
        let symbols = ElfSymbols::containing(vdso.start).expect("the vDSO has dynamic symbols");
        let named: Vec<String> = symbols
            .functions
            .iter()
            .filter_map(|&(linked, _, _)| symbols.frame(linked as usize + symbols.bias))
            .map(|f| f.function)
            .collect();
        assert!(
            named.iter().any(|n| n.contains("clock_gettime")),
            "{named:?}"
        );
    }

    #[test]
    fn memory_that_is_no_file_is_refused_with_the_range_not_to_ask_again() {
        let heap = Box::new(0_u64);
        let address = &*heap as *const u64 as usize;
        let (start, end) = ElfSymbols::containing(address).unwrap_err();
        assert!(start <= address && address < end);
        // Nothing is mapped at 8: the whole gap below the first mapping is refused at once.
        let (start, end) = ElfSymbols::containing(8).unwrap_err();
        assert!(start <= 8 && 8 < end && end > 4096, "{start:#x}..{end:#x}");
    }

    /// A second, read-only mapping of libc's whole file (what a panic's backtrace makes, to
    /// read debug information) must not move the load bias or widen libc's range.
    #[test]
    #[allow(unsafe_code)]
    fn another_mapping_of_the_same_file_changes_nothing() {
        use std::os::fd::AsRawFd;
        let address = libc::getpid as *const () as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let path = mappings(&maps)
            .find(|m| (m.start..m.end).contains(&address))
            .map(|m| m.name.to_owned())
            .expect("getpid is in a mapped file");
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: a new private read-only mapping of a file we opened; nothing reads it.
        let copy = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(copy, libc::MAP_FAILED);
        let named = ElfSymbols::containing(address).map(|libc| {
            let copy = copy as usize;
            (libc.frame(address), libc.contains(copy))
        });
        // SAFETY: unmaps exactly the mapping made above.
        unsafe { libc::munmap(copy, len) };
        let (frame, covers_copy) = named.expect("libc has symbols");
        let frame = frame.expect("getpid is named");
        assert!(frame.function.ends_with("getpid"), "{frame:?}");
        assert!(!covers_copy, "the copy is not part of the loaded object");
    }
}
