//! Classic BPF seccomp filters: the instruction encoding, a small assembler with labels, and
//! installation.
//!
//! Written here rather than taken from seccompiler (which the failure-injection tests use):
//! its programs kill any process whose syscall comes from another ABI (i386 programs under
//! `CONFIG_IA32_EMULATION`, so any 32-bit tool a test suite runs), match x86-64 syscall numbers
//! only (an x32 caller, `nr | 0x40000000` under the same audit arch, would pass a rule on
//! `ioctl`), and cannot express `SECCOMP_RET_USER_NOTIF`.

use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd};

use super::{Errno, SysError};

/// `struct sock_filter`.
pub type Instruction = libc::sock_filter;

// Instruction classes and modes, `<linux/bpf_common.h>`.
const BPF_LD: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;

/// Offsets in `struct seccomp_data`.
pub const DATA_NR: u32 = 0;
pub const DATA_ARCH: u32 = 4;
/// The low 32 bits of argument `index` (the struct is in the CPU's byte order; only
/// little-endian targets are built).
pub const fn data_arg_low(index: u32) -> u32 {
    16 + 8 * index
}

#[cfg(not(target_endian = "little"))]
compile_error!("the seccomp filter reads argument words at little-endian offsets");

/// Return values, `<linux/seccomp.h>`.
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Stop the caller and hand the call to the filter's listener (`SECCOMP_RET_USER_NOTIF`).
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const fn ret_errno(errno: Errno) -> u32 {
    0x0005_0000 | (errno as u32 & 0xffff)
}

/// A jump target inside a [`Program`] under construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

#[derive(Debug, Clone, Copy)]
enum Slot {
    Plain(Instruction),
    /// `jeq`/`jge` with labelled targets, resolved by [`Program::finish`].
    Jump {
        code: u16,
        k: u32,
        if_true: Label,
        if_false: Label,
    },
}

/// An assembler for one filter: straight-line code plus forward jumps to labels.
#[derive(Debug, Default)]
pub struct Program {
    slots: Vec<Slot>,
    /// Label number → instruction index, once placed.
    labels: Vec<Option<usize>>,
}

impl Program {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `label` at the next instruction.
    pub fn bind(&mut self, label: Label) {
        assert!(self.labels[label.0].is_none(), "label bound twice");
        self.labels[label.0] = Some(self.slots.len());
    }

    /// `A = seccomp_data[offset]` (a 32-bit word).
    pub fn load(&mut self, offset: u32) {
        self.slots.push(Slot::Plain(libc::sock_filter {
            code: BPF_LD | BPF_W | BPF_ABS,
            jt: 0,
            jf: 0,
            k: offset,
        }));
    }

    pub fn ret(&mut self, value: u32) {
        self.slots.push(Slot::Plain(libc::sock_filter {
            code: BPF_RET | BPF_K,
            jt: 0,
            jf: 0,
            k: value,
        }));
    }

    /// `if A == k goto if_true else goto if_false`.
    pub fn jump_eq(&mut self, k: u32, if_true: Label, if_false: Label) {
        self.jump(BPF_JEQ, k, if_true, if_false);
    }

    /// `if A >= k goto if_true else goto if_false` (unsigned).
    pub fn jump_ge(&mut self, k: u32, if_true: Label, if_false: Label) {
        self.jump(BPF_JGE, k, if_true, if_false);
    }

    /// `if A & k != 0 goto if_true else goto if_false`.
    pub fn jump_set(&mut self, k: u32, if_true: Label, if_false: Label) {
        self.jump(BPF_JSET, k, if_true, if_false);
    }

    fn jump(&mut self, op: u16, k: u32, if_true: Label, if_false: Label) {
        self.slots.push(Slot::Jump {
            code: BPF_JMP | op | BPF_K,
            k,
            if_true,
            if_false,
        });
    }

    /// The instructions, with every jump resolved. Classic BPF jumps only forward, by at most
    /// 255 instructions: a label placed before its jump, or too far, is a bug in the caller.
    pub fn finish(self) -> Vec<Instruction> {
        let target = |label: Label, from: usize| -> u8 {
            let to = self.labels[label.0].expect("every label is bound");
            let offset = to
                .checked_sub(from + 1)
                .expect("classic BPF jumps only forward");
            u8::try_from(offset).expect("jump within 255 instructions")
        };
        self.slots
            .iter()
            .enumerate()
            .map(|(index, slot)| match *slot {
                Slot::Plain(instruction) => instruction,
                Slot::Jump {
                    code,
                    k,
                    if_true,
                    if_false,
                } => libc::sock_filter {
                    code,
                    jt: target(if_true, index),
                    jf: target(if_false, index),
                    k,
                },
            })
            .collect()
    }
}

/// Runs `program` on one `seccomp_data` as the kernel would (the subset of classic BPF that
/// [`Program`] emits), for tests that need no kernel.
pub fn evaluate(program: &[Instruction], data: &SeccompData) -> u32 {
    let bytes = data.bytes();
    let mut accumulator = 0u32;
    let mut pc = 0usize;
    loop {
        let instruction = program[pc];
        match instruction.code {
            code if code == BPF_LD | BPF_W | BPF_ABS => {
                let at = instruction.k as usize;
                accumulator = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
                pc += 1;
            }
            code if code == BPF_RET | BPF_K => return instruction.k,
            code if code == BPF_JMP | BPF_JEQ | BPF_K
                || code == BPF_JMP | BPF_JGE | BPF_K
                || code == BPF_JMP | BPF_JSET | BPF_K =>
            {
                let taken = match code & 0xf0 {
                    BPF_JEQ => accumulator == instruction.k,
                    BPF_JGE => accumulator >= instruction.k,
                    _ => accumulator & instruction.k != 0,
                };
                let skip = if taken {
                    instruction.jt
                } else {
                    instruction.jf
                };
                pc += 1 + usize::from(skip);
            }
            code => panic!("instruction {code:#x} is not emitted by Program"),
        }
    }
}

/// `struct seccomp_data`, for [`evaluate`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&self.nr.to_le_bytes());
        bytes.extend_from_slice(&self.arch.to_le_bytes());
        bytes.extend_from_slice(&self.instruction_pointer.to_le_bytes());
        for arg in self.args {
            bytes.extend_from_slice(&arg.to_le_bytes());
        }
        bytes
    }
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: no exec from now on can grant privileges (setuid bits,
/// file capabilities), and an unprivileged process may install seccomp filters.
pub fn set_no_new_privs() -> Result<(), SysError> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    super::unit_result(ret.into(), "prctl(PR_SET_NO_NEW_PRIVS)")
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, program)` for the calling thread (and what it execs
/// and forks later).
pub fn install_filter(program: &[Instruction]) -> Result<(), SysError> {
    let len = u16::try_from(program.len()).map_err(|_| SysError {
        call: "seccomp(SECCOMP_SET_MODE_FILTER)",
        errno: Errno::E2BIG,
    })?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: fprog points at `len` instructions that outlive the call; the kernel copies them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &raw const fprog,
        )
    };
    super::unit_result(ret, "seccomp(SECCOMP_SET_MODE_FILTER)")
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER |
/// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, program)`: installs the filter and returns its
/// listener, the descriptor on which calls the filter answers with [`RET_USER_NOTIF`] arrive
/// (close-on-exec, as the kernel creates it).
///
/// `WAIT_KILLABLE_RECV` (Linux 5.19): once the listener has received a call, the caller waits
/// for the answer ignoring non-fatal signals. Without it a signal makes the kernel withdraw the
/// notification and restart the call, so a caller receiving signals faster than the listener
/// answers would restart the same call forever. Kernels before 5.19 answer EINVAL; a filter
/// chain that already has a listener (a container runtime's notifier) answers EBUSY.
pub fn install_filter_with_listener(program: &[Instruction]) -> Result<OwnedFd, SysError> {
    const CALL: &str = "seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER | WAIT_KILLABLE_RECV)";
    let len = u16::try_from(program.len()).map_err(|_| SysError {
        call: CALL,
        errno: Errno::E2BIG,
    })?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    let flags =
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    // SAFETY: fprog points at `len` instructions that outlive the call; the kernel copies them
    // and returns a new descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &raw const fprog,
        )
    };
    let listener = super::fd_result(ret, CALL)?;
    SERVES_A_LISTENER.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(listener)
}

/// Set once this process installed a filter with a listener (it is then the one that must
/// answer its own filtered calls, so it must make none).
static SERVES_A_LISTENER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`install_filter_with_listener`] succeeded in this process.
pub fn serves_a_listener() -> bool {
    SERVES_A_LISTENER.load(std::sync::atomic::Ordering::Relaxed)
}

/// One call stopped by a filter, as the listener receives it (`struct seccomp_notif`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// Names this call in the answers; valid while the caller waits.
    pub id: u64,
    /// The calling thread, in the PID namespace of the process that received the call.
    pub pid: i32,
    pub arch: u32,
    pub nr: i32,
    pub args: [u64; 6],
}

fn listener_ioctl(
    listener: BorrowedFd<'_>,
    request: libc::Ioctl,
    arg: *mut libc::c_void,
    call: &'static str,
) -> Result<libc::c_int, SysError> {
    loop {
        // SAFETY: every caller passes the argument the request is defined with (a struct alive
        // for the call, or a plain value).
        let ret = unsafe { libc::ioctl(listener.as_raw_fd(), request, arg) };
        if ret >= 0 {
            return Ok(ret);
        }
        // The listener's ioctls wait for the filter's lock and can be interrupted (token_exec
        // can be stopped and continued): an interrupted answer must be given again, or the
        // caller waits for ever; only ENOENT means the caller is gone.
        let error = SysError::last(call);
        if error.errno != Errno::EINTR {
            return Err(error);
        }
    }
}

/// `SECCOMP_IOCTL_NOTIF_RECV`: the next call waiting for an answer. Blocks while there is none;
/// ENOENT when the caller was killed between the listener polling readable and this receive.
pub fn receive(listener: BorrowedFd<'_>) -> Result<Notification, SysError> {
    // The kernel refuses a buffer that is not zeroed (EINVAL), so it can extend the struct.
    // SAFETY: plain integers; all-zero is valid.
    let mut raw: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    listener_ioctl(
        listener,
        libc::SECCOMP_IOCTL_NOTIF_RECV,
        (&raw mut raw).cast(),
        "ioctl(SECCOMP_IOCTL_NOTIF_RECV)",
    )?;
    Ok(Notification {
        id: raw.id,
        // pid_t in a __u32: the kernel never reports a negative pid.
        pid: raw.pid as i32,
        arch: raw.data.arch,
        nr: raw.data.nr,
        args: raw.data.args,
    })
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: whether the caller of `id` still waits. Anything read from
/// the caller (its memory, its `/proc` entries) since the call was received is known to be the
/// caller's only if this still succeeds afterwards: a killed caller's pid can be reused.
pub fn id_valid(listener: BorrowedFd<'_>, id: u64) -> Result<(), SysError> {
    let mut id = id;
    listener_ioctl(
        listener,
        libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
        (&raw mut id).cast(),
        "ioctl(SECCOMP_IOCTL_NOTIF_ID_VALID)",
    )
    .map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_SEND` with `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: the kernel runs the call
/// as if no filter had stopped it, reading its arguments again from the caller's memory.
pub fn answer_continue(listener: BorrowedFd<'_>, id: u64) -> Result<(), SysError> {
    let mut response = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    listener_ioctl(
        listener,
        libc::SECCOMP_IOCTL_NOTIF_SEND,
        (&raw mut response).cast(),
        "ioctl(SECCOMP_IOCTL_NOTIF_SEND, CONTINUE)",
    )
    .map(drop)
}

/// A descriptor number in another process's table: not ours to use or close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteFd(pub i32);

/// `SECCOMP_IOCTL_NOTIF_ADDFD`: installs a copy of `fd` in the caller of `id` (at its lowest
/// free number, close-on-exec) and returns the number there.
pub fn add_fd_cloexec(
    listener: BorrowedFd<'_>,
    id: u64,
    fd: BorrowedFd<'_>,
) -> Result<RemoteFd, SysError> {
    let mut add = libc::seccomp_notif_addfd {
        id,
        flags: 0,
        srcfd: fd.as_raw_fd() as u32,
        newfd: 0,
        newfd_flags: libc::O_CLOEXEC as u32,
    };
    listener_ioctl(
        listener,
        libc::SECCOMP_IOCTL_NOTIF_ADDFD,
        (&raw mut add).cast(),
        "ioctl(SECCOMP_IOCTL_NOTIF_ADDFD)",
    )
    .map(RemoteFd)
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)` (Linux 6.6): the kernel
/// wakes the listener and, on the answer, the caller on the waking CPU, as for a synchronous
/// hand-off, instead of sending each to another CPU's run queue.
pub fn set_sync_wake_up(listener: BorrowedFd<'_>) -> Result<(), SysError> {
    const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: usize = 1;
    // Unlike the other requests, this one takes the flags as the argument itself, not a
    // pointer to them (`seccomp_notify_ioctl` passes `arg` on as the value).
    listener_ioctl(
        listener,
        libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
        SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP as *mut libc::c_void,
        "ioctl(SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP)",
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_resolve_to_forward_offsets() {
        let mut p = Program::new();
        let yes = p.label();
        let no = p.label();
        p.load(DATA_NR);
        p.jump_eq(7, yes, no);
        p.bind(no);
        p.ret(RET_ALLOW);
        p.bind(yes);
        p.ret(ret_errno(Errno::EPERM));
        let program = p.finish();
        assert_eq!((program[1].jt, program[1].jf), (1, 0));
        let run = |nr| {
            evaluate(
                &program,
                &SeccompData {
                    nr,
                    ..SeccompData::default()
                },
            )
        };
        assert_eq!(run(7), ret_errno(Errno::EPERM));
        assert_eq!(run(8), RET_ALLOW);
    }

    #[test]
    #[should_panic(expected = "only forward")]
    fn backward_jumps_are_refused() {
        let mut p = Program::new();
        let back = p.label();
        p.bind(back);
        p.load(DATA_NR);
        p.jump_eq(1, back, back);
        let _ = p.finish();
    }
}
