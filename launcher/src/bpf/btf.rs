//! The running kernel's own names for the four enums a bpffs delegation is written in.
//!
//! When a bpffs is mounted with `delegate_cmds=`, `delegate_maps=`, `delegate_progs=` or
//! `delegate_attachs=`, the kernel (`kernel/bpf/inode.c`) parses every name against its own BTF:
//! it looks up `enum bpf_cmd`, `enum bpf_map_type`, `enum bpf_prog_type` and
//! `enum bpf_attach_type` and takes the first constant, in declaration order, whose name matches
//! case-insensitively once the prefix (`BPF_`, `BPF_MAP_TYPE_`, `BPF_PROG_TYPE_`, `BPF_`) is
//! stripped. Reading exactly these enums from [`VMLINUX_BTF`] therefore yields exactly the names
//! the running kernel accepts, including the ones added by kernels newer than this program, with no
//! table to keep in sync (the policy's built-in tables remain the fallback for a kernel without
//! readable BTF).
//!
//! This is deliberately not a BTF parser: it walks the type section only until it has found the
//! wanted enums and decodes nothing else, so finding them in the ~5 MB vmlinux BTF takes
//! milliseconds. The bytes come from a file, so every one of them is untrusted: offsets are checked
//! before use, malformed input is an error rather than a panic, every step of the walk consumes
//! input (so it ends), and what it allocates is bounded by the input's size.

use std::fs::File;
use std::io::{self, Read};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use crate::sys::file::ReadOnlyMap;

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The largest file [`read_enums`] accepts. A kernel's BTF is a few MB (5.5 MB for a distro 6.18);
/// the cap only keeps a wrong path (a FIFO, a device) from exhausting memory.
pub const MAX_BTF_LEN: u64 = 256 << 20;

/// One enum type: its constants in declaration order (the order the kernel iterates them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfEnum {
    pub name: String,
    pub constants: Vec<EnumConstant>,
}

/// One enum constant. The value is widened to `u64` so that `ENUM` and `ENUM64` read alike; a
/// signed enum's negative value is sign-extended first, so it reads back with `as i64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumConstant {
    pub name: String,
    pub value: u64,
}

/// Why BTF could not be read. Each message names the offending field, byte offset or type id, so
/// that a report from a kernel this reader was never tried on says what to look at.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading BTF from {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is larger than {limit} bytes, too large to be a kernel's BTF", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("not BTF: the magic number is {found:#06x}, expected 0xeb9f")]
    BadMagic { found: u16 },
    #[error(
        "the BTF is big-endian (its magic number reads 0x9feb); only little-endian BTF is supported"
    )]
    BigEndian,
    #[error("BTF version {found} is not supported (only version 1 is)")]
    UnsupportedVersion { found: u8 },
    #[error("BTF header flags {found:#04x} are not supported (only 0 is)")]
    UnsupportedFlags { found: u8 },
    #[error(
        "the BTF header says it is {hdr_len} bytes long, shorter than the 24 bytes of its fields"
    )]
    HeaderTooShort { hdr_len: u32 },
    #[error(
        "the BTF is truncated: its {what} ends at byte {end}, past the end of the {len}-byte input"
    )]
    Truncated {
        what: &'static str,
        end: u64,
        len: usize,
    },
    #[error("BTF type {type_id} at byte {offset} of the type section runs past the section's end")]
    TypeTruncated { type_id: u32, offset: usize },
    #[error(
        "BTF type {type_id} has unknown kind {kind} (newer kernel than this reader, or corrupt BTF?)"
    )]
    UnknownKind { kind: u32, type_id: u32 },
    #[error("BTF type {type_id} refers to string offset {offset}, outside the string section")]
    BadStringOffset { type_id: u32, offset: u32 },
    #[error(
        "BTF type {type_id} refers to the string at offset {offset}, which has no terminating NUL"
    )]
    UnterminatedString { type_id: u32, offset: u32 },
    #[error("BTF type {type_id} refers to the string at offset {offset}, which is not UTF-8")]
    NotUtf8 { type_id: u32, offset: u32 },
    #[error(
        "the constant names of BTF enum type {type_id} add up to more bytes than the whole BTF"
    )]
    NamesTooLong { type_id: u32 },
}

/// Finds the named enum types (`BTF_KIND_ENUM` and `BTF_KIND_ENUM64`) in raw BTF bytes.
///
/// Returns one entry per wanted name, in the order of `wanted`, `None` when absent. The first type
/// with a name wins, as in the kernel's own lookup; vmlinux does hold distinct enums sharing a
/// name. The scan stops as soon as every name is found, so malformed or unknown types after that
/// point go unnoticed: a kernel newer than this reader may add kinds, and only what precedes the
/// wanted enums has to be understood.
///
/// # Errors
/// When the header is not little-endian BTF version 1, when a section or a type runs past the end
/// of its data, when a type before the last wanted enum has a kind this reader does not know (its
/// size is unknown, so nothing after it can be found), or when a string of a returned enum (or the
/// name of any enum type scanned) is out of range, unterminated or not UTF-8.
pub fn find_enums(btf: &[u8], wanted: &[&str]) -> Result<Vec<Option<BtfEnum>>, BtfError> {
    let (types, strings) = sections(btf)?;
    let mut found: Vec<Option<BtfEnum>> = vec![None; wanted.len()];
    let mut missing = wanted.len();
    // Decoded names may repeat one string, so the input's length alone does not bound them.
    let mut name_budget = btf.len();
    let mut walk = TypeWalk::new(types);
    while missing > 0 {
        let Some(TypeEntry {
            type_id,
            name_off,
            kind,
            kind_flag,
            body,
        }) = walk.next_type()?
        else {
            break;
        };
        if kind == kind::ENUM || kind == kind::ENUM64 {
            let mut constants = None;
            for (slot, want) in found.iter_mut().zip(wanted) {
                if slot.is_some() || !name_is(strings, name_off, want.as_bytes(), type_id)? {
                    continue;
                }
                if constants.is_none() {
                    let decoded = if kind == kind::ENUM {
                        enum_constants(body, kind_flag, strings, type_id, &mut name_budget)?
                    } else {
                        enum64_constants(body, strings, type_id, &mut name_budget)?
                    };
                    constants = Some(decoded);
                }
                *slot = Some(BtfEnum {
                    name: (*want).to_owned(),
                    constants: constants.clone().unwrap_or_default(),
                });
                missing -= 1;
            }
        }
    }
    Ok(found)
}

/// The type id of the function (`BTF_KIND_FUNC`) named `name` in raw BTF bytes, as a kfunc call
/// instruction names it (`imm`); `None` when absent. Scans as [`find_enums`] does.
///
/// # Errors
/// As [`find_enums`].
pub fn find_func(btf: &[u8], name: &str) -> Result<Option<u32>, BtfError> {
    let (types, strings) = sections(btf)?;
    let mut walk = TypeWalk::new(types);
    while let Some(ty) = walk.next_type()? {
        if ty.kind == kind::FUNC && name_is(strings, ty.name_off, name.as_bytes(), ty.type_id)? {
            return Ok(Some(ty.type_id));
        }
    }
    Ok(None)
}

/// One type of the type section: its id, name offset, kind and the bytes after its common part.
struct TypeEntry<'a> {
    type_id: u32,
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    body: &'a [u8],
}

/// The types of a type section in id order, each checked to fit in the section; a kind this
/// reader does not know ends the walk with an error (its size, so what follows, is unknown).
struct TypeWalk<'a> {
    types: &'a [u8],
    offset: usize,
    type_id: u32,
}

impl<'a> TypeWalk<'a> {
    const fn new(types: &'a [u8]) -> Self {
        Self {
            types,
            offset: 0,
            type_id: 1,
        }
    }

    fn next_type(&mut self) -> Result<Option<TypeEntry<'a>>, BtfError> {
        let (offset, type_id) = (self.offset, self.type_id);
        if offset >= self.types.len() {
            return Ok(None);
        }
        let header: &[u8; TYPE_HEADER_LEN] = self
            .types
            .get(offset..)
            .and_then(<[u8]>::first_chunk)
            .ok_or(BtfError::TypeTruncated { type_id, offset })?;
        let name_off = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let [vlen_lo, vlen_hi, _, kind_byte] = [header[4], header[5], header[6], header[7]];
        let vlen = usize::from(u16::from_le_bytes([vlen_lo, vlen_hi]));
        let kind = u32::from(kind_byte & 0x1f);
        let body_len = body_len(kind, vlen).ok_or(BtfError::UnknownKind { kind, type_id })?;
        let (body, end) = offset
            .checked_add(TYPE_HEADER_LEN)
            .and_then(|start| Some((start, start.checked_add(body_len)?)))
            .and_then(|(start, end)| Some((self.types.get(start..end)?, end)))
            .ok_or(BtfError::TypeTruncated { type_id, offset })?;
        self.offset = end;
        // Cannot saturate: every type takes at least 12 of the type section's at most 4 GiB.
        self.type_id = type_id.saturating_add(1);
        Ok(Some(TypeEntry {
            type_id,
            name_off,
            kind,
            kind_flag: kind_byte & 0x80 != 0,
            body,
        }))
    }
}

/// Reads [`VMLINUX_BTF`] (or any path) and calls [`find_enums`].
///
/// # Errors
/// When the file cannot be read or is larger than [`MAX_BTF_LEN`], and as [`find_enums`].
pub fn read_enums(path: &Path, wanted: &[&str]) -> Result<Vec<Option<BtfEnum>>, BtfError> {
    let read_error = |source| BtfError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    // sysfs reports the BTF's true size, so one allocation suffices.
    let size_hint = file.metadata().map_or(0, |m| m.len()).min(MAX_BTF_LEN);
    // Mapping is about 30 times faster than reading from sysfs; fall back to reading where the
    // kernel refuses (before 6.16) or the file is not mappable.
    if let Some(len) = usize::try_from(size_hint).ok().and_then(NonZeroUsize::new)
        && let Ok(map) = ReadOnlyMap::of(&file, len)
    {
        return find_enums(map.bytes(), wanted);
    }
    let mut btf = Vec::with_capacity(usize::try_from(size_hint).unwrap_or(0));
    file.take(MAX_BTF_LEN + 1)
        .read_to_end(&mut btf)
        .map_err(read_error)?;
    if u64::try_from(btf.len()).unwrap_or(u64::MAX) > MAX_BTF_LEN {
        return Err(BtfError::TooLarge {
            path: path.to_owned(),
            limit: MAX_BTF_LEN,
        });
    }
    find_enums(&btf, wanted)
}

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_VERSION: u8 = 1;
/// The header's fields; `hdr_len` may say more, for fields added later that this reader can skip.
const HEADER_LEN: usize = 24;
/// `name_off`, `info` and `size`/`type`, common to every type.
const TYPE_HEADER_LEN: usize = 12;

/// `BTF_KIND_*` from `include/uapi/linux/btf.h`.
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// The bytes a type has after its common 12: the only thing the walk needs to know of a kind, and
/// what it cannot know of a kind added after this reader (`None`), which is why that is an error.
fn body_len(kind: u32, vlen: usize) -> Option<usize> {
    let (fixed, per_member): (usize, usize) = match kind {
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => (0, 0),
        kind::INT | kind::VAR | kind::DECL_TAG => (4, 0),
        kind::ARRAY => (12, 0),
        kind::ENUM | kind::FUNC_PROTO => (0, 8),
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => (0, 12),
        _ => return None,
    };
    per_member.checked_mul(vlen)?.checked_add(fixed)
}

/// Checks the header and returns the type and string sections.
fn sections(btf: &[u8]) -> Result<(&[u8], &[u8]), BtfError> {
    let truncated = |what, end| BtfError::Truncated {
        what,
        end,
        len: btf.len(),
    };
    // The magic first: a file that is not BTF at all deserves that answer, however short it is.
    match btf.first_chunk().map(|magic| u16::from_le_bytes(*magic)) {
        None => return Err(truncated("header", 2)),
        Some(BTF_MAGIC) => {}
        Some(found) if found == BTF_MAGIC.swap_bytes() => return Err(BtfError::BigEndian),
        Some(found) => return Err(BtfError::BadMagic { found }),
    }
    let header: &[u8; HEADER_LEN] = btf.first_chunk().ok_or_else(|| truncated("header", 24))?;
    // Total, for the constant offsets below: all within the 24 bytes.
    let word = |at: usize| {
        header
            .get(at..)
            .and_then(<[u8]>::first_chunk)
            .map_or(0, |w| u32::from_le_bytes(*w))
    };
    let (version, flags, hdr_len) = (header[2], header[3], word(4));
    if version != BTF_VERSION {
        return Err(BtfError::UnsupportedVersion { found: version });
    }
    if flags != 0 {
        return Err(BtfError::UnsupportedFlags { found: flags });
    }
    if usize::try_from(hdr_len).is_ok_and(|len| len < HEADER_LEN) {
        return Err(BtfError::HeaderTooShort { hdr_len });
    }
    // Section offsets count from the end of the header, whatever its length.
    let section = |what, off: u32, len: u32| {
        let start = u64::from(hdr_len) + u64::from(off);
        let end = start + u64::from(len);
        usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(start, end)| btf.get(start..end))
            .ok_or_else(|| truncated(what, end))
    };
    // The header itself must fit, whatever the sections say.
    section("header", 0, 0)?;
    Ok((
        section("type section", word(8), word(12))?,
        section("string section", word(16), word(20))?,
    ))
}

/// The string section from `offset` on, when `offset` is inside it.
fn string_tail(strings: &[u8], offset: u32) -> Option<&[u8]> {
    strings
        .get(usize::try_from(offset).ok()?..)
        .filter(|tail| !tail.is_empty())
}

/// Compares a type's name with a wanted one without decoding it: most enums are not wanted.
fn name_is(strings: &[u8], offset: u32, wanted: &[u8], type_id: u32) -> Result<bool, BtfError> {
    let tail = string_tail(strings, offset).ok_or(BtfError::BadStringOffset { type_id, offset })?;
    Ok(tail.get(..wanted.len()) == Some(wanted) && tail.get(wanted.len()) == Some(&0))
}

/// Decodes a name, charging it to `budget`. Many constants may point at one long string, so without
/// the budget a small input could make this allocate gigabytes; the search for the NUL stops at the
/// budget too, so a string without one cannot make the scan quadratic either.
fn decode_name(
    strings: &[u8],
    offset: u32,
    type_id: u32,
    budget: &mut usize,
) -> Result<String, BtfError> {
    let tail = string_tail(strings, offset).ok_or(BtfError::BadStringOffset { type_id, offset })?;
    let window = tail.get(..budget.saturating_add(1)).unwrap_or(tail);
    let name = window.split(|&b| b == 0).next().unwrap_or_default();
    if name.len() == window.len() {
        return Err(if window.len() < tail.len() {
            BtfError::NamesTooLong { type_id }
        } else {
            BtfError::UnterminatedString { type_id, offset }
        });
    }
    *budget = budget
        .checked_sub(name.len())
        .ok_or(BtfError::NamesTooLong { type_id })?;
    std::str::from_utf8(name)
        .map(str::to_owned)
        .map_err(|_| BtfError::NotUtf8 { type_id, offset })
}

/// `struct btf_enum { name_off; val }`: the same 32 bits are an `__s32` when `kind_flag` marks the
/// enum signed and a `__u32` otherwise, so the flag decides how they widen (both occur in vmlinux).
fn enum_constants(
    body: &[u8],
    signed: bool,
    strings: &[u8],
    type_id: u32,
    budget: &mut usize,
) -> Result<Vec<EnumConstant>, BtfError> {
    let (members, _) = body.as_chunks::<8>();
    members
        .iter()
        .map(|&[n0, n1, n2, n3, v0, v1, v2, v3]| {
            let name = decode_name(
                strings,
                u32::from_le_bytes([n0, n1, n2, n3]),
                type_id,
                budget,
            )?;
            let value = if signed {
                i64::from(i32::from_le_bytes([v0, v1, v2, v3])).cast_unsigned()
            } else {
                u64::from(u32::from_le_bytes([v0, v1, v2, v3]))
            };
            Ok(EnumConstant { name, value })
        })
        .collect()
}

/// `struct btf_enum64 { name_off; val_lo32; val_hi32 }`: already 64 bits, so signedness only
/// matters to whoever reads the value.
fn enum64_constants(
    body: &[u8],
    strings: &[u8],
    type_id: u32,
    budget: &mut usize,
) -> Result<Vec<EnumConstant>, BtfError> {
    let (members, _) = body.as_chunks::<12>();
    members
        .iter()
        .map(|&[n0, n1, n2, n3, l0, l1, l2, l3, h0, h1, h2, h3]| {
            let name = decode_name(
                strings,
                u32::from_le_bytes([n0, n1, n2, n3]),
                type_id,
                budget,
            )?;
            let value = u64::from_le_bytes([l0, l1, l2, l3, h0, h1, h2, h3]);
            Ok(EnumConstant { name, value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BPF_ENUMS: [&str; 4] = [
        "bpf_cmd",
        "bpf_map_type",
        "bpf_prog_type",
        "bpf_attach_type",
    ];

    /// The four bpf enums of the running kernel; fails, rather than skips, without kernel BTF.
    fn vmlinux_enums() -> Vec<BtfEnum> {
        let path = Path::new(VMLINUX_BTF);
        assert!(
            path.exists(),
            "{VMLINUX_BTF} is absent: these tests need a kernel built with CONFIG_DEBUG_INFO_BTF"
        );
        let found = read_enums(path, &BPF_ENUMS).unwrap_or_else(|e| panic!("{e}"));
        found
            .into_iter()
            .zip(BPF_ENUMS)
            .map(|(e, name)| e.unwrap_or_else(|| panic!("enum {name} is not in {VMLINUX_BTF}")))
            .collect()
    }

    fn value_of(e: &BtfEnum, name: &str) -> Option<u64> {
        e.constants.iter().find(|c| c.name == name).map(|c| c.value)
    }

    fn position_of(e: &BtfEnum, name: &str) -> usize {
        e.constants
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn vmlinux_has_the_bpf_enums() {
        let enums = vmlinux_enums();
        let [cmd, map, prog, attach] = enums.as_slice() else {
            panic!("expected four enums")
        };
        assert_eq!(cmd.name, "bpf_cmd");
        assert_eq!(value_of(cmd, "BPF_MAP_CREATE"), Some(0));
        assert_eq!(value_of(cmd, "BPF_PROG_LOAD"), Some(5));
        assert_eq!(value_of(cmd, "BPF_BTF_LOAD"), Some(18));
        assert_eq!(value_of(cmd, "BPF_TOKEN_CREATE"), Some(36));
        assert_eq!(value_of(cmd, "BPF_PROG_TEST_RUN"), Some(10));
        assert_eq!(value_of(cmd, "BPF_PROG_RUN"), Some(10));
        assert!(position_of(cmd, "BPF_PROG_TEST_RUN") < position_of(cmd, "BPF_PROG_RUN"));
        assert_eq!(value_of(cmd, "__MAX_BPF_CMD"), Some(38));
        assert_eq!(value_of(attach, "BPF_XDP"), Some(37));
        assert_eq!(value_of(prog, "BPF_PROG_TYPE_XDP"), Some(6));
        assert_eq!(value_of(map, "BPF_MAP_TYPE_ARRAY"), Some(2));
        for e in &enums {
            assert!(
                e.constants.first().is_some_and(|c| c.value == 0),
                "{} starts at 0",
                e.name
            );
        }
    }

    #[test]
    fn vmlinux_lookup_of_an_absent_name_scans_everything() {
        let path = Path::new(VMLINUX_BTF);
        assert!(
            path.exists(),
            "{VMLINUX_BTF} is absent: this test needs kernel BTF"
        );
        let found = read_enums(path, &["bpf_cmd", "no_such_enum_anywhere"]).unwrap();
        assert!(found[0].is_some());
        assert!(found[1].is_none());
    }

    /// Builds small BTF blobs: a type section, a string section, and a header in front.
    struct Blob {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Blob {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }

        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let offset = u32::try_from(self.strings.len()).unwrap();
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            offset
        }

        fn raw(
            &mut self,
            name_off: u32,
            kind: u32,
            kind_flag: bool,
            vlen: u16,
            size: u32,
            body: &[u8],
        ) -> &mut Self {
            let info = u32::from(vlen) | kind << 24 | u32::from(kind_flag) << 31;
            for word in [name_off, info, size] {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.types.extend_from_slice(body);
            self
        }

        fn int(&mut self, name: &str) -> &mut Self {
            let name = self.string(name);
            self.raw(name, kind::INT, false, 0, 4, &32u32.to_le_bytes())
        }

        fn enum32(&mut self, name: &str, signed: bool, constants: &[(&str, u32)]) -> &mut Self {
            let name = self.string(name);
            let mut body = Vec::new();
            for &(constant, value) in constants {
                body.extend_from_slice(&self.string(constant).to_le_bytes());
                body.extend_from_slice(&value.to_le_bytes());
            }
            let vlen = u16::try_from(constants.len()).unwrap();
            self.raw(name, kind::ENUM, signed, vlen, 4, &body)
        }

        fn enum64(&mut self, name: &str, constants: &[(&str, u64)]) -> &mut Self {
            let name = self.string(name);
            let mut body = Vec::new();
            for &(constant, value) in constants {
                body.extend_from_slice(&self.string(constant).to_le_bytes());
                body.extend_from_slice(&value.to_le_bytes());
            }
            let vlen = u16::try_from(constants.len()).unwrap();
            self.raw(name, kind::ENUM64, false, vlen, 8, &body)
        }

        /// Header fields: magic, version, flags, `hdr_len`, then the four section words.
        fn build_with(
            &self,
            magic: u16,
            version: u8,
            flags: u8,
            hdr_len: u32,
            extra_header: &[u8],
        ) -> Vec<u8> {
            let type_len = u32::try_from(self.types.len()).unwrap();
            let str_len = u32::try_from(self.strings.len()).unwrap();
            let mut out = Vec::new();
            out.extend_from_slice(&magic.to_le_bytes());
            out.extend_from_slice(&[version, flags]);
            for word in [hdr_len, 0, type_len, type_len, str_len] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(extra_header);
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }

        fn build(&self) -> Vec<u8> {
            self.build_with(BTF_MAGIC, 1, 0, 24, &[])
        }
    }

    /// A blob with every fixed-size and variable-size kind before two enums.
    fn sample() -> Vec<u8> {
        let mut blob = Blob::new();
        blob.int("int")
            .raw(0, kind::PTR, false, 0, 1, &[])
            .raw(
                0,
                kind::ARRAY,
                false,
                0,
                0,
                &[1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0],
            )
            .raw(0, kind::STRUCT, false, 1, 4, &[0; 12])
            .raw(0, kind::FUNC_PROTO, false, 2, 1, &[0; 16])
            .raw(0, kind::DECL_TAG, false, 0, 1, &[0; 4])
            .enum32(
                "colour",
                false,
                &[("RED", 0), ("GREEN", 1), ("BIG", 0xffff_fff0)],
            )
            .enum64("wide", &[("LOW", 1), ("HIGH", 0x1234_5678_9abc_def0)]);
        blob.build()
    }

    fn one(btf: &[u8], name: &str) -> Option<BtfEnum> {
        find_enums(btf, &[name]).unwrap().pop().unwrap()
    }

    fn constants(e: &BtfEnum) -> Vec<(&str, u64)> {
        e.constants
            .iter()
            .map(|c| (c.name.as_str(), c.value))
            .collect()
    }

    #[test]
    fn enum_and_enum64() {
        let btf = sample();
        let found = find_enums(&btf, &["wide", "colour"]).unwrap();
        let [Some(wide), Some(colour)] = found.as_slice() else {
            panic!("{found:?}")
        };
        assert_eq!(wide.name, "wide");
        assert_eq!(
            constants(wide),
            [("LOW", 1), ("HIGH", 0x1234_5678_9abc_def0)]
        );
        assert_eq!(colour.name, "colour");
        assert_eq!(
            constants(colour),
            [("RED", 0), ("GREEN", 1), ("BIG", 0xffff_fff0)]
        );
    }

    #[test]
    fn signed_enum_is_sign_extended() {
        let mut blob = Blob::new();
        blob.enum32(
            "s",
            true,
            &[("MINUS_FIVE", (-5i32).cast_unsigned()), ("TWO", 2)],
        );
        let e = one(&blob.build(), "s").unwrap();
        assert_eq!(
            constants(&e),
            [("MINUS_FIVE", (-5i64).cast_unsigned()), ("TWO", 2)]
        );
    }

    #[test]
    fn absent_names_are_none_and_order_follows_wanted() {
        let btf = sample();
        let found = find_enums(&btf, &["nope", "colour", "int", "colour", ""]).unwrap();
        assert_eq!(found.len(), 5);
        assert!(found[0].is_none());
        assert_eq!(found[1].as_ref().unwrap().name, "colour");
        assert!(found[2].is_none(), "an INT is not an enum");
        assert_eq!(found[3], found[1]);
        assert!(found[4].is_none());
        assert!(find_enums(&btf, &[]).unwrap().is_empty());
        // A wanted name that is a prefix or an extension of an enum's name does not match it.
        assert_eq!(
            find_enums(&btf, &["colou", "colours"]).unwrap(),
            [None, None]
        );
    }

    #[test]
    fn first_of_two_wins() {
        let mut blob = Blob::new();
        blob.enum32("e", false, &[("FIRST", 1)])
            .enum64("e", &[("SECOND", 2)]);
        let e = one(&blob.build(), "e").unwrap();
        assert_eq!(constants(&e), [("FIRST", 1)]);
    }

    #[test]
    fn scanning_stops_once_everything_is_found() {
        let mut blob = Blob::new();
        blob.enum32("e", false, &[("A", 1)])
            .raw(0, 20, false, 0, 0, &[]);
        let btf = blob.build();
        assert!(one(&btf, "e").is_some());
        let err = find_enums(&btf, &["e", "absent"]).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::UnknownKind {
                    kind: 20,
                    type_id: 2
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "BTF type 2 has unknown kind 20 (newer kernel than this reader, or corrupt BTF?)"
        );
    }

    #[test]
    fn truncated_header() {
        let btf = sample();
        for len in [0, 1] {
            let err = find_enums(&btf[..len], &["colour"]).unwrap_err();
            assert!(
                matches!(
                    err,
                    BtfError::Truncated {
                        what: "header",
                        end: 2,
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        for len in [2, 10, 23] {
            let err = find_enums(&btf[..len], &["colour"]).unwrap_err();
            assert!(
                matches!(
                    err,
                    BtfError::Truncated {
                        what: "header",
                        end: 24,
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        let mut long_header = Blob::new().build_with(BTF_MAGIC, 1, 0, 1000, &[]);
        long_header.truncate(24);
        let err = find_enums(&long_header, &["colour"]).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::Truncated {
                    what: "header",
                    end: 1000,
                    len: 24
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn every_prefix_is_an_error() {
        let btf = sample();
        for len in 0..btf.len() {
            assert!(
                find_enums(&btf[..len], &["wide"]).is_err(),
                "prefix of {len} bytes"
            );
        }
        assert!(find_enums(&btf, &["wide"]).unwrap()[0].is_some());
    }

    #[test]
    fn truncated_type_section() {
        let mut blob = Blob::new();
        blob.int("int").enum32("e", false, &[("A", 1), ("B", 2)]);
        let mut btf = blob.build();
        // Shorten type_len by one member; the string section stays where it is.
        let type_len = u32::from_le_bytes(btf[12..16].try_into().unwrap());
        btf[12..16].copy_from_slice(&(type_len - 8).to_le_bytes());
        let err = find_enums(&btf, &["e"]).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::TypeTruncated {
                    type_id: 2,
                    offset: 16
                }
            ),
            "{err:?}"
        );

        // A section that ends inside a type's common part.
        btf[12..16].copy_from_slice(&20u32.to_le_bytes());
        let err = find_enums(&btf, &["e"]).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::TypeTruncated {
                    type_id: 2,
                    offset: 16
                }
            ),
            "{err:?}"
        );

        // A string section claiming more bytes than there are.
        let mut btf = blob.build();
        let str_len = u32::from_le_bytes(btf[20..24].try_into().unwrap());
        btf[20..24].copy_from_slice(&(str_len + 1).to_le_bytes());
        let err = find_enums(&btf, &["e"]).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::Truncated {
                    what: "string section",
                    ..
                }
            ),
            "{err:?}"
        );

        // Offsets near u32::MAX must not overflow.
        let mut btf = blob.build();
        btf[8..24].copy_from_slice(&[0xff; 16]);
        let err = find_enums(&btf, &["e"]).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::Truncated {
                    what: "type section",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bad_and_swapped_magic() {
        let blob = Blob::new();
        let err = find_enums(&blob.build_with(0x1234, 1, 0, 24, &[]), &["e"]).unwrap_err();
        assert!(
            matches!(err, BtfError::BadMagic { found: 0x1234 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "not BTF: the magic number is 0x1234, expected 0xeb9f"
        );
        let err = find_enums(&[0x7f, b'E', b'L', b'F'], &["e"]).unwrap_err();
        assert!(
            matches!(err, BtfError::BadMagic { found: 0x457f }),
            "{err:?}"
        );
        let err = find_enums(&blob.build_with(0x9feb, 1, 0, 24, &[]), &["e"]).unwrap_err();
        assert!(matches!(err, BtfError::BigEndian), "{err:?}");
        assert!(err.to_string().contains("big-endian"));
    }

    #[test]
    fn unsupported_version_and_flags() {
        let blob = Blob::new();
        let err = find_enums(&blob.build_with(BTF_MAGIC, 2, 0, 24, &[]), &["e"]).unwrap_err();
        assert!(
            matches!(err, BtfError::UnsupportedVersion { found: 2 }),
            "{err:?}"
        );
        let err = find_enums(&blob.build_with(BTF_MAGIC, 1, 1, 24, &[]), &["e"]).unwrap_err();
        assert!(
            matches!(err, BtfError::UnsupportedFlags { found: 1 }),
            "{err:?}"
        );
    }

    #[test]
    fn header_length() {
        let mut blob = Blob::new();
        blob.enum32("e", false, &[("A", 1)]);
        let err = find_enums(&blob.build_with(BTF_MAGIC, 1, 0, 16, &[]), &["e"]).unwrap_err();
        assert!(
            matches!(err, BtfError::HeaderTooShort { hdr_len: 16 }),
            "{err:?}"
        );
        // A longer header (fields added by a newer kernel) is skipped.
        let btf = blob.build_with(BTF_MAGIC, 1, 0, 32, &[0; 8]);
        assert_eq!(constants(&one(&btf, "e").unwrap()), [("A", 1)]);
    }

    #[test]
    fn unknown_kind() {
        let mut blob = Blob::new();
        blob.int("int")
            .raw(0, 0, false, 0, 0, &[])
            .enum32("e", false, &[]);
        let err = find_enums(&blob.build(), &["e"]).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::UnknownKind {
                    kind: 0,
                    type_id: 2
                }
            ),
            "{err:?}"
        );
        let mut blob = Blob::new();
        blob.raw(0, 31, true, 0xffff, 0, &[]);
        let err = find_enums(&blob.build(), &["e"]).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::UnknownKind {
                    kind: 31,
                    type_id: 1
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bad_strings() {
        // An enum's name out of range, even when the enum is not wanted.
        let mut blob = Blob::new();
        let str_len = u32::try_from(blob.strings.len()).unwrap();
        blob.raw(str_len, kind::ENUM, false, 0, 4, &[]);
        let err = find_enums(&blob.build(), &["e"]).unwrap_err();
        assert!(
            matches!(err, BtfError::BadStringOffset { type_id: 1, offset } if offset == str_len),
            "{err:?}"
        );

        // A wanted enum's constant name out of range.
        let mut blob = Blob::new();
        let name = blob.string("e");
        let mut body = 0x00ff_ffff_u32.to_le_bytes().to_vec();
        body.extend_from_slice(&7u32.to_le_bytes());
        blob.raw(name, kind::ENUM, false, 1, 4, &body);
        let err = find_enums(&blob.build(), &["e"]).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::BadStringOffset {
                    type_id: 1,
                    offset: 0x00ff_ffff
                }
            ),
            "{err:?}"
        );

        // A constant name running off the end of the string section, and one that is not UTF-8.
        for (tail, expected_unterminated) in [(&b"AB"[..], true), (&b"\xff\xfe\0"[..], false)] {
            let mut blob = Blob::new();
            let name = blob.string("e");
            let constant = u32::try_from(blob.strings.len()).unwrap();
            blob.strings.extend_from_slice(tail);
            let mut body = constant.to_le_bytes().to_vec();
            body.extend_from_slice(&7u32.to_le_bytes());
            blob.raw(name, kind::ENUM, false, 1, 4, &body);
            let err = find_enums(&blob.build(), &["e"]).unwrap_err();
            if expected_unterminated {
                assert!(
                    matches!(err, BtfError::UnterminatedString { type_id: 1, .. }),
                    "{err:?}"
                );
            } else {
                assert!(
                    matches!(err, BtfError::NotUtf8 { type_id: 1, .. }),
                    "{err:?}"
                );
            }
        }
    }

    #[test]
    fn repeated_long_names_do_not_allocate_gigabytes() {
        // 65535 constants all naming one 64 KiB string would decode to 4 GiB of names.
        let mut blob = Blob::new();
        let name = blob.string("e");
        let long = blob.string(&"x".repeat(64 << 10));
        let mut body = Vec::new();
        for _ in 0..0xffff {
            body.extend_from_slice(&long.to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
        }
        blob.raw(name, kind::ENUM, false, 0xffff, 4, &body);
        let err = find_enums(&blob.build(), &["e"]).unwrap_err();
        assert!(
            matches!(err, BtfError::NamesTooLong { type_id: 1 }),
            "{err:?}"
        );
    }

    #[test]
    fn random_mutations_never_panic() {
        let original = sample();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut outcomes = [0usize; 2];
        for _ in 0..5000 {
            let mut btf = original.clone();
            let len = u64::try_from(btf.len()).unwrap();
            for _ in 0..=next() % 8 {
                let at = usize::try_from(next() % len).unwrap();
                let [byte, ..] = next().to_le_bytes();
                btf[at] = byte;
            }
            if next() % 4 == 0 {
                btf.truncate(usize::try_from(next() % len).unwrap());
            }
            let result = find_enums(&btf, &["colour", "wide", "absent"]);
            outcomes[usize::from(result.is_ok())] += 1;
        }
        // Both outcomes occur, so the mutations reach past the header checks.
        assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
    }
}
