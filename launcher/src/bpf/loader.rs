//! A token-aware loader for aya users.
//!
//! aya (0.14) has no BPF token support, and its `EbpfLoader` probes kernel features with
//! privileged `bpf()` calls that fail inside a user namespace and are silently taken as "feature
//! missing". This loader parses and relocates with `aya-obj`, issues the token-bearing commands
//! (`BPF_BTF_LOAD`, `BPF_MAP_CREATE`, `BPF_PROG_LOAD`) itself with the token, and hands the maps
//! back to aya (`MapData::from_fd`), where map access needs no privilege.
//!
//! ```no_run
//! use bpf_token_launcher::bpf::loader::TokenLoader;
//! use bpf_token_launcher::bpf::token::Token;
//! use std::path::Path;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let token = Token::from_bpffs_path(Path::new("/sys/fs/bpf"))?;
//! let object = std::fs::read("counter.bpf.o")?;
//! let mut loaded = TokenLoader::new(&token).load(&object)?;
//! let map = loaded.take_map("COUNTER").expect("the object defines COUNTER");
//! let counter: aya::maps::Array<_, u64> = aya::maps::Array::try_from(map)?;
//! let program = loaded.program("xdp_counter").expect("the object defines xdp_counter");
//! println!("program fd {:?}, counter {}", program.fd(), counter.get(&0, 0)?);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};

use aya_obj::btf::{Btf, BtfFeatures};
use aya_obj::generated::bpf_map_type;
use aya_obj::{EbpfSectionKind, Features, Object};

use crate::bpf::object::{ProgramSpec, UnsupportedSection, program_spec};
use crate::bpf::token::Token;
use crate::diagnosis::{Cause, Diagnosed, Step};
use crate::policy::{DelegateKind, Delegation, EnumNames};
use crate::sys::bpf::{LogBuffer, MapCreateAttr, ProgLoadAttr};
use crate::sys::{self, Errno, SysError};

/// Size of the verifier log buffer used when a load fails (the kernel caps it at 16 MiB).
const VERIFIER_LOG_SIZE: usize = 4 << 20;

/// Loads eBPF objects with a BPF token.
#[derive(Debug, Clone, Copy)]
pub struct TokenLoader<'t> {
    token: Option<&'t Token>,
}

/// One loaded program.
#[derive(Debug)]
pub struct LoadedProgram {
    name: String,
    spec: ProgramSpec,
    fd: OwnedFd,
}

impl LoadedProgram {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Program type, expected attach type and flags it was loaded with.
    pub const fn spec(&self) -> ProgramSpec {
        self.spec
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Everything an object created in the kernel: its BTF, its maps (as aya maps) and its programs.
#[derive(Debug)]
pub struct LoadedObject {
    btf: Option<OwnedFd>,
    maps: HashMap<String, aya::maps::Map>,
    programs: HashMap<String, LoadedProgram>,
}

impl LoadedObject {
    /// Takes a map out, to wrap it in a typed aya map (`Array::try_from(map)`).
    pub fn take_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        self.maps.remove(name)
    }

    pub fn program(&self, name: &str) -> Option<&LoadedProgram> {
        self.programs.get(name)
    }

    pub fn programs(&self) -> impl Iterator<Item = &LoadedProgram> {
        self.programs.values()
    }

    pub fn btf_fd(&self) -> Option<BorrowedFd<'_>> {
        self.btf.as_ref().map(AsFd::as_fd)
    }
}

/// The BTF and BPF features a kernel with BPF tokens (6.9+) has: every one aya knows of. No
/// probing is needed, and probing would not work from inside a user namespace anyway.
fn token_kernel_features() -> Features {
    let btf = BtfFeatures::new(true, true, true, true, true, true, true, true);
    Features::new(true, true, true, true, true, true, true, Some(btf))
}

impl<'t> TokenLoader<'t> {
    /// A loader that passes `token` with every token-aware command.
    pub const fn new(token: &'t Token) -> Self {
        Self { token: Some(token) }
    }

    /// A loader that uses no token (the caller's own capabilities decide).
    pub const fn without_token() -> Self {
        Self { token: None }
    }

    fn token_fd(&self) -> Option<BorrowedFd<'t>> {
        self.token.map(AsFd::as_fd)
    }

    fn token_label(&self) -> String {
        self.token_fd()
            .map_or_else(|| "none".to_owned(), |fd| fd.as_raw_fd().to_string())
    }

    /// Parses, relocates and loads `object`: BTF first, then maps, then programs.
    pub fn load(&self, object: &[u8]) -> Result<LoadedObject, LoadError> {
        let mut obj = Object::parse(object).map_err(LoadError::Parse)?;
        let features = token_kernel_features();
        // Reject what we cannot load before creating anything in the kernel.
        let specs = obj
            .programs
            .iter()
            .map(|(name, p)| Ok((name.clone(), program_spec(&p.section)?)))
            .collect::<Result<HashMap<_, _>, UnsupportedSection>>()?;

        let btf = self.load_btf(&mut obj, &features)?;
        if obj.has_btf_relocations() {
            let target = Btf::from_sys_fs().map_err(|e| LoadError::KernelBtf(e.to_string()))?;
            obj.relocate_btf(&target)
                .map_err(|e| LoadError::Relocation(e.to_string()))?;
        }

        let mut map_fds: Vec<(String, OwnedFd, aya_obj::Map)> = Vec::new();
        // Maps of maps need their inner map's descriptor: create plain maps first.
        let mut entries: Vec<(String, aya_obj::Map)> = obj.maps.drain().collect();
        entries.sort_by_key(|(name, m)| (is_map_of_maps(m.map_type()), name.clone()));
        for (name, map) in entries {
            let fd = self.create_map(&name, &map, btf.as_ref().map(AsFd::as_fd))?;
            map_fds.push((name, fd, map));
        }

        let text_sections: HashSet<usize> =
            obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(
            map_fds
                .iter()
                .map(|(name, fd, map)| (name.as_str(), fd.as_raw_fd(), map)),
            &text_sections,
        )
        .map_err(|e| LoadError::Relocation(e.to_string()))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| LoadError::Relocation(e.to_string()))?;
        obj.sanitize_functions(&features);

        let mut programs = HashMap::new();
        let mut names: Vec<&String> = obj.programs.keys().collect();
        names.sort();
        for name in names {
            let program = &obj.programs[name];
            let function = &obj.functions[&program.function_key()];
            let spec = specs[name];
            let fd =
                self.load_program(name, spec, program, function, btf.as_ref().map(AsFd::as_fd))?;
            programs.insert(
                name.clone(),
                LoadedProgram {
                    name: name.clone(),
                    spec,
                    fd,
                },
            );
        }

        let mut maps = HashMap::new();
        for (name, fd, _) in map_fds {
            let data = aya::maps::MapData::from_fd(fd).map_err(|source| LoadError::AyaMap {
                name: name.clone(),
                source,
            })?;
            let map = aya::maps::Map::from_map_data(data).map_err(|source| LoadError::AyaMap {
                name: name.clone(),
                source,
            })?;
            maps.insert(name, map);
        }
        Ok(LoadedObject {
            btf,
            maps,
            programs,
        })
    }

    fn load_btf(
        &self,
        obj: &mut Object,
        features: &Features,
    ) -> Result<Option<OwnedFd>, LoadError> {
        let Some(btf_features) = features.btf() else {
            return Ok(None);
        };
        let Some(btf) = obj
            .fixup_and_sanitize_btf(btf_features)
            .map_err(|e| LoadError::Relocation(e.to_string()))?
        else {
            return Ok(None);
        };
        let bytes = btf.to_bytes();
        match sys::bpf::btf_load(&bytes, self.token_fd(), None) {
            Ok(fd) => {
                log::debug!(
                    "bpf(BPF_BTF_LOAD, token_fd={}, {} bytes) = fd {}",
                    self.token_label(),
                    bytes.len(),
                    fd.as_raw_fd()
                );
                Ok(Some(fd))
            }
            Err(source) => {
                // Load again with a log to tell the user what the kernel disliked.
                let mut buf = vec![0u8; VERIFIER_LOG_SIZE];
                let mut log = LogBuffer {
                    level: 1,
                    buf: &mut buf,
                };
                let retry = sys::bpf::btf_load(&bytes, self.token_fd(), Some(&mut log));
                let log_text = if retry.is_err() {
                    log.text()
                } else {
                    String::new()
                };
                Err(LoadError::Btf {
                    source: self.diagnose(source, &[(DelegateKind::Cmds, btf_load_cmd())]),
                    log: log_text.into_boxed_str(),
                })
            }
        }
    }

    fn create_map(
        &self,
        name: &str,
        map: &aya_obj::Map,
        btf: Option<BorrowedFd<'_>>,
    ) -> Result<OwnedFd, LoadError> {
        let map_type = map.map_type();
        let mut max_entries = map.max_entries();
        if map_type == bpf_map_type::BPF_MAP_TYPE_PERF_EVENT_ARRAY as u32 && max_entries == 0 {
            max_entries = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        }
        let btf_ids = match map {
            aya_obj::Map::Btf(m) if map_takes_btf_types(map_type) => {
                btf.map(|fd| (fd, m.def.btf_key_type_id, m.def.btf_value_type_id))
            }
            _ => None,
        };
        let inner = match map.inner() {
            Some(inner) if is_map_of_maps(map_type) => {
                Some(self.create_map(&format!("{name}.inner"), &inner, btf)?)
            }
            _ => None,
        };
        let attr = MapCreateAttr {
            map_type,
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries,
            map_flags: map.map_flags(),
            map_extra: map.map_extra(),
            name: name.as_bytes(),
            btf: btf_ids,
            inner_map: inner.as_ref().map(AsFd::as_fd),
        };
        let fd = sys::bpf::map_create(&attr, self.token_fd()).map_err(|source| {
            LoadError::MapCreate {
                name: name.to_owned(),
                map_type: names()
                    .name_of(DelegateKind::Maps, map_type)
                    .unwrap_or("unknown"),
                source: self.diagnose(
                    source,
                    &[
                        (DelegateKind::Cmds, map_create_cmd()),
                        (DelegateKind::Maps, map_type),
                    ],
                ),
            }
        })?;
        log::debug!(
            "bpf(BPF_MAP_CREATE, token_fd={}, name={name}, type={}, key={}, value={}, max_entries={max_entries}) = fd {}",
            self.token_label(),
            names().name_of(DelegateKind::Maps, map_type).unwrap_or("?"),
            map.key_size(),
            map.value_size(),
            fd.as_raw_fd()
        );
        // Global data sections (.data, .rodata, .bss) are single-entry arrays holding their
        // initial contents; .rodata is frozen so the verifier can treat it as constant.
        if !map.data().is_empty() {
            sys::bpf::map_update_elem(fd.as_fd(), &0u32.to_ne_bytes(), map.data(), 0).map_err(
                |source| LoadError::MapInit {
                    name: name.to_owned(),
                    source,
                },
            )?;
        }
        if map.section_kind() == EbpfSectionKind::Rodata {
            sys::bpf::map_freeze(fd.as_fd()).map_err(|source| LoadError::MapInit {
                name: name.to_owned(),
                source,
            })?;
        }
        Ok(fd)
    }

    fn load_program(
        &self,
        name: &str,
        spec: ProgramSpec,
        program: &aya_obj::Program,
        function: &aya_obj::Function,
        btf: Option<BorrowedFd<'_>>,
    ) -> Result<OwnedFd, LoadError> {
        let func_info = function.func_info.func_info_bytes();
        let line_info = function.line_info.line_info_bytes();
        let attr = ProgLoadAttr {
            prog_type: spec.prog_type as u32,
            expected_attach_type: spec.expected_attach_type,
            prog_flags: spec.prog_flags,
            name: name.as_bytes(),
            insns: &function.instructions,
            license: &program.license,
            kern_version: program.kernel_version.unwrap_or(0),
            btf,
            func_info: &func_info,
            func_info_cnt: function.func_info.len() as u32,
            func_info_rec_size: function.func_info_rec_size as u32,
            line_info: &line_info,
            line_info_cnt: function.line_info.len() as u32,
            line_info_rec_size: function.line_info_rec_size as u32,
            attach_btf_id: None,
        };
        let names = names();
        let prog_type = names
            .name_of(DelegateKind::Progs, spec.prog_type as u32)
            .unwrap_or("unknown");
        let attach_type = names
            .name_of(DelegateKind::Attachs, spec.expected_attach_type)
            .unwrap_or("unknown");
        match sys::bpf::prog_load(&attr, self.token_fd(), None) {
            Ok(fd) => {
                log::debug!(
                    "bpf(BPF_PROG_LOAD, token_fd={}, name={name}, type={prog_type}, expected_attach_type={attach_type}, {} insns) = fd {}",
                    self.token_label(),
                    function.instructions.len(),
                    fd.as_raw_fd()
                );
                Ok(fd)
            }
            Err(source) => {
                let log_text = if source.errno == Errno::EPERM {
                    String::new()
                } else {
                    let mut buf = vec![0u8; VERIFIER_LOG_SIZE];
                    let mut log = LogBuffer {
                        level: 1,
                        buf: &mut buf,
                    };
                    let _ = sys::bpf::prog_load(&attr, self.token_fd(), Some(&mut log));
                    log.text()
                };
                Err(LoadError::ProgLoad {
                    name: name.to_owned(),
                    prog_type,
                    attach_type,
                    source: self.diagnose(
                        source,
                        &[
                            (DelegateKind::Cmds, prog_load_cmd()),
                            (DelegateKind::Progs, spec.prog_type as u32),
                            (DelegateKind::Attachs, spec.expected_attach_type),
                        ],
                    ),
                    log: log_text.into_boxed_str(),
                })
            }
        }
    }

    /// Explains a failed load; an EPERM by comparing what the call needed with what the token
    /// allows. The kernel drops a token that does not cover a call and falls back to the
    /// caller's capabilities in the initial namespace, so the EPERM itself never says which
    /// delegation was missing.
    fn diagnose(&self, source: SysError, needed: &[(DelegateKind, u32)]) -> Diagnosed {
        if source.errno != Errno::EPERM {
            return Diagnosed::new(Step::Load, source);
        }
        let Some(token) = self.token else {
            return Diagnosed::with_cause(Cause::LoadWithoutToken, source);
        };
        let allowed: Delegation = match token.allowed() {
            Ok(allowed) => allowed,
            Err(e) => {
                return Diagnosed::with_cause(Cause::TokenMissingDelegation, source)
                    .detail(format!("the token's fdinfo could not be read: {e}"));
            }
        };
        let names = names();
        let missing: Vec<String> = needed
            .iter()
            .filter(|(kind, value)| !allowed.get(*kind).contains(*value))
            .map(|(kind, value)| {
                let name = names
                    .name_of(*kind, *value)
                    .map_or_else(|| value.to_string(), str::to_owned);
                format!(
                    "{} lacks `{name}` (add `{name}` to {})",
                    kind.option(),
                    kind.flag()
                )
            })
            .collect();
        if missing.is_empty() {
            Diagnosed::with_cause(Cause::TokenCallerLacksCapability, source)
        } else {
            Diagnosed::with_cause(Cause::TokenMissingDelegation, source).detail(missing.join("; "))
        }
    }
}

fn names() -> &'static EnumNames {
    EnumNames::for_running_kernel()
}

const fn map_create_cmd() -> u32 {
    aya_obj::generated::bpf_cmd::BPF_MAP_CREATE as u32
}
const fn prog_load_cmd() -> u32 {
    aya_obj::generated::bpf_cmd::BPF_PROG_LOAD as u32
}
const fn btf_load_cmd() -> u32 {
    aya_obj::generated::bpf_cmd::BPF_BTF_LOAD as u32
}

const fn is_map_of_maps(map_type: u32) -> bool {
    map_type == bpf_map_type::BPF_MAP_TYPE_ARRAY_OF_MAPS as u32
        || map_type == bpf_map_type::BPF_MAP_TYPE_HASH_OF_MAPS as u32
}

/// Map types the kernel refuses BTF key/value types for (the same list as libbpf and aya).
fn map_takes_btf_types(map_type: u32) -> bool {
    use bpf_map_type as M;
    ![
        M::BPF_MAP_TYPE_PERF_EVENT_ARRAY,
        M::BPF_MAP_TYPE_CGROUP_ARRAY,
        M::BPF_MAP_TYPE_STACK_TRACE,
        M::BPF_MAP_TYPE_ARRAY_OF_MAPS,
        M::BPF_MAP_TYPE_HASH_OF_MAPS,
        M::BPF_MAP_TYPE_DEVMAP,
        M::BPF_MAP_TYPE_DEVMAP_HASH,
        M::BPF_MAP_TYPE_CPUMAP,
        M::BPF_MAP_TYPE_XSKMAP,
        M::BPF_MAP_TYPE_SOCKMAP,
        M::BPF_MAP_TYPE_SOCKHASH,
        M::BPF_MAP_TYPE_QUEUE,
        M::BPF_MAP_TYPE_STACK,
        M::BPF_MAP_TYPE_RINGBUF,
        M::BPF_MAP_TYPE_BLOOM_FILTER,
    ]
    .iter()
    .any(|t| *t as u32 == map_type)
}

/// A load that failed; every variant names the object part and the call.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("parsing the eBPF object: {0}")]
    Parse(aya_obj::ParseError),
    #[error(transparent)]
    Unsupported(#[from] UnsupportedSection),
    #[error("relocating the eBPF object: {0}")]
    Relocation(String),
    #[error("reading the kernel's BTF for CO-RE relocations: {0}")]
    KernelBtf(String),
    #[error("loading the object's BTF: {source}{}", log_suffix(log))]
    Btf { source: Diagnosed, log: Box<str> },
    #[error("creating map `{name}` (type {map_type}): {source}")]
    MapCreate {
        name: String,
        /// The running kernel's name of the type (names live as long as the process).
        map_type: &'static str,
        source: Diagnosed,
    },
    #[error("initialising map `{name}`: {source}")]
    MapInit { name: String, source: SysError },
    #[error(
        "loading program `{name}` (type {prog_type}, expected attach type {attach_type}): {source}{}",
        log_suffix(log)
    )]
    ProgLoad {
        name: String,
        prog_type: &'static str,
        attach_type: &'static str,
        source: Diagnosed,
        /// The verifier's log (boxed: errors travel by value through every caller).
        log: Box<str>,
    },
    #[error("handing map `{name}` to aya: {source}")]
    AyaMap {
        name: String,
        source: aya::maps::MapError,
    },
}

impl LoadError {
    /// The verifier or BTF log the kernel wrote, if any.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            Self::Btf { log, .. } | Self::ProgLoad { log, .. } if !log.is_empty() => Some(log),
            _ => None,
        }
    }

    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Btf { source, .. }
            | Self::MapCreate { source, .. }
            | Self::ProgLoad { source, .. } => Some(source.errno()),
            Self::MapInit { source, .. } => Some(source.errno),
            _ => None,
        }
    }
}

fn log_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("\nverifier log:\n{}", log.trim_end())
    }
}
