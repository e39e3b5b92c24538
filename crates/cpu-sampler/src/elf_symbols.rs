//! Function names from ELF symbol tables, for every object mapped in this process: the
//! executable, the shared libraries (libc, libgcc) and the kernel's vDSO. Each is read once,
//! only its symbol table (through a read cache, not the whole file), sorted by address, and
//! matched to run-time addresses through the load bias found in `/proc/self/maps`.
//!
//! Only an index is kept: each function's link-time address, size and the offset of its
//! name in the string table, 16 bytes a function and no allocation of its own, with the
//! object's file kept open. Keeping the names instead held the sample service's ~17,000
//! functions and ~2 MB of names (2.7 MiB of heap) for the process's life, to name the few
//! thousand addresses that are ever sampled. A name is read from the file, one `pread` of
//! up to 4 KiB, when [`ElfSymbols::frame`] resolves an address to its function, and the
//! [`Symbolizer`](crate::Symbolizer) caches that frame: one read per newly sampled address.
//! The file stays open so that a binary replaced or deleted on disk after its first sampled
//! address is still read through the same inode. One replaced before that is opened by its
//! path, as it always was: the new file's symbols with the old load bias, so wrong names. Its
//! device and inode are not compared with `/proc/self/maps`' because under overlayfs (a
//! container's root) the two may name different layers of the same file, and refusing would
//! leave every profile unnamed. The vDSO has no file (it is read from `/proc/self/mem`); its
//! string table, a few hundred bytes, is copied instead.
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
    io::{ErrorKind, Read, Seek, SeekFrom},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use object::{
    Object, ObjectSegment, ReadRef, elf,
    read::{
        ReadCache,
        elf::{ElfFile, FileHeader, SectionHeader, Sym},
    },
};

use crate::Frame;

/// Where Debian and most distributions install separate debug files, by build id.
const DEBUG_DIR: &str = "/usr/lib/debug/.build-id";
/// The vDSO is one or two pages; anything larger is not one.
const MAX_VDSO: usize = 1 << 20;
/// A name is read in chunks of this size until its NUL.
const NAME_CHUNK: usize = 4096;
/// No name is longer (the longest mangled Rust names are a few KiB): past it, the string table
/// is corrupt.
const MAX_NAME: usize = 64 << 10;

/// One mapped object's functions, by address.
#[derive(Debug)]
pub struct ElfSymbols {
    /// Run-time address range of the object's mappings.
    start: usize,
    end: usize,
    /// Run-time address − link-time address.
    bias: usize,
    /// Sorted by address.
    functions: Vec<Function>,
    /// The string table the functions' names are in.
    names: Names,
}

/// A function of a symbol table, its name left in the string table: 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Function {
    /// Link-time address.
    address: u64,
    /// Size in bytes, 0 when unknown (saturated: no function is 4 GiB).
    size: u32,
    /// Offset of the name in the string table.
    name: u32,
}

/// A string table, read when a name is asked for.
#[derive(Debug)]
enum Names {
    /// In the object file the symbol table was read from, at `offset..offset + size`.
    File { file: File, offset: u64, size: u64 },
    /// Copied (the vDSO's, which has no file).
    Memory(Box<[u8]>),
}

impl Names {
    /// The string table at `offset..offset + size` of `file`.
    fn in_file(file: File, (offset, size): (u64, u64)) -> Self {
        Self::File { file, offset, size }
    }

    /// The NUL-terminated UTF-8 string at `at` in the table; `None` when the table has no
    /// such string or the file cannot be read.
    fn get(&self, at: u32) -> Option<String> {
        let name = match self {
            Self::File { file, offset, size } => {
                let left = size.checked_sub(at.into()).filter(|&left| left > 0)?;
                let max = left.min(MAX_NAME as u64) as usize;
                read_until_nul(file, offset.checked_add(at.into())?, max)?
            }
            Self::Memory(table) => {
                let rest = table.get(at as usize..)?;
                let rest = &rest[..rest.len().min(MAX_NAME)];
                rest[..rest.iter().position(|&b| b == 0)?].to_vec()
            }
        };
        String::from_utf8(name).ok()
    }
}

/// The bytes of `file` from `at` up to the first NUL, if there is one within `max` bytes.
/// Read a chunk at a time into a scratch buffer, so that only the name is kept.
fn read_until_nul(file: &File, at: u64, max: usize) -> Option<Vec<u8>> {
    let mut chunk = [0; NAME_CHUNK];
    let mut bytes = Vec::new();
    while bytes.len() < max {
        let want = NAME_CHUNK.min(max - bytes.len());
        let read = match file.read_at(&mut chunk[..want], at.checked_add(bytes.len() as u64)?) {
            Ok(0) => return None, // the file ends first: truncated
            Ok(read) => &chunk[..read],
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        if let Some(nul) = read.iter().position(|&b| b == 0) {
            bytes.extend_from_slice(&read[..nul]);
            return Some(bytes);
        }
        bytes.extend_from_slice(read);
    }
    None
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
        let file = File::open(path).ok()?;
        let cache = ReadCache::new(&file);
        let object = object::File::parse(&cache).ok()?;
        // Run-time address minus link-time address (prelinked objects may have any, hence
        // wrapping).
        let bias = base.wrapping_sub(first_segment(&object)?);
        let (functions, table) = functions_of(&object, false);
        if !functions.is_empty() {
            return Self::new(start, end, bias, functions, Names::in_file(file, table));
        }
        // Stripped: its separate debug file's symbol table, else its dynamic symbols. The
        // names are then read from the file the symbols came from.
        if let Some(debug) = debug_file(&object).and_then(|path| File::open(path).ok()) {
            let cache = ReadCache::new(&debug);
            let (functions, table) = object::File::parse(&cache)
                .map(|object| functions_of(&object, false))
                .unwrap_or_default();
            if !functions.is_empty() {
                return Self::new(start, end, bias, functions, Names::in_file(debug, table));
            }
        }
        let (functions, table) = functions_of(&object, true);
        Self::new(start, end, bias, functions, Names::in_file(file, table))
    }

    /// The vDSO, read from this process's own memory (`/proc/self/mem`): it exists only there.
    fn load_vdso(start: usize, end: usize) -> Option<Self> {
        let len = end.checked_sub(start).filter(|&len| len <= MAX_VDSO)?;
        let mut image = vec![0; len];
        let mut mem = File::open("/proc/self/mem").ok()?;
        mem.seek(SeekFrom::Start(start as u64)).ok()?;
        mem.read_exact(&mut image).ok()?;
        let object = object::File::parse(image.as_slice()).ok()?;
        let bias = start.wrapping_sub(first_segment(&object)?);
        let (functions, (offset, size)) = functions_of(&object, true);
        // The image is the file: its string table is at the same offsets.
        let table = image.get(usize::try_from(offset).ok()?..)?;
        let table = table.get(..usize::try_from(size).ok()?)?;
        Self::new(start, end, bias, functions, Names::Memory(table.into()))
    }

    fn new(
        start: usize,
        end: usize,
        bias: usize,
        mut functions: Vec<Function>,
        names: Names,
    ) -> Option<Self> {
        if functions.is_empty() {
            return None;
        }
        functions.sort_unstable_by_key(|f| f.address);
        functions.dedup_by_key(|f| f.address);
        functions.shrink_to_fit();
        Some(Self {
            start,
            end,
            bias,
            functions,
            names,
        })
    }

    /// Whether `address` is in this object's mappings.
    pub fn contains(&self, address: usize) -> bool {
        (self.start..self.end).contains(&address)
    }

    /// The function containing `address`, if it is in this object and one covers it (PLT
    /// stubs, for one, have no symbol). Its name is read from the string table now: `None`
    /// too when that fails (the file is truncated, the name has no NUL or is not UTF-8).
    pub fn frame(&self, address: usize) -> Option<Frame> {
        if !self.contains(address) {
            return None;
        }
        let linked = address.wrapping_sub(self.bias) as u64;
        let index = self
            .functions
            .partition_point(|f| f.address <= linked)
            .checked_sub(1)?;
        let function = self.functions[index];
        let next = self
            .functions
            .get(index + 1)
            .map_or(u64::MAX, |f| f.address);
        let end = if function.size > 0 {
            function.address.saturating_add(function.size.into())
        } else {
            next
        };
        if linked >= end {
            return None;
        }
        let name = self.names.get(function.name)?;
        Some(Frame {
            function: format!("{:#}", rustc_demangle::demangle(&name)),
            system_name: name,
            file: String::new(),
            line: 0,
        })
    }
}

/// The link-time address of the segment at file offset 0 (what the mapping at offset 0
/// holds at run time).
fn first_segment<'a>(object: &object::File<'a, impl ReadRef<'a>>) -> Option<usize> {
    object
        .segments()
        .find(|segment| segment.file_range().0 == 0)
        .map(|segment| segment.address() as usize)
}

/// The functions of `object`'s symbol table, or of its dynamic symbols when `dynamic`, and
/// the file offset and size of the string table their names are in.
fn functions_of<'a>(
    object: &object::File<'a, impl ReadRef<'a>>,
    dynamic: bool,
) -> (Vec<Function>, (u64, u64)) {
    let functions = match object {
        object::File::Elf32(elf) => elf_functions(elf, dynamic),
        object::File::Elf64(elf) => elf_functions(elf, dynamic),
        _ => None,
    };
    functions.unwrap_or_default()
}

/// The symbols the generic `object` API shows as functions with an address
/// (`SymbolKind::Text`, `address() != 0`) and a name (`name().is_ok()`), found without
/// reading the names: a name's offset must be inside the string table, but whether a NUL ends
/// it there and whether it is UTF-8 is only known when it is read, in [`ElfSymbols::frame`].
fn elf_functions<'a, Elf: FileHeader, R: ReadRef<'a>>(
    object: &ElfFile<'a, Elf, R>,
    dynamic: bool,
) -> Option<(Vec<Function>, (u64, u64))> {
    let endian = object.endian();
    let symbols = if dynamic {
        object.elf_dynamic_symbol_table()
    } else {
        object.elf_symbol_table()
    };
    // No string table (section 0, or not one): no names, so no functions.
    let strings = object
        .elf_section_table()
        .section(symbols.string_section())
        .ok()?;
    if strings.sh_type(endian) != elf::SHT_STRTAB {
        return None;
    }
    let (offset, size) = (
        strings.sh_offset(endian).into(),
        strings.sh_size(endian).into(),
    );
    offset.checked_add(size)?;
    let functions = symbols
        .iter()
        .skip(1) // the null symbol
        .filter(|sym| matches!(sym.st_type(), elf::STT_FUNC | elf::STT_GNU_IFUNC))
        // A common symbol's value is its alignment, not an address.
        .filter(|sym| !sym.is_common(endian))
        .filter(|sym| sym.st_value(endian).into() != 0 && u64::from(sym.st_name(endian)) < size)
        .map(|sym| Function {
            address: sym.st_value(endian).into(),
            size: u32::try_from(sym.st_size(endian).into()).unwrap_or(u32::MAX),
            name: sym.st_name(endian),
        })
        .collect();
    Some((functions, (offset, size)))
}

/// `/usr/lib/debug/.build-id/ab/cdef….debug` for an object whose build id is `abcdef…`, when
/// installed.
fn debug_file<'a>(object: &object::File<'a, impl ReadRef<'a>>) -> Option<PathBuf> {
    let id = object.build_id().ok()??;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let (dir, file) = hex.split_at_checked(2)?;
    let path = Path::new(DEBUG_DIR).join(dir).join(format!("{file}.debug"));
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use object::{ObjectSymbol, SymbolKind};

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

    /// The index keeps 16 bytes a function and no name, yet names every function as the
    /// generic `object` API does: same functions, and each name one of its address's.
    #[test]
    fn the_index_holds_no_names_and_names_what_the_symbol_table_names() {
        assert_eq!(size_of::<Function>(), 16);
        let address = std::hint::black_box(a_function_in_the_executable());
        let symbols = ElfSymbols::containing(address).expect("the test binary has a symbol table");
        let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let object = object::File::parse(data.as_slice()).unwrap();
        let mut names: HashMap<u64, Vec<&str>> = HashMap::new();
        for symbol in object.symbols() {
            if symbol.kind() == SymbolKind::Text
                && symbol.address() != 0
                && let Ok(name) = symbol.name()
            {
                names.entry(symbol.address()).or_default().push(name);
            }
        }
        assert_eq!(symbols.functions.len(), names.len());
        for function in &symbols.functions {
            let name = symbols.names.get(function.name).expect("every name reads");
            assert!(names[&function.address].contains(&name.as_str()), "{name}");
        }
    }

    /// A copy of the test binary in the temporary directory.
    fn copy_of_this_executable(what: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("cpu-sampler-{}-{what}", std::process::id()));
        std::fs::copy(std::env::current_exe().unwrap(), &path).unwrap();
        path
    }

    #[test]
    fn a_name_is_read_from_a_file_deleted_after_it_was_opened() {
        let address = std::hint::black_box(a_function_in_the_executable());
        let linked = address.wrapping_sub(ElfSymbols::containing(address).unwrap().bias);
        let path = copy_of_this_executable("deleted");
        // Loaded as if mapped anywhere, its file offset 0 at 0.
        let copy = ElfSymbols::load_file(&path, 0, usize::MAX, 0).expect("the copy has symbols");
        std::fs::remove_file(&path).unwrap();
        let frame = copy
            .frame(linked.wrapping_add(copy.bias) + 1)
            .expect("still named, through the open file");
        assert!(
            frame.function.ends_with("a_function_in_the_executable"),
            "{frame:?}"
        );
    }

    #[test]
    fn a_name_cut_short_by_a_truncated_file_is_no_name() {
        let address = std::hint::black_box(a_function_in_the_executable());
        let linked = address.wrapping_sub(ElfSymbols::containing(address).unwrap().bias);
        let path = copy_of_this_executable("truncated");
        let copy = ElfSymbols::load_file(&path, 0, usize::MAX, 0).expect("the copy has symbols");
        let at = linked.wrapping_add(copy.bias);
        let index = copy
            .functions
            .partition_point(|f| f.address <= linked as u64);
        let function = copy.functions[index - 1];
        let Names::File { offset, .. } = copy.names else {
            panic!("a file's names are read from it")
        };
        assert!(copy.frame(at).is_some(), "named before the cut");
        // The same inode, cut two bytes into the name.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(offset + u64::from(function.name) + 2).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(copy.frame(at), None);
    }

    #[test]
    fn a_string_without_its_nul_or_past_the_end_is_no_name() {
        let mut bytes = b"\0main\0abc\0\xff\0".to_vec();
        let long = bytes.len() as u32;
        bytes.extend([b'a'; MAX_NAME]);
        bytes.push(0);
        let tail = bytes.len() as u32;
        bytes.extend(b"tail");
        let len = bytes.len() as u64;
        let path = std::env::temp_dir().join(format!("cpu-sampler-{}-strings", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let in_file = |offset, size| Names::in_file(file.try_clone().unwrap(), (offset, size));
        for (names, what) in [
            (in_file(0, len), "file"),
            (Names::Memory(bytes.clone().into()), "memory"),
        ] {
            assert_eq!(names.get(1).as_deref(), Some("main"), "{what}");
            let main = names.get(1).unwrap();
            assert!(main.capacity() < 64, "the read chunk is not kept, {what}");
            assert_eq!(names.get(0).as_deref(), Some(""), "{what}");
            assert_eq!(names.get(6).as_deref(), Some("abc"), "{what}");
            assert_eq!(names.get(10), None, "not UTF-8, {what}");
            assert_eq!(names.get(long), None, "longer than any name, {what}");
            assert_eq!(names.get(tail), None, "no NUL before the end, {what}");
            assert_eq!(names.get(len as u32), None, "past the end, {what}");
        }
        assert_eq!(in_file(6, 4).get(0).as_deref(), Some("abc"));
        assert_eq!(
            in_file(0, 8).get(6),
            None,
            "its NUL is past the table's end"
        );
        assert_eq!(in_file(0, len + 100).get(tail), None, "the file ends first");
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
            .filter_map(|f| symbols.frame(f.address as usize + symbols.bias))
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
