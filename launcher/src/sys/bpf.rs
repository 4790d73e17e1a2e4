//! The `bpf(2)` commands this project issues itself, one function per command.
//!
//! Only the commands that take a BPF token (`BPF_BTF_LOAD`, `BPF_MAP_CREATE`, `BPF_PROG_LOAD`),
//! `BPF_TOKEN_CREATE`, and the few calls aya cannot make for us on a program it did not load
//! (`BPF_LINK_CREATE`, data-section map initialisation) live here. Map lookups go through aya.
//! Every descriptor the kernel returns from `bpf()` is already close-on-exec.

use std::ffi::CStr;
use std::mem;
use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd};

use aya_obj::generated::{BPF_F_TOKEN_FD, bpf_attr, bpf_cmd, bpf_insn};

use super::{SysError, fd_result, unit_result};

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> libc::c_long {
    // The process serving a gateway's listener runs under the same filter: a call the filter
    // sends to the listener would wait for an answer only this process can give.
    assert!(
        !super::seccomp::serves_a_listener()
            || !matches!(
                cmd,
                bpf_cmd::BPF_MAP_CREATE | bpf_cmd::BPF_PROG_LOAD | bpf_cmd::BPF_BTF_LOAD
            ),
        "bpf({cmd:?}) from the process that answers the sandbox's bpf() calls would wait for itself"
    );
    // SAFETY: attr is a fully initialised bpf_attr of the size we pass; the pointers inside it
    // are set by the callers below to buffers that outlive this call.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            std::ptr::from_mut(attr),
            mem::size_of::<bpf_attr>() as libc::c_uint,
        )
    }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a plain C union of integers; all-zero is its documented default.
    unsafe { mem::zeroed() }
}

/// The token argument of a token-aware command: the descriptor goes into `*_token_fd` and
/// `BPF_F_TOKEN_FD` into the flags (without the flag the kernel ignores the descriptor).
fn token_parts(token: Option<BorrowedFd<'_>>) -> (i32, u32) {
    token.map_or((0, 0), |fd| explicit_token_parts(fd, true))
}

/// Any descriptor in the token field, with or without `BPF_F_TOKEN_FD`.
fn explicit_token_parts(fd: BorrowedFd<'_>, token_flag: bool) -> (i32, u32) {
    (fd.as_raw_fd(), if token_flag { BPF_F_TOKEN_FD } else { 0 })
}

/// `BPF_TOKEN_CREATE` from the root directory of a bpffs instance.
pub fn token_create(bpffs_root: BorrowedFd<'_>, flags: u32) -> Result<OwnedFd, SysError> {
    let mut attr = zeroed_attr();
    attr.token_create.flags = flags;
    attr.token_create.bpffs_fd = bpffs_root.as_raw_fd() as u32;
    fd_result(
        sys_bpf(bpf_cmd::BPF_TOKEN_CREATE, &mut attr),
        "bpf(BPF_TOKEN_CREATE)",
    )
}

/// A verifier or BTF log buffer: `level` 0 means no log.
pub struct LogBuffer<'a> {
    pub level: u32,
    pub buf: &'a mut [u8],
}

impl LogBuffer<'_> {
    /// The text the kernel wrote, up to the first NUL.
    pub fn text(&self) -> String {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.buf.len());
        String::from_utf8_lossy(&self.buf[..end]).into_owned()
    }
}

/// `BPF_BTF_LOAD`.
pub fn btf_load(
    btf: &[u8],
    token: Option<BorrowedFd<'_>>,
    log: Option<&mut LogBuffer<'_>>,
) -> Result<OwnedFd, SysError> {
    let mut attr = zeroed_attr();
    let (token_fd, token_flag) = token_parts(token);
    // SAFETY: writing plain integers into the BTF_LOAD member of the union.
    let u = unsafe { &mut attr.__bindgen_anon_7 };
    u.btf = btf.as_ptr() as u64;
    u.btf_size = btf.len() as u32;
    u.btf_token_fd = token_fd;
    u.btf_flags = token_flag;
    if let Some(log) = log {
        u.btf_log_level = log.level;
        u.btf_log_buf = log.buf.as_mut_ptr() as u64;
        u.btf_log_size = log.buf.len() as u32;
    }
    fd_result(
        sys_bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr),
        "bpf(BPF_BTF_LOAD)",
    )
}

/// The attributes of `BPF_MAP_CREATE` this loader sets.
#[derive(Debug, Clone, Default)]
pub struct MapCreateAttr<'a> {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub map_extra: u64,
    pub name: &'a [u8],
    /// BTF object and the key/value type ids inside it.
    pub btf: Option<(BorrowedFd<'a>, u32, u32)>,
    pub inner_map: Option<BorrowedFd<'a>>,
}

/// `BPF_MAP_CREATE`.
pub fn map_create(
    attr_in: &MapCreateAttr<'_>,
    token: Option<BorrowedFd<'_>>,
) -> Result<OwnedFd, SysError> {
    map_create_parts(attr_in, token_parts(token))
}

/// `BPF_MAP_CREATE` with `map_token_fd` and `BPF_F_TOKEN_FD` chosen separately, for checking
/// the kernel's rules about them: without the flag the descriptor is ignored, and the flag with
/// a descriptor that is not a token is EINVAL. Loaders use [`map_create`].
pub fn map_create_with_token_fd(
    attr_in: &MapCreateAttr<'_>,
    token_fd: BorrowedFd<'_>,
    token_flag: bool,
) -> Result<OwnedFd, SysError> {
    map_create_parts(attr_in, explicit_token_parts(token_fd, token_flag))
}

fn map_create_parts(
    attr_in: &MapCreateAttr<'_>,
    (token_fd, token_flag): (i32, u32),
) -> Result<OwnedFd, SysError> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the MAP_CREATE member of the union.
    let u = unsafe { &mut attr.__bindgen_anon_1 };
    u.map_type = attr_in.map_type;
    u.key_size = attr_in.key_size;
    u.value_size = attr_in.value_size;
    u.max_entries = attr_in.max_entries;
    u.map_flags = attr_in.map_flags | token_flag;
    u.map_extra = attr_in.map_extra;
    u.map_token_fd = token_fd;
    if let Some(inner) = attr_in.inner_map {
        u.inner_map_fd = inner.as_raw_fd() as u32;
    }
    if let Some((btf_fd, key_id, value_id)) = attr_in.btf {
        u.btf_fd = btf_fd.as_raw_fd() as u32;
        u.btf_key_type_id = key_id;
        u.btf_value_type_id = value_id;
    }
    // The kernel wants a NUL-terminated name of at most 15 bytes.
    let len = attr_in.name.len().min(u.map_name.len() - 1);
    for (dst, src) in u.map_name.iter_mut().zip(&attr_in.name[..len]) {
        *dst = *src as libc::c_char;
    }
    fd_result(
        sys_bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr),
        "bpf(BPF_MAP_CREATE)",
    )
}

/// `BPF_MAP_UPDATE_ELEM` with raw key and value buffers (used to fill data-section maps).
pub fn map_update_elem(
    map: BorrowedFd<'_>,
    key: &[u8],
    value: &[u8],
    flags: u64,
) -> Result<(), SysError> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the element-command member of the union.
    let u = unsafe { &mut attr.__bindgen_anon_2 };
    u.map_fd = map.as_raw_fd() as u32;
    u.key = key.as_ptr() as u64;
    u.__bindgen_anon_1.value = value.as_ptr() as u64;
    u.flags = flags;
    unit_result(
        sys_bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr),
        "bpf(BPF_MAP_UPDATE_ELEM)",
    )
}

/// `BPF_MAP_FREEZE`: makes a map read-only for user space (used for `.rodata`).
pub fn map_freeze(map: BorrowedFd<'_>) -> Result<(), SysError> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    unit_result(
        sys_bpf(bpf_cmd::BPF_MAP_FREEZE, &mut attr),
        "bpf(BPF_MAP_FREEZE)",
    )
}

/// The attributes of `BPF_PROG_LOAD` this loader sets.
pub struct ProgLoadAttr<'a> {
    pub prog_type: u32,
    pub expected_attach_type: u32,
    pub prog_flags: u32,
    pub name: &'a [u8],
    pub insns: &'a [bpf_insn],
    pub license: &'a CStr,
    pub kern_version: u32,
    pub btf: Option<BorrowedFd<'a>>,
    pub func_info: &'a [u8],
    pub func_info_cnt: u32,
    pub func_info_rec_size: u32,
    pub line_info: &'a [u8],
    pub line_info_cnt: u32,
    pub line_info_rec_size: u32,
    pub attach_btf_id: Option<u32>,
}

/// `BPF_PROG_LOAD`.
pub fn prog_load(
    attr_in: &ProgLoadAttr<'_>,
    token: Option<BorrowedFd<'_>>,
    log: Option<&mut LogBuffer<'_>>,
) -> Result<OwnedFd, SysError> {
    prog_load_parts(attr_in, token_parts(token), log)
}

/// `BPF_PROG_LOAD` with `prog_token_fd` and `BPF_F_TOKEN_FD` chosen separately (see
/// [`map_create_with_token_fd`]). Loaders use [`prog_load`].
pub fn prog_load_with_token_fd(
    attr_in: &ProgLoadAttr<'_>,
    token_fd: BorrowedFd<'_>,
    token_flag: bool,
) -> Result<OwnedFd, SysError> {
    prog_load_parts(attr_in, explicit_token_parts(token_fd, token_flag), None)
}

fn prog_load_parts(
    attr_in: &ProgLoadAttr<'_>,
    (token_fd, token_flag): (i32, u32),
    log: Option<&mut LogBuffer<'_>>,
) -> Result<OwnedFd, SysError> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the PROG_LOAD member of the union.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = attr_in.prog_type;
    u.expected_attach_type = attr_in.expected_attach_type;
    u.prog_flags = attr_in.prog_flags | token_flag;
    u.prog_token_fd = token_fd;
    u.insns = attr_in.insns.as_ptr() as u64;
    u.insn_cnt = attr_in.insns.len() as u32;
    u.license = attr_in.license.as_ptr() as u64;
    u.kern_version = attr_in.kern_version;
    let len = attr_in.name.len().min(u.prog_name.len() - 1);
    for (dst, src) in u.prog_name.iter_mut().zip(&attr_in.name[..len]) {
        *dst = *src as libc::c_char;
    }
    if let Some(btf) = attr_in.btf {
        u.prog_btf_fd = btf.as_raw_fd() as u32;
        if attr_in.func_info_rec_size > 0 && attr_in.func_info_cnt > 0 {
            u.func_info = attr_in.func_info.as_ptr() as u64;
            u.func_info_cnt = attr_in.func_info_cnt;
            u.func_info_rec_size = attr_in.func_info_rec_size;
        }
        if attr_in.line_info_rec_size > 0 && attr_in.line_info_cnt > 0 {
            u.line_info = attr_in.line_info.as_ptr() as u64;
            u.line_info_cnt = attr_in.line_info_cnt;
            u.line_info_rec_size = attr_in.line_info_rec_size;
        }
    }
    if let Some(id) = attr_in.attach_btf_id {
        u.attach_btf_id = id;
    }
    if let Some(log) = log {
        u.log_level = log.level;
        u.log_buf = log.buf.as_mut_ptr() as u64;
        u.log_size = log.buf.len() as u32;
    }
    fd_result(
        sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr),
        "bpf(BPF_PROG_LOAD)",
    )
}

/// `BPF_LINK_CREATE` for a program attached to a network interface (XDP, tcx, netkit).
pub fn link_create_ifindex(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> Result<OwnedFd, SysError> {
    let mut attr = zeroed_attr();
    attr.link_create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    attr.link_create.__bindgen_anon_2.target_ifindex = ifindex;
    attr.link_create.attach_type = attach_type;
    attr.link_create.flags = flags;
    fd_result(
        sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr),
        "bpf(BPF_LINK_CREATE)",
    )
}

/// Whether the kernel knows `BPF_TOKEN_CREATE`, without a bpffs: the call with descriptor -1.
/// A kernel with tokens checks the (zero) flags, then the descriptor, and answers EBADF; an
/// older one answers EINVAL for the unknown command; one without `bpf()` ENOSYS. Returns the
/// errno (the call cannot succeed).
pub fn probe_token_create() -> SysError {
    let mut attr = zeroed_attr();
    attr.token_create.bpffs_fd = u32::MAX; // -1
    let ret = sys_bpf(bpf_cmd::BPF_TOKEN_CREATE, &mut attr);
    debug_assert!(ret < 0, "BPF_TOKEN_CREATE with fd -1 cannot succeed");
    SysError::last("bpf(BPF_TOKEN_CREATE, bpffs_fd=-1)")
}
