//! Building as an ordinary user: the user `stromatekt-rl` (made here, with
//! subordinate id ranges) builds on a btrfs filesystem it owns, mounted
//! with `user_subvol_rm_allowed`, through a user namespace of its own.
//!
//! - Owners: files of uid 1000 and 65534 in the base keep them through a RUN
//!   that does not touch them, and `chown 123:456` in RUN lands in the layer
//!   as 123:456.
//! - The same images as root: a multi-stage Dockerfile with RUN (cache,
//!   secret, ssh, tmpfs and bind mounts), COPY, a parallel group and a
//!   layer-algebra pair gives the root build's digest (`SOURCE_DATE_EPOCH`);
//!   a second build is all cache hits; push to and pull from a local
//!   registry; a build killed with SIGKILL is recovered by the next one;
//!   `prune --all` empties the store.
//!
//! Needs root (to make the user and the mount), `mkfs.btrfs`, runc, umoci,
//! skopeo, `docker-registry`, ssh-agent, `setpriv` and `newuidmap`: missing
//! one, the test fails naming it (a skip only with `STROMATEKT_ALLOW_SKIP=1`).
//! The user's processes are killed by pid and the mount is released at the
//! end; the user and its id ranges stay (they are made idempotently).

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const USER: &str = "stromatekt-rl";

/// One test at a time: they share the user (and its processes are killed by
/// uid at the end of each).
static SERIAL: Mutex<()> = Mutex::new(());

/// The user (made if missing) with 65,536 subordinate user and group ids.
fn ensure_user() -> nix::unistd::User {
    if nix::unistd::User::from_name(USER).unwrap().is_none() {
        common::run(Command::new("useradd").args(["-m", "-s", "/bin/sh", USER]));
    }
    let u = nix::unistd::User::from_name(USER).unwrap().expect("the user exists now");
    let me = stromatekt::rootless::User { name: USER.into(), uid: u.uid.as_raw(), home: u.dir.clone() };
    for (file, flag) in [("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !stromatekt::rootless::has_subids(&text, &me) {
            common::run(Command::new("usermod").args([flag, "300000-365535", USER]));
        }
    }
    u
}

/// A store for the user and one for root on the same btrfs, and a base.
struct Env {
    store: common::LoopStore,
    user: nix::unistd::User,
    /// The user's store root (the mount point, owned by the user).
    user_root: PathBuf,
    /// Root's store root.
    root_root: PathBuf,
    /// A directory the user may write (outputs).
    out: PathBuf,
    base: PathBuf,
}

impl Env {
    fn new() -> Option<Env> {
        if !common::runnable(&["mkfs.btrfs", "runc", "umoci", "setpriv", "newuidmap", "newgidmap", "useradd", "usermod"]) {
            return None;
        }
        let user = ensure_user();
        let store = common::LoopStore::with_mb(3072);
        common::run(Command::new("mount").args(["-o", "remount,user_subvol_rm_allowed"]).arg(&store.dir));
        std::fs::set_permissions(store.scratch(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let user_root = store.dir.join("user");
        let root_root = store.dir.join("root");
        let out = store.scratch().join("out");
        for d in [&user_root, &out] {
            std::fs::create_dir(d).unwrap();
            nix::unistd::chown(d.as_path(), Some(user.uid), Some(user.gid)).unwrap();
        }
        let base = store.scratch().join("busybox");
        if !common::busybox_layout(&base) {
            return None;
        }
        let env = Env { store, user, user_root, root_root, out, base };
        env.readable(&env.base);
        Some(env)
    }

    /// Let the user read everything below `p`.
    fn readable(&self, p: &Path) {
        common::run(Command::new("chmod").args(["-R", "a+rX"]).arg(p));
    }

    /// A context `name` with a Dockerfile and a data file, readable by the user.
    fn ctx(&self, name: &str, dockerfile: &str) -> PathBuf {
        let ctx = self.store.scratch().join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(ctx.join("data.txt"), "data\n").unwrap();
        std::fs::write(self.store.scratch().join("secret.txt"), "s3cret").unwrap();
        self.readable(&ctx);
        self.readable(&self.store.scratch().join("secret.txt"));
        ctx
    }

    /// `stromatekt ARGS` as the user, on its store, with a clean environment.
    fn as_user(&self) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.user.uid))
            .arg(format!("--regid={}", self.user.gid))
            .arg("--init-groups")
            .args(["env", "-i"])
            .arg(format!("PATH={}", std::env::var("PATH").unwrap_or_default()))
            .arg(format!("HOME={}", self.user.dir.display()))
            .arg(format!("STROMATEKT_ROOT={}", self.user_root.display()))
            .arg("SOURCE_DATE_EPOCH=1700000000")
            // COPY's kept change lists are checked against the walk diff.
            .arg("STROMATEKT_CHECK_CHANGES=1")
            .arg(env!("CARGO_BIN_EXE_stromatekt"));
        c.current_dir(self.store.scratch()).stdin(Stdio::null());
        c
    }

    /// `stromatekt ARGS` as root on root's store.
    fn as_root(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stromatekt"));
        c.env("STROMATEKT_ROOT", &self.root_root).env("SOURCE_DATE_EPOCH", "1700000000").env_remove("BUILDKIT_PROGRESS");
        c.current_dir(self.store.scratch()).stdin(Stdio::null());
        c
    }

    /// The build arguments of `ctx` on `base` into the OCI layout `dest`.
    fn build_args(ctx: &Path, base: &Path, dest: &Path, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec!["build".into(), "--build-arg".into(), format!("BASE=oci-layout://{}:latest", base.display())];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["-o".into(), format!("type=oci,dest={}", dest.display()), ctx.display().to_string()]);
        v
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Whatever the user still runs was started by this test.
        if let Ok(o) = Command::new("pgrep").arg("-u").arg(self.user.uid.to_string()).output() {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

fn ok(what: &str, o: Output) -> Output {
    assert!(
        o.status.success(),
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn digest(layout: &Path) -> String {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_string()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let (alg, hex) = digest.split_once(':').unwrap();
    std::fs::read(layout.join("blobs").join(alg).join(hex)).unwrap()
}

/// (path, uid, gid) of every entry of the last layer of image `latest`.
fn last_layer(layout: &Path) -> Vec<(String, u64, u64)> {
    let manifest: serde_json::Value = serde_json::from_slice(&blob(layout, &digest(layout))).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let l = layers.last().unwrap()["digest"].as_str().unwrap().to_string();
    let data = blob(layout, &l);
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&data[..]));
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_string();
            (p, e.header().uid().unwrap(), e.header().gid().unwrap())
        })
        .collect()
}

#[test]
fn owners_survive_a_rootless_run_and_a_chown_lands_as_written() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = Env::new() else { return };
    // setup as the user says what is in place and makes the store.
    let o = ok("rootless setup", env.as_user().arg("setup").output().unwrap());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("in a user namespace of its own") && text.contains("user_subvol_rm_allowed") && text.contains("setup:   ok (rootless)"), "{text}");
    // The base, built by root: files of uid 1000 and 65534.
    let base_ctx = env.ctx("owners-base", "ARG BASE\nFROM ${BASE}\nRUN touch /u1000 /u65534 && chown 1000:1000 /u1000 && chown 65534:65534 /u65534\n");
    let owners_base = env.store.scratch().join("owners-base-oci");
    ok("root build of the base", env.as_root().args(Env::build_args(&base_ctx, &env.base, &owners_base, &[])).output().unwrap());
    env.readable(&owners_base);

    let ctx = env.ctx("owners", "ARG BASE\nFROM ${BASE}\nRUN echo new > /new && touch /c && chown 123:456 /c\n");
    let image = env.out.join("owners");
    ok("rootless build", env.as_user().args(Env::build_args(&ctx, &owners_base, &image, &[])).output().unwrap());

    let layer = last_layer(&image);
    let find = |p: &str| layer.iter().find(|(q, _, _)| q == p).cloned();
    assert_eq!(find("c"), Some(("c".into(), 123, 456)), "chown 123:456 in the layer: {layer:?}");
    assert_eq!(find("new"), Some(("new".into(), 0, 0)), "a file made by root in RUN: {layer:?}");
    assert!(find("u1000").is_none() && find("u65534").is_none(), "untouched files are in the RUN's layer: {layer:?}");

    let rootfs = common::unpack(&image, &env.store.scratch().join("owners-unpacked"));
    let owner = |p: &str| {
        let m = std::fs::symlink_metadata(rootfs.join(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner("u1000"), (1000, 1000));
    assert_eq!(owner("u65534"), (65534, 65534));
    assert_eq!(owner("c"), (123, 456));
    // On the user's disk, the layer's ids are the user's subordinate ids.
    let on_disk: Vec<u32> = std::fs::read_dir(env.user_root.join("committed"))
        .unwrap()
        .filter_map(|e| std::fs::symlink_metadata(e.unwrap().path().join("c")).ok())
        .map(|m| m.uid())
        .collect();
    assert!(!on_disk.is_empty() && on_disk.iter().all(|u| *u != 123 && *u >= 65536), "the layer's /c on disk: {on_disk:?}");
}

const SAME_IMAGE: &str = r#"ARG BASE
FROM ${BASE} AS build
RUN mkdir -p /out && echo built > /out/a && chown 123:456 /out/a
RUN --mount=type=cache,target=/var/cache/app echo x >> /var/cache/app/log && wc -l < /var/cache/app/log > /out/cache-lines
RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /out/secret-len
RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo agent > /out/ssh
RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /out/tmpfs
RUN --mount=type=bind,source=data.txt,target=/d.txt cp /d.txt /out/d.txt

FROM ${BASE}
COPY --from=build /out /out
COPY data.txt /data.txt
# stromatekt:parallel
RUN echo p1 > /p1
RUN echo p2 > /p2
COPY data.txt /p3
# stromatekt:end
# stromatekt:layer tool
RUN echo tool > /tool
RUN cat /tool > /used-tool
# stromatekt:remove tool
"#;

/// An ssh-agent on `sock`, run as `uid`, killed on drop.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rootless_builds_are_the_root_builds() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !common::runnable(&["skopeo", "docker-registry", "ssh-agent"]) {
        return;
    }
    let Some(env) = Env::new() else { return };
    let ctx = env.ctx("same", SAME_IMAGE);
    let sock = env.out.join("agent.sock");
    let agent = Command::new("setpriv")
        .arg(format!("--reuid={}", env.user.uid))
        .arg(format!("--regid={}", env.user.gid))
        .arg("--init-groups")
        .args(["ssh-agent", "-D", "-a"])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Agent(agent);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sock.exists(), "ssh-agent did not make {}", sock.display());
    let secret = env.store.scratch().join("secret.txt");
    let flags = ["--secret".to_string(), format!("id=tok,src={}", secret.display()), "--ssh".into(), format!("default={}", sock.display())];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();

    // Root and the user build the same image.
    let theirs = env.store.scratch().join("root-image");
    ok("root build", env.as_root().args(Env::build_args(&ctx, &env.base, &theirs, &flags)).output().unwrap());
    let mine = env.out.join("user-image");
    ok("rootless build", env.as_user().args(Env::build_args(&ctx, &env.base, &mine, &flags)).output().unwrap());
    assert_eq!(digest(&mine), digest(&theirs), "the rootless image differs from root's");
    let rootfs = common::unpack(&mine, &env.store.scratch().join("user-unpacked"));
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap_or_else(|e| panic!("/{p}: {e}"));
    assert_eq!(read("out/secret-len").trim(), "6");
    assert_eq!(read("out/ssh"), "agent\n");
    assert_eq!(read("out/tmpfs"), "x\n");
    assert_eq!(read("out/d.txt"), "data\n");
    assert_eq!(read("out/cache-lines").trim(), "1");
    assert_eq!(read("used-tool"), "tool\n");
    assert!(!rootfs.join("tool").exists(), "the removed layer is in the image");
    assert_eq!((read("p1"), read("p2"), read("p3")), ("p1\n".into(), "p2\n".into(), "data\n".into()));

    // A second build: every step is a cache hit.
    let again = env.out.join("user-again");
    let mut args = Env::build_args(&ctx, &env.base, &again, &flags);
    args.insert(1, "--progress=rawjson".into());
    let o = ok("rootless rebuild", env.as_user().args(&args).output().unwrap());
    let ev = common::events(&o);
    for step in ["chown 123:456", "/var/cache/app/log", "/run/secrets/tok", "/out/ssh", "/scratch/x", "/out/d.txt", "/p1", "/used-tool"] {
        assert_eq!(common::outcome(&ev, step), "cached", "{step} ran again:\n{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(digest(&again), digest(&mine));

    // Push to and pull from a registry.
    let Some(server) = common::RegistryServer::start() else { return };
    let pushed = format!("{}/rootless/same:latest", server.host());
    ok(
        "rootless push",
        env.as_user().args(["build", "--build-arg"]).arg(format!("BASE=oci-layout://{}:latest", env.base.display())).args(&flags).args(["-t", &pushed, "--push"]).arg(&ctx).output().unwrap(),
    );
    let pulled_ctx = env.ctx("pulled", &format!("FROM {pushed}\nRUN cat /out/a /p3 > /both\n"));
    let pulled = env.out.join("pulled");
    ok("rootless build on the pulled image", env.as_user().args(["build", "-o"]).arg(format!("type=oci,dest={}", pulled.display())).arg(&pulled_ctx).output().unwrap());
    let rootfs = common::unpack(&pulled, &env.store.scratch().join("pulled-unpacked"));
    assert_eq!(std::fs::read_to_string(rootfs.join("both")).unwrap(), "built\ndata\n");
    let m = std::fs::metadata(rootfs.join("out/a")).unwrap();
    assert_eq!((m.uid(), m.gid()), (123, 456), "owners through push and pull");

    // SIGKILL in a RUN step: the next build cleans up and succeeds.
    let slow = env.ctx("slow", "ARG BASE\nFROM ${BASE}\nRUN sleep 20 && echo late > /late\n");
    let mut child = env.as_user().args(Env::build_args(&slow, &env.base, &env.out.join("slow"), &[])).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let runc_state = env.user_root.join("runc");
    for _ in 0..200 {
        if std::fs::read_dir(&runc_state).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::fs::read_dir(&runc_state).is_ok_and(|mut d| d.next().is_some()), "the RUN step never started");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(!child.wait().unwrap().success());
    let quick = env.ctx("quick", "ARG BASE\nFROM ${BASE}\nRUN echo quick > /quick\n");
    ok("a build after SIGKILL", env.as_user().args(Env::build_args(&quick, &env.base, &env.out.join("quick"), &[])).output().unwrap());
    let left = |d: &str| -> Vec<String> {
        std::fs::read_dir(env.user_root.join(d)).map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    };
    assert_eq!(left("active"), Vec::<String>::new(), "work snapshots left after SIGKILL");
    assert_eq!(left("runc"), Vec::<String>::new(), "containers left after SIGKILL");

    // prune --all as the user empties the store.
    ok("rootless prune", env.as_user().args(["prune", "--all", "-f"]).output().unwrap());
    assert_eq!(left("committed"), Vec::<String>::new(), "prune --all left snapshots");
}

#[test]
fn a_debian_base_builds_rootless_as_for_root() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = Env::new() else { return };
    let Some(fixture) = common::debian_layout() else { return };
    // The base has device nodes (/dev/null, ...), which a user namespace
    // cannot make: the user's snapshot holds empty files in their place.
    let debian = env.store.scratch().join("debian");
    common::run(Command::new("cp").arg("-a").arg(&fixture).arg(&debian));
    env.readable(&debian);
    let ctx = env.ctx(
        "debian",
        "ARG BASE\nFROM ${BASE}\nRUN useradd -m app && echo hi > /home/app/x && chown app: /home/app/x && rm /etc/issue\nCOPY data.txt /home/app/\nRUN ls -ln /home/app > /listing\n",
    );
    let theirs = env.store.scratch().join("debian-root");
    let t = std::time::Instant::now();
    ok("root build on Debian", env.as_root().args(Env::build_args(&ctx, &debian, &theirs, &[])).output().unwrap());
    let root_time = t.elapsed();
    let mine = env.out.join("debian-user");
    let t = std::time::Instant::now();
    ok("rootless build on Debian", env.as_user().args(Env::build_args(&ctx, &debian, &mine, &[])).output().unwrap());
    let user_time = t.elapsed();
    eprintln!("Debian base, import + 2 RUN + COPY: root {root_time:?}, rootless {user_time:?}");
    assert_eq!(digest(&mine), digest(&theirs), "the rootless image on Debian differs from root's");
    let rootfs = common::unpack(&mine, &env.store.scratch().join("debian-unpacked"));
    let m = std::fs::metadata(rootfs.join("home/app/x")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(rootfs.join("dev/null")).unwrap().file_type().is_char_device(), "the base's /dev/null in the image");
}

/// The holder record of the user (`HOME/.config/stromatekt/userns`: the
/// user's commands run without `XDG_RUNTIME_DIR`): pid and namespace inode.
fn holder_record(env: &Env) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(env.user.dir.join(".config/stromatekt/userns")).ok()?;
    let rec = stromatekt::rootless::holder::Record::parse(&text)?;
    Some((rec.pid, rec.ns_ino))
}

/// Whether process `pid` is gone (or a zombie, which only its reaper keeps).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Kill `pid` and wait until it is gone.
fn kill_and_wait(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    for _ in 0..100 {
        if gone(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("process {pid} is still there after SIGKILL");
}

/// The contents of `path` in the last layer of image `latest`.
fn layer_file(layout: &Path, path: &str) -> Option<String> {
    let manifest: serde_json::Value = serde_json::from_slice(&blob(layout, &digest(layout))).unwrap();
    let l = manifest["layers"].as_array().unwrap().last().unwrap()["digest"].as_str().unwrap().to_string();
    let data = blob(layout, &l);
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&data[..]));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().trim_start_matches("./") == path {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            return Some(s);
        }
    }
    None
}

#[test]
fn later_commands_join_the_namespace_the_first_left() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = Env::new() else { return };
    // A record from an earlier run names a holder long gone.
    let record = env.user.dir.join(".config/stromatekt/userns");
    let _ = std::fs::remove_file(&record);

    // The first command makes the namespace and leaves a holder in it.
    let o = ok("first setup", env.as_user().arg("setup").output().unwrap());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (holder, ino) = holder_record(&env).unwrap_or_else(|| panic!("no holder record after the first command:\n{text}"));
    assert!(!gone(holder), "the holder {holder} is not running");
    assert_eq!(std::fs::metadata(format!("/proc/{holder}/ns/user")).unwrap().ino(), ino);
    assert!(text.contains(&format!("userns:  user:[{ino}], made by this command")), "{text}");
    let m = std::fs::metadata(record.parent().unwrap()).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o022), (env.user.uid.as_raw(), 0), "the record's directory is the user's alone");
    // The holder keeps nothing of the store: its directory is /, it has no
    // files open but /dev/null, and its mount namespace is the host's.
    assert_eq!(std::fs::read_link(format!("/proc/{holder}/cwd")).unwrap(), Path::new("/"));
    for fd in std::fs::read_dir(format!("/proc/{holder}/fd")).unwrap() {
        let target = std::fs::read_link(fd.unwrap().path()).unwrap();
        assert_eq!(target, Path::new("/dev/null"), "the holder holds {}", target.display());
    }
    let mnt = |p: &str| std::fs::metadata(format!("/proc/{p}/ns/mnt")).unwrap().ino();
    assert_eq!(mnt(&holder.to_string()), mnt("self"), "the holder is in a mount namespace of its own");

    // The second joins it: the same namespace, the same holder.
    let o = ok("second setup", env.as_user().arg("setup").output().unwrap());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains(&format!("userns:  user:[{ino}], joined: kept by process {holder}")), "the second command did not join {holder}:\n{text}");
    assert!(text.contains("setup:   ok (rootless)"), "{text}");
    assert_eq!(holder_record(&env), Some((holder, ino)));

    // A build that joined: RUN sees the namespace, owners land as written.
    let build = |name: &str| {
        let ctx = env.ctx(name, "ARG BASE\nFROM ${BASE}\nARG N\nRUN readlink /proc/self/ns/user > /ns && touch /c && chown 123:456 /c\n");
        let image = env.out.join(name);
        ok(name, env.as_user().args(Env::build_args(&ctx, &env.base, &image, &["--build-arg", &format!("N={name}")])).output().unwrap());
        let layer = last_layer(&image);
        assert!(layer.contains(&("c".into(), 123, 456)), "{name}: chown 123:456 in the layer: {layer:?}");
        layer_file(&image, "ns").unwrap_or_default().trim().to_string()
    };
    assert_eq!(build("joined"), format!("user:[{ino}]"), "RUN ran in another user namespace");
    assert_eq!(holder_record(&env), Some((holder, ino)));

    // The holder killed: the next command makes a namespace and a holder.
    kill_and_wait(holder);
    let seen = build("after-kill");
    let (second, ino2) = holder_record(&env).expect("a record after the holder was killed");
    assert!(second != holder && ino2 != ino && !gone(second), "record {second} {ino2} after killing {holder}");
    assert_eq!(seen, format!("user:[{ino2}]"));

    // A record naming a live process of the user that is not the holder (a
    // reused pid): its start time and namespace do not match.
    let sleeper = Command::new("setpriv")
        .arg(format!("--reuid={}", env.user.uid))
        .arg(format!("--regid={}", env.user.gid))
        .arg("--init-groups")
        .args(["sleep", "120"])
        .spawn()
        .unwrap();
    let sleeper_pid = sleeper.id() as i32;
    let _sleeper = Agent(sleeper);
    let text = std::fs::read_to_string(&record).unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    std::fs::write(&record, format!("{sleeper_pid} {}\n", fields[1..].join(" "))).unwrap();
    let seen = build("foreign-pid");
    let (third, ino3) = holder_record(&env).expect("a record after the foreign one");
    assert!(third != sleeper_pid && third != second && !gone(third), "record {third} after the foreign {sleeper_pid}");
    assert_eq!(seen, format!("user:[{ino3}]"));
    assert!(!gone(sleeper_pid), "the foreign process was touched");
    // A record naming another user's process (this test's, as it is: its
    // namespace and start time): not joined, a namespace of its own made.
    let me = std::process::id();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start = stromatekt::rootless::holder::parse_start_time(&stat).unwrap();
    let own = std::fs::metadata("/proc/self/ns/user").unwrap();
    std::fs::write(&record, format!("{me} {} {} {start}\n", own.dev(), own.ino())).unwrap();
    let o = ok("setup with a record of root's process", env.as_user().arg("setup").output().unwrap());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("made by this command") && !text.contains(&format!("user:[{}]", own.ino())), "{text}");
    let (fourth, _) = holder_record(&env).expect("a record after root's");
    assert!(fourth != me as i32 && !gone(fourth), "{fourth}");
    kill_and_wait(third);
    let third = fourth;
    // The replaced holder sees a record that is not its own and goes at its
    // next look; kill it now.
    kill_and_wait(second);

    // SIGTERM reaches a build that joined (there is no outer process to
    // forward it): it cancels, stops its container and leaves no snapshot.
    let slow = env.ctx("slow-joined", "ARG BASE\nFROM ${BASE}\nRUN sleep 30 && echo late > /late\n");
    let mut child = env.as_user().args(Env::build_args(&slow, &env.base, &env.out.join("slow-joined"), &[])).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let runc_state = env.user_root.join("runc");
    let busy = || std::fs::read_dir(&runc_state).is_ok_and(|mut d| d.next().is_some());
    for _ in 0..200 {
        if busy() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(busy(), "the RUN step never started");
    assert_eq!(holder_record(&env).map(|r| r.0), Some(third), "the slow build did not join");
    let t = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(!child.wait().unwrap().success());
    assert!(t.elapsed() < Duration::from_secs(20), "SIGTERM took {:?}", t.elapsed());
    let left = |d: &str| -> Vec<String> {
        std::fs::read_dir(env.user_root.join(d)).map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    };
    assert_eq!(left("active"), Vec::<String>::new(), "work snapshots left after SIGTERM");
    assert_eq!(left("runc"), Vec::<String>::new(), "containers left after SIGTERM");

    // prune --all stops the holder; nothing of the user's is left running.
    let o = ok("prune --all", env.as_user().args(["prune", "--all", "-f"]).output().unwrap());
    assert!(String::from_utf8_lossy(&o.stdout).contains("stopped the process that kept the user namespace"), "{}", String::from_utf8_lossy(&o.stdout));
    for _ in 0..100 {
        if gone(third) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone(third), "the holder {third} outlived prune --all: {}", std::fs::read_to_string(format!("/proc/{third}/status")).unwrap_or_default());
    assert!(!record.exists(), "prune --all left the record");
    kill_and_wait(sleeper_pid);
}
