//! Builds `init/stromatekt-init.rs`, the statically linked first program of
//! every RUN container (see that file), with the same `rustc` and for the
//! same target as stromatekt; `src/exec/init.rs` embeds the result.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "init/stromatekt-init.rs";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("stromatekt-init");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let status = Command::new(rustc)
        .args(["--edition", "2021", "--crate-name", "stromatekt_init", "--target", &target])
        .args(["-C", "opt-level=2", "-C", "panic=abort", "-C", "target-feature=+crt-static", "-C", "strip=symbols"])
        .arg("-o")
        .arg(&out)
        .arg(source)
        .status()
        .expect("running rustc for init/stromatekt-init.rs");
    assert!(status.success(), "building {source} (a static binary: glibc's static libraries come with libc6-dev)");
}
