//! `stromatekt-init`: the first program of every RUN container, which loads
//! the step's seccomp filter and then becomes the step's command.
//!
//! runc compiles a seccomp profile with libseccomp at every container start
//! (about 12 ms of CPU for Docker's default profile on three architectures);
//! stromatekt compiles it once per build instead and hands runc the result.
//! runc starts this program (statically linked: it runs in any rootfs) from
//! the file descriptor 3 it was given (`--preserve-fds`), with:
//!
//! - fd 4: the filter, classic BPF instructions, read with `pread`;
//! - argv: `MODE COMMAND ARGS...`, MODE `drop` or `keep`.
//!
//! It loads the filter (`prctl(PR_SET_SECCOMP)`: allowed without
//! `no_new_privs` because runc gave this process `CAP_SYS_ADMIN`, through the
//! ambient set for a non-root user). When MODE is `drop` (the step itself
//! never had `CAP_SYS_ADMIN`) it then removes `CAP_SYS_ADMIN` from the
//! bounding, effective and permitted sets and empties the inheritable and
//! ambient ones (a RUN has none), closes fds 3 and 4 and `exec`s the
//! command, looked up in `PATH` as runc would. Built by `build.rs` with `rustc` alone (std,
//! no crates) and embedded in the stromatekt binary.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

const PR_SET_SECCOMP: i32 = 22;
const SECCOMP_MODE_FILTER: u64 = 2;
const PR_CAPBSET_DROP: i32 = 24;
const PR_CAP_AMBIENT: i32 = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: u64 = 4;
const CAP_SYS_ADMIN: u32 = 21;
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const u8,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

extern "C" {
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    fn capget(header: *mut CapHeader, data: *mut CapData) -> i32;
    fn capset(header: *mut CapHeader, data: *const CapData) -> i32;
}

fn fail(what: &str) -> ! {
    let err = std::io::Error::last_os_error();
    let _ = writeln!(std::io::stderr(), "stromatekt-init: {what}: {err}");
    std::process::exit(125)
}

fn read_filter() -> Vec<u8> {
    // SAFETY: runc keeps fds 3 and 4 open for this process (--preserve-fds 2);
    // each is owned here and closed when dropped.
    let (exe, bpf) = unsafe { (File::from_raw_fd(3), File::from_raw_fd(4)) };
    drop(exe);
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        // The same open file serves every step of a build: read by offset,
        // not through the shared file position.
        match bpf.read_at(&mut buf, out.len() as u64) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => fail("reading the seccomp filter from fd 4"),
        }
    }
    out
}

fn load(filter: &[u8]) {
    if filter.is_empty() || filter.len() % 8 != 0 || filter.len() / 8 > u16::MAX as usize {
        let _ = writeln!(std::io::stderr(), "stromatekt-init: the seccomp filter on fd 4 is malformed ({} bytes)", filter.len());
        std::process::exit(125)
    }
    let prog = SockFprog { len: (filter.len() / 8) as u16, filter: filter.as_ptr() };
    // SAFETY: prog points at `filter`, alive for the call.
    if unsafe { prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog as *const SockFprog as u64, 0, 0) } != 0 {
        fail("loading the seccomp filter")
    }
}

fn drop_sys_admin() {
    // SAFETY: plain syscalls on this process; the structures are sized as
    // the kernel's version-3 capability ABI wants (two data words).
    unsafe {
        if prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN as u64, 0, 0, 0) != 0 {
            fail("dropping CAP_SYS_ADMIN from the bounding set")
        }
        let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
        let mut data = [CapData::default(); 2];
        if capget(&mut header, data.as_mut_ptr()) != 0 {
            fail("reading capabilities")
        }
        if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 {
            fail("clearing the ambient capabilities")
        }
        let bit = !(1u32 << CAP_SYS_ADMIN);
        data[0].effective &= bit;
        data[0].permitted &= bit;
        data[0].inheritable = 0;
        data[1].inheritable = 0;
        if capset(&mut header, data.as_ptr()) != 0 {
            fail("dropping CAP_SYS_ADMIN")
        }
    }
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let (Some(mode), Some(program)) = (args.first(), args.get(1)) else {
        let _ = writeln!(std::io::stderr(), "usage: stromatekt-init drop|keep COMMAND [ARG...] (with fds 3 and 4 from runc)");
        std::process::exit(125)
    };
    let filter = read_filter();
    load(&filter);
    if mode == "drop" {
        drop_sys_admin();
    }
    let err = Command::new(program).args(&args[2..]).exec();
    let name = program.to_string_lossy();
    if err.kind() == std::io::ErrorKind::NotFound && !name.contains('/') {
        let _ = writeln!(std::io::stderr(), "exec: \"{name}\": executable file not found in $PATH");
    } else {
        let _ = writeln!(std::io::stderr(), "exec: \"{name}\": {err}");
    }
    std::process::exit(if err.kind() == std::io::ErrorKind::PermissionDenied { 126 } else { 127 })
}
