//! A libbpf user's loader, as libbpf-bootstrap's examples are written, with no token code:
//! libbpf 1.7 (vendored by libbpf-sys) reads `LIBBPF_BPF_TOKEN_PATH` itself, makes a token
//! from the bpffs there and runs its feature probes and every load through it.
//!
//! `libbpf-client count OBJECT [IFACE]`: opens OBJECT with `bpf_object__open_file`, loads it,
//! attaches its XDP program `count_packets` to IFACE (default `lo`) with
//! `bpf_program__attach_xdp`, sends one datagram to a socket bound on 127.0.0.1, prints
//! `packets counted: N` from the map `packets` and exits 0 iff N >= 1. Before that it prints
//! the names the kernel holds for the program and the map (`kernel names: ...`).
//! `libbpf-client object`: writes the object this crate built (src/counter.bpf.c) to stdout.
//!
//! libbpf prints its own warnings to stderr (`LIBBPF_LOG_LEVEL=debug` for everything); each
//! failure here names the libbpf call and its errno.

use std::ffi::{CStr, CString, c_int, c_void};
use std::io::Write as _;
use std::net::UdpSocket;
use std::process::ExitCode;
use std::ptr::NonNull;
use std::time::Duration;

use libbpf_sys as sys;

/// src/counter.bpf.c, compiled by build.rs.
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/counter.bpf.o"));

const PROGRAM: &CStr = c"count_packets";
const MAP: &CStr = c"packets";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["count", object] => count(object, "lo"),
        ["count", object, interface] => count(object, interface),
        ["object"] => std::io::stdout()
            .write_all(OBJECT)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| format!("writing the object: {e}")),
        _ => {
            eprintln!("usage: libbpf-client count OBJECT [IFACE] | libbpf-client object");
            return ExitCode::from(2);
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("libbpf-client: error: {error}");
        ExitCode::FAILURE
    })
}

/// `call` failed with libbpf's error code `err` (a negative errno, or the errno libbpf left).
fn failed(call: &str, err: c_int) -> String {
    let errno = err.abs();
    let mut buf = [0u8; 128];
    // SAFETY: the buffer outlives the call and its length is passed; libbpf NUL-terminates.
    unsafe { sys::libbpf_strerror(errno, buf.as_mut_ptr().cast(), buf.len() as _) };
    let text = CStr::from_bytes_until_nul(&buf)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{call} failed: {} ({text})", errno_name(errno))
}

fn errno_name(errno: c_int) -> String {
    match errno {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::E2BIG => "E2BIG".into(),
        libc::ENOTSUP => "EOPNOTSUPP".into(),
        other => format!("errno {other}"),
    }
}

fn last_errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A loaded `bpf_object`, closed (its programs, maps and links released) on drop.
struct Object(NonNull<sys::bpf_object>);

impl Drop for Object {
    fn drop(&mut self) {
        // SAFETY: the pointer came from bpf_object__open_file and is closed once.
        unsafe { sys::bpf_object__close(self.0.as_ptr()) };
    }
}

/// An XDP link, detached on drop (before the object is closed).
struct Link(NonNull<sys::bpf_link>);

impl Drop for Link {
    fn drop(&mut self) {
        // SAFETY: the pointer came from bpf_program__attach_xdp and is destroyed once.
        unsafe { sys::bpf_link__destroy(self.0.as_ptr()) };
    }
}

fn count(path: &str, interface: &str) -> Result<ExitCode, String> {
    let c_path = CString::new(path).map_err(|_| format!("{path:?}: a NUL in the path"))?;
    // libbpf 1.x returns NULL and sets errno on failure.
    // SAFETY: a valid C string; NULL options are allowed.
    let object =
        NonNull::new(unsafe { sys::bpf_object__open_file(c_path.as_ptr(), std::ptr::null()) })
            .map(Object)
            .ok_or_else(|| failed(&format!("bpf_object__open_file({path})"), last_errno()))?;
    // SAFETY: an open object.
    let err = unsafe { sys::bpf_object__load(object.0.as_ptr()) };
    if err != 0 {
        return Err(failed("bpf_object__load", err));
    }
    // SAFETY: a loaded object and a valid C string.
    let program =
        unsafe { sys::bpf_object__find_program_by_name(object.0.as_ptr(), PROGRAM.as_ptr()) };
    if program.is_null() {
        return Err(format!("no program {PROGRAM:?} in {path}"));
    }
    // SAFETY: as above.
    let map = unsafe { sys::bpf_object__find_map_by_name(object.0.as_ptr(), MAP.as_ptr()) };
    if map.is_null() {
        return Err(format!("no map {MAP:?} in {path}"));
    }
    // What the kernel recorded: libbpf's low-level calls drop names when their own probe for
    // name support (made without the token) fails.
    println!(
        "kernel names: program {:?}, map {:?}",
        // SAFETY: a loaded program and a created map.
        kernel_name(unsafe { sys::bpf_program__fd(program) }, Kind::Program)?,
        kernel_name(unsafe { sys::bpf_map__fd(map) }, Kind::Map)?,
    );
    let c_interface =
        CString::new(interface).map_err(|_| format!("{interface:?}: a NUL in the name"))?;
    // SAFETY: a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(c_interface.as_ptr()) };
    if ifindex == 0 {
        return Err(format!(
            "if_nametoindex({interface}): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a program of the loaded object.
    let link = NonNull::new(unsafe { sys::bpf_program__attach_xdp(program, ifindex as c_int) })
        .map(Link)
        .ok_or_else(|| {
            failed(
                &format!("bpf_program__attach_xdp(count_packets, {interface})"),
                last_errno(),
            )
        })?;
    let read = || -> Result<u64, String> {
        let key: u32 = 0;
        let mut value: u64 = 0;
        // SAFETY: key and value are the map's key and value sizes (checked by libbpf).
        let err = unsafe {
            sys::bpf_map__lookup_elem(
                map,
                (&raw const key).cast::<c_void>(),
                size_of::<u32>() as _,
                (&raw mut value).cast::<c_void>(),
                size_of::<u64>() as _,
                0,
            )
        };
        if err != 0 {
            return Err(failed("bpf_map__lookup_elem(packets, 0)", err));
        }
        Ok(value)
    };
    let before = read()?;
    send_one_datagram().map_err(|e| format!("sending a datagram on 127.0.0.1: {e}"))?;
    let counted = read()? - before;
    println!("packets counted: {counted}");
    drop(link);
    drop(object);
    if counted == 0 {
        eprintln!("libbpf-client: the program counted nothing");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

enum Kind {
    Program,
    Map,
}

/// The name the kernel holds for a loaded program or map (`BPF_OBJ_GET_INFO_BY_FD`).
fn kernel_name(fd: c_int, kind: Kind) -> Result<String, String> {
    let (err, name) = match kind {
        Kind::Program => {
            let mut info = sys::bpf_prog_info::default();
            let mut len = size_of_val(&info) as u32;
            // SAFETY: info and its length are this function's own.
            let err = unsafe { sys::bpf_prog_get_info_by_fd(fd, &raw mut info, &raw mut len) };
            (err, info.name)
        }
        Kind::Map => {
            let mut info = sys::bpf_map_info::default();
            let mut len = size_of_val(&info) as u32;
            // SAFETY: as above.
            let err = unsafe { sys::bpf_map_get_info_by_fd(fd, &raw mut info, &raw mut len) };
            (err, info.name)
        }
    };
    if err != 0 {
        return Err(failed("bpf_obj_get_info_by_fd", err));
    }
    let bytes: Vec<u8> = name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Sends one datagram to a socket bound on 127.0.0.1 and receives it, so that it crossed `lo`
/// (a bound receiver also keeps the kernel from answering with an ICMP port unreachable, which
/// would cross `lo` too).
fn send_one_datagram() -> std::io::Result<()> {
    let receiver = UdpSocket::bind("127.0.0.1:0")?;
    receiver.set_read_timeout(Some(Duration::from_secs(2)))?;
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    sender.send_to(b"libbpf", receiver.local_addr()?)?;
    let mut buf = [0u8; 16];
    receiver.recv_from(&mut buf)?;
    Ok(())
}
