//! Layer algebra built for real: `# stromatekt:parallel` groups (members
//! overlap in time, layers stacked in written order, overlapping writes
//! rejected or last-wins), `remove` (named layers and `base`), `with`
//! (mix-ins not kept), and `base` (swap the FROM image's layers; upper
//! layers reused from cache when only the new base changes).
//!
//! Needs root, btrfs, runc and umoci: missing one, the test fails naming
//! what is missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// [`common::BuildEnv`] plus what these tests do each time: rawjson
/// progress and an OCI layout output per context.
struct Env(common::BuildEnv);

impl std::ops::Deref for Env {
    type Target = common::BuildEnv;
    fn deref(&self) -> &common::BuildEnv {
        &self.0
    }
}

impl Env {
    fn new() -> Option<Env> {
        common::BuildEnv::new(3, &[]).map(Env)
    }

    fn build(&self, ctx: &Path, args: &[String]) -> Output {
        let out = self.store.scratch().join(format!("{}-out", ctx.file_name().unwrap().to_string_lossy()));
        let _ = std::fs::remove_dir_all(&out);
        self.cmd()
            .arg("--progress=rawjson")
            .args(args)
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .arg(ctx)
            .output()
            .unwrap()
    }

    fn ok(&self, ctx: &Path, args: &[String]) -> (Output, PathBuf) {
        let o = self.build(ctx, args);
        assert!(o.status.success(), "build failed:\n{}", String::from_utf8_lossy(&o.stderr));
        let out = self.store.scratch().join(format!("{}-out", ctx.file_name().unwrap().to_string_lossy()));
        (o, out)
    }

    fn rootfs(&self, layout: &Path) -> PathBuf {
        let b = layout.with_extension("bundle");
        let _ = std::fs::remove_dir_all(&b);
        common::run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", layout.display())).arg(&b));
        b.join("rootfs")
    }
}


fn manifest_layers(layout: &Path) -> usize {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let d = index["manifests"][0]["digest"].as_str().unwrap().replace("sha256:", "");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(d)).unwrap()).unwrap();
    m["layers"].as_array().unwrap().len()
}

/// (start, end) of the step whose name contains `needle`, from rawjson events.
fn span(ev: &[serde_json::Value], needle: &str) -> (f64, f64) {
    let start = ev.iter().find(|e| e["event"] == "start" && e["name"].as_str().unwrap_or("").contains(needle)).unwrap();
    let step = start["step"].as_u64().unwrap();
    let end = ev.iter().find(|e| e["event"] == "done" && e["step"].as_u64() == Some(step)).unwrap();
    (start["time"].as_f64().unwrap(), end["time"].as_f64().unwrap())
}

#[test]
fn parallel_groups() {
    let Some(env) = Env::new() else { return };
    let ctx = env.ctx(
        "par",
        "ARG BASE\nFROM ${BASE}\n# stromatekt:parallel\nRUN sleep 2 && echo a > /a\nRUN sleep 2 && echo b > /b\nCOPY c.txt /c\n# stromatekt:end\nRUN cat /a /b /c > /all\n",
        &[("c.txt", "c\n")],
    );
    let (o, out) = env.ok(&ctx, &[]);
    let ev = common::events(&o);
    let (a, b) = (span(&ev, "echo a"), span(&ev, "echo b"));
    assert!(a.0 < b.1 && b.0 < a.1, "group members did not run concurrently: {a:?} {b:?}");
    let all = span(&ev, "cat /a");
    assert!(all.0 >= a.1 && all.0 >= b.1, "the step after the group overlapped it");
    let rootfs = env.rootfs(&out);
    assert_eq!(std::fs::read_to_string(rootfs.join("all")).unwrap(), "a\nb\nc\n");
    assert_eq!(manifest_layers(&out), 1 + 4, "base + three members + the last RUN");

    // Two members writing one path: an error naming both and the path.
    let bad = env.ctx(
        "overlap",
        "ARG BASE\nFROM ${BASE}\n# stromatekt:parallel\nRUN echo one > /same\nRUN echo two > /same\n# stromatekt:end\n",
        &[],
    );
    let o = env.build(&bad, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("/same") && err.contains("echo one") && err.contains("echo two"), "{err}");

    // ... unless last-wins.
    let lw = env.ctx(
        "lastwins",
        "ARG BASE\nFROM ${BASE}\n# stromatekt:parallel overlap=last-wins\nRUN echo one > /same\nRUN echo two > /same\n# stromatekt:end\nRUN cp /same /seen\n",
        &[],
    );
    let (_, out) = env.ok(&lw, &[]);
    let rootfs = env.rootfs(&out);
    assert_eq!(std::fs::read_to_string(rootfs.join("same")).unwrap(), "two\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("seen")).unwrap(), "two\n");
}

#[test]
fn remove_with_and_base_swap() {
    let Some(env) = Env::new() else { return };
    // remove: a named layer is gone from later steps and from the image.
    let ctx = env.ctx(
        "remove",
        "ARG BASE\nFROM ${BASE}\n# stromatekt:layer tools\nRUN mkdir -p /opt && echo tool > /opt/tool\nRUN cat /opt/tool > /built\n# stromatekt:remove tools\nRUN test ! -e /opt/tool && echo gone > /check\n",
        &[],
    );
    let (_, out) = env.ok(&ctx, &[]);
    let rootfs = env.rootfs(&out);
    assert!(!rootfs.join("opt/tool").exists(), "a removed layer's file is in the image");
    assert_eq!(std::fs::read_to_string(rootfs.join("built")).unwrap(), "tool\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("check")).unwrap(), "gone\n");
    assert_eq!(manifest_layers(&out), 1 + 2);

    // remove base: only this stage's layers are exported.
    let ctx = env.ctx("rmbase", "ARG BASE\nFROM ${BASE}\nRUN echo mine > /mine\n# stromatekt:remove base\n", &[]);
    let (_, out) = env.ok(&ctx, &[]);
    let rootfs = env.rootfs(&out);
    assert!(rootfs.join("mine").exists());
    assert!(!rootfs.join("bin/busybox").exists(), "the base image is still in the image");
    assert_eq!(manifest_layers(&out), 1);

    // with: a tool from another stage is usable, but not kept.
    let ctx = env.ctx(
        "with",
        "ARG BASE\nFROM ${BASE} AS tools\nRUN mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho tool-output\\n' > /usr/local/bin/mytool && chmod +x /usr/local/bin/mytool\nFROM ${BASE}\n# stromatekt:with tools\nRUN mytool > /result\nRUN cat /result > /copy\n",
        &[],
    );
    let (_, out) = env.ok(&ctx, &[]);
    let rootfs = env.rootfs(&out);
    assert_eq!(std::fs::read_to_string(rootfs.join("result")).unwrap(), "tool-output\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("copy")).unwrap(), "tool-output\n");
    assert!(!rootfs.join("usr/local/bin/mytool").exists(), "the mixed-in tool was kept");

    // with, from a scratch-based tool image holding only a static binary;
    // changing the tool re-runs that RUN and nothing else.
    let tool_df = "ARG BASE\nARG TOOLV=1\nFROM scratch AS tool\nARG TOOLV\nCOPY busybox /tool/busybox\nCOPY version /tool/version-${TOOLV}\n\
                   FROM ${BASE}\nRUN echo before > /before\n# stromatekt:with tool\nRUN /tool/busybox echo static-tool-ran > /tool-output && ls /tool > /tool-listing\nRUN echo after > /after\n";
    let ctx = env.ctx("withscratch", tool_df, &[("version", "v\n")]);
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    let (_, out) = env.ok(&ctx, &[]);
    let rootfs = env.rootfs(&out);
    assert_eq!(std::fs::read_to_string(rootfs.join("tool-output")).unwrap(), "static-tool-ran\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("tool-listing")).unwrap(), "busybox\nversion-1\n");
    assert!(!rootfs.join("tool").exists(), "the mixed-in image is in the result");
    let (o, _) = env.ok(&ctx, &["--build-arg".into(), "TOOLV=2".into()]);
    let ev = common::events(&o);
    let outcome = |needle: &str| common::outcome(&ev, needle);
    assert_eq!(outcome("echo before"), "cached");
    assert_eq!(outcome("static-tool-ran"), "done", "changing the tool must re-run the RUN that uses it");
    assert_eq!(outcome("echo after"), "done", "the next step's parent changed");

    // base: build on OLD, export on NEW; a new NEW reuses the upper layers.
    let patched = |name: &str, text: &str| -> PathBuf {
        let c = env.ctx(name, &format!("ARG BASE\nFROM ${{BASE}}\nRUN echo {text} > /etc/patched\n"), &[]);
        let (_, out) = env.ok(&c, &[]);
        out
    };
    let new1 = patched("patch1", "one");
    let new2 = patched("patch2", "two");
    let ctx = env.ctx("swap", "ARG BASE\nARG NEW\n# stromatekt:base ${NEW}\nFROM ${BASE}\nRUN echo app > /app\n", &[]);
    let arg = |p: &Path| vec!["--build-arg".to_string(), format!("NEW=oci-layout://{}:latest", p.display())];
    let (_, out) = env.ok(&ctx, &arg(&new1));
    let rootfs = env.rootfs(&out);
    assert_eq!(std::fs::read_to_string(rootfs.join("etc/patched")).unwrap(), "one\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("app")).unwrap(), "app\n");
    assert_eq!(manifest_layers(&out), 2 + 1);
    let layers_of = |layout: &Path| -> Vec<String> {
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let d = index["manifests"][0]["digest"].as_str().unwrap().replace("sha256:", "");
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(d)).unwrap()).unwrap();
        m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
    };
    let first = layers_of(&out);
    let (o, out) = env.ok(&ctx, &arg(&new2));
    let second = layers_of(&out);
    assert_eq!(first.last(), second.last(), "the upper layer blob was not reused");
    assert_eq!(second[..2], layers_of(&new2)[..], "the bottom layers are not the new base's");
    let ev = common::events(&o);
    assert!(
        !ev.iter().any(|e| e["event"] == "done" && !e["name"].as_str().unwrap_or("").contains("load image")),
        "a step ran when only the new base changed"
    );
    assert!(
        ev.iter().any(|e| e["event"] == "cached" && e["name"].as_str().unwrap_or("").contains("echo app")),
        "the upper layer re-ran when only the new base changed"
    );
    let rootfs = env.rootfs(&out);
    assert_eq!(std::fs::read_to_string(rootfs.join("etc/patched")).unwrap(), "two\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("app")).unwrap(), "app\n");
}
