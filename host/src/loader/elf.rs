//! Intake checks of a module file as ELF, before anything of it is mapped.
//!
//! glibc maps a library's segments straight from its file: a file shorter than its program
//! headers say (an interrupted copy, a full disk, a file rewritten in place) raises SIGBUS in
//! the whole process the moment a missing page is touched, long before any descriptor check.
//! [`check`] reads the file through the `object` crate (bounded reads, never the whole file at
//! once) and refuses anything `dlopen` could not map safely: another class, data encoding or
//! machine than the host's, not a shared object, a header table or a segment or section that
//! ends past the end of the file, no entry symbol in the dynamic symbol table.
//!
//! It also reports `DF_1_NODELETE`: `dlclose` never unmaps such a library, so every swap would
//! leave the old version mapped for good. Baton joins every thread that ran module code before
//! closing a library (the reason a linker would set the flag), so the loader clears the flag
//! in the private copy ([`clear_nodelete`]) and logs a warning.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use object::elf::{self, FileHeader64};
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader, Sym};
use object::{Endianness, ReadCache, ReadRef};

use baton_sdk::abi::ENTRY_SYMBOL;

use super::LoadError;

/// What the checks found out about a module file that passed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    nodelete: Option<NoDelete>,
}

/// Where a module file's `DF_1_NODELETE` flag is, so it can be cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoDelete {
    /// File offset of the `DT_FLAGS_1` entry's value (eight bytes, the file's byte order).
    offset: u64,
    /// The entry's value.
    flags_1: u64,
}

impl Checked {
    /// Whether the library is linked with `DF_1_NODELETE` (`-z nodelete`): `dlclose` would never
    /// unmap it.
    pub fn nodelete(&self) -> Option<NoDelete> {
        self.nodelete
    }
}

const HOST_CLASS: u8 = if cfg!(target_pointer_width = "64") {
    elf::ELFCLASS64.0
} else {
    elf::ELFCLASS32.0
};

const HOST_DATA: u8 = if cfg!(target_endian = "little") {
    elf::ELFDATA2LSB.0
} else {
    elf::ELFDATA2MSB.0
};

/// The host's `e_machine`, when Baton knows it.
fn host_machine() -> Option<u16> {
    Some(
        match std::env::consts::ARCH {
            "x86_64" => elf::EM_X86_64,
            "aarch64" => elf::EM_AARCH64,
            "riscv64" => elf::EM_RISCV,
            "powerpc64" => elf::EM_PPC64,
            "s390x" => elf::EM_S390,
            "loongarch64" => elf::EM_LOONGARCH,
            _ => return None,
        }
        .0,
    )
}

/// Checks the module file at `path` (see the module docs).
///
/// # Errors
/// A [`LoadError`] naming what is wrong.
pub fn check_file(path: &Path) -> Result<Checked, LoadError> {
    let file = File::open(path).map_err(|source| LoadError::Read { source })?;
    let len = file
        .metadata()
        .map_err(|source| LoadError::Read { source })?
        .len();
    let cache = ReadCache::new(file);
    check_data(&cache, len)
}

/// Checks module bytes already in memory (the fuzz target and tests use this); the same checks
/// as [`check_file`].
///
/// # Errors
/// A [`LoadError`] naming what is wrong.
pub fn check(bytes: &[u8]) -> Result<Checked, LoadError> {
    check_data(bytes, bytes.len() as u64)
}

fn malformed(what: &'static str) -> impl FnOnce(object::read::Error) -> LoadError {
    move |source| LoadError::Malformed { what, source }
}

/// `offset + size`, which must not pass `len`.
fn inside(
    part: impl FnOnce() -> String,
    offset: u64,
    size: u64,
    len: u64,
) -> Result<(), LoadError> {
    match offset.checked_add(size) {
        None => Err(LoadError::Overflow {
            part: part(),
            offset,
            size,
        }),
        Some(end) if end > len => Err(LoadError::Truncated {
            part: part(),
            end,
            len,
        }),
        Some(_) => Ok(()),
    }
}

fn check_data<'data, R: ReadRef<'data>>(data: R, len: u64) -> Result<Checked, LoadError> {
    // e_ident: magic, then EI_CLASS at 4 and EI_DATA at 5.
    let ident = data
        .read_bytes_at(0, 16)
        .map_err(|()| LoadError::NotElf { len })?;
    if ident[..4] != elf::ELFMAG {
        return Err(LoadError::NotElf { len });
    }
    let (class, encoding) = (ident[4], ident[5]);
    if class != HOST_CLASS {
        return Err(LoadError::Class {
            found: class,
            expected: HOST_CLASS,
        });
    }
    if encoding != HOST_DATA {
        return Err(LoadError::Encoding {
            found: encoding,
            expected: HOST_DATA,
        });
    }
    // Every host Baton runs on is 64-bit (the class check above refused the rest).
    let header = FileHeader64::<Endianness>::parse(data).map_err(|_| LoadError::NotElf { len })?;
    let endian = header.endian().map_err(malformed("byte order"))?;
    if let Some(expected) = host_machine()
        && header.e_machine(endian).0 != expected
    {
        return Err(LoadError::Machine {
            found: header.e_machine(endian).0,
            expected,
            arch: std::env::consts::ARCH,
        });
    }
    if header.e_type(endian) != elf::ET_DYN {
        return Err(LoadError::NotShared {
            found: header.e_type(endian).0,
        });
    }

    // The program header table and the segments it describes (what dlopen maps), then the
    // section header table and the sections (where the dynamic symbol table is).
    let phnum = header
        .phnum(endian, data)
        .map_err(malformed("program header count"))?;
    inside(
        || "the program header table".to_owned(),
        header.e_phoff(endian),
        u64::from(phnum) * u64::from(header.e_phentsize(endian)),
        len,
    )?;
    let segments = header
        .program_headers(endian, data)
        .map_err(malformed("program headers"))?;
    if !segments.iter().any(|s| s.p_type(endian) == elf::PT_LOAD) {
        return Err(LoadError::NoLoadSegment);
    }
    let mut nodelete = None;
    for (i, segment) in segments.iter().enumerate() {
        let (offset, size) = (segment.p_offset(endian), segment.p_filesz(endian));
        inside(|| format!("segment {i}"), offset, size, len)?;
        let Some(dynamic) = segment
            .dynamic(endian, data)
            .map_err(malformed("dynamic segment"))?
        else {
            continue;
        };
        let entry = std::mem::size_of::<elf::Dyn64<Endianness>>() as u64;
        for (j, d) in dynamic.iter().enumerate() {
            let tag = d.tag(endian);
            if tag == elf::DT_NULL {
                break;
            }
            if tag == elf::DT_FLAGS_1 && d.val(endian) & elf::DF_1_NODELETE.0 != 0 {
                nodelete = Some(NoDelete {
                    offset: offset + j as u64 * entry + entry / 2,
                    flags_1: d.val(endian),
                });
            }
        }
    }
    let shnum = header
        .shnum(endian, data)
        .map_err(malformed("section header count"))?;
    inside(
        || "the section header table".to_owned(),
        header.e_shoff(endian),
        u64::from(shnum) * u64::from(header.e_shentsize(endian)),
        len,
    )?;
    let sections = header
        .sections(endian, data)
        .map_err(malformed("section headers"))?;
    for (i, section) in sections.iter().enumerate() {
        if let Some((offset, size)) = section.file_range(endian) {
            inside(|| format!("section {i}"), offset, size, len)?;
        }
    }

    let symbols = sections
        .symbols(endian, data, elf::SHT_DYNSYM)
        .map_err(malformed("dynamic symbol table"))?;
    if symbols.is_empty() {
        return Err(LoadError::NoDynamicSymbols);
    }
    let strings = symbols.strings();
    let defined = symbols.iter().any(|sym| {
        !sym.is_undefined(endian)
            && sym
                .name(endian, strings)
                .is_ok_and(|name| name == ENTRY_SYMBOL.as_bytes())
    });
    if !defined {
        return Err(LoadError::NoEntry);
    }
    Ok(Checked { nodelete })
}

/// Clears `DF_1_NODELETE` in the module file at `path` (a private copy), as found by
/// [`check_file`].
///
/// # Errors
/// If the file cannot be written, or no longer holds the flag where it was found.
pub(super) fn clear_nodelete(path: &Path, at: NoDelete) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut current = [0u8; 8];
    file.seek(SeekFrom::Start(at.offset))?;
    file.read_exact(&mut current)?;
    let native = |v: u64| {
        if HOST_DATA == elf::ELFDATA2LSB.0 {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    };
    if current != native(at.flags_1) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the DT_FLAGS_1 entry changed since the file was checked",
        ));
    }
    file.seek(SeekFrom::Start(at.offset))?;
    file.write_all(&native(at.flags_1 & !elf::DF_1_NODELETE.0))?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_foreign_inputs_are_refused_without_a_panic() {
        assert!(matches!(check(b""), Err(LoadError::NotElf { len: 0 })));
        assert!(matches!(
            check(b"not a library"),
            Err(LoadError::NotElf { .. })
        ));
        let mut ident = [0u8; 64];
        ident[..4].copy_from_slice(&elf::ELFMAG);
        ident[4] = 3 - HOST_CLASS;
        assert!(matches!(check(&ident), Err(LoadError::Class { .. })));
    }
}
