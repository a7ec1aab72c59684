//! `--cache-to` / `--cache-from type=s3` against a real S3-compatible
//! server: moto's server mode (installed by scripts/install-deps.sh in
//! `/opt/stromatekt/moto`, or `$MOTO_VENV`), started on a free loopback
//! port by the test and killed by PID at the end. The bucket is inspected
//! with boto3 from the same virtualenv, independently of our client.
//!
//! Needs root, btrfs, runc, umoci, moto and docker-registry: skipped with a message when
//! missing, except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DOCKERFILE: &str = "ARG BASE
FROM ${BASE} AS builder
RUN echo tool > /tool
FROM ${BASE}
RUN echo one > /one
COPY a.txt /a.txt
COPY --from=builder /tool /tool
RUN cat /one /a.txt /tool > /out
";

fn venv() -> PathBuf {
    std::env::var_os("MOTO_VENV").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/opt/stromatekt/moto"))
}

/// A moto S3 server on loopback, killed (by PID) when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Option<Moto> {
        let bin = venv().join("bin/moto_server");
        if !bin.is_file() {
            common::skip(&format!("{} is missing (scripts/install-deps.sh installs moto)", bin.display()));
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Run boto3 code with `s3` a client of this server; its stdout.
    fn py(&self, code: &str) -> String {
        let prog = format!(
            "import boto3, json, hashlib\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='testing', aws_secret_access_key='testing')\n{code}\n",
            self.endpoint()
        );
        let out = common::run(Command::new(venv().join("bin/python")).arg("-c").arg(prog));
        String::from_utf8(out.stdout).unwrap()
    }

    fn create_bucket(&self, name: &str) {
        self.py(&format!("s3.create_bucket(Bucket='{name}')"));
    }

    /// Every key of `bucket`.
    fn keys(&self, bucket: &str) -> BTreeSet<String> {
        let out = self.py(&format!(
            "for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}'):\n    for o in page.get('Contents', []):\n        print(o['Key'])"
        ));
        out.lines().map(str::to_string).collect()
    }

    /// Object `key` of `bucket`.
    fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self.py(&format!("import sys\nsys.stdout.buffer.write(s3.get_object(Bucket='{bucket}', Key='{key}')['Body'].read())"));
        out.into_bytes()
    }

    /// sha256 of object `key` and its LastModified.
    fn digest_and_mtime(&self, bucket: &str, key: &str) -> (String, String) {
        let out = self.py(&format!(
            "o = s3.get_object(Bucket='{bucket}', Key='{key}')\nprint('sha256:' + hashlib.sha256(o['Body'].read()).hexdigest(), o['LastModified'].isoformat())"
        ));
        let (d, t) = out.trim().split_once(' ').unwrap();
        (d.to_string(), t.to_string())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `stromatekt build` of `ctx` on `env`'s store with AWS credentials in
/// the environment; returns the output whether or not it succeeded.
fn build(env: &common::BuildEnv, ctx: &Path, extra: &[&str]) -> Output {
    let mut c = env.cmd();
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .arg("--progress=rawjson")
        .args(extra)
        .arg(ctx);
    c.output().unwrap()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "stromatekt build failed:\n{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The steps that executed (progress event `done`) other than base image
/// imports, by name.
fn executed(o: &Output) -> Vec<String> {
    common::events(o)
        .iter()
        .filter(|e| e["event"] == "done")
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .filter(|n| !n.contains("load image"))
        .collect()
}

/// How many of the Dockerfile's RUN steps executed.
fn runs(o: &Output) -> usize {
    executed(o).iter().filter(|n| n.contains("echo tool") || n.contains("echo one") || n.contains("cat /one")).count()
}

/// The layer digests of image `latest` in the OCI layout `dir`.
fn layers(dir: &Path) -> Vec<String> {
    let blob = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap()).unwrap()
    };
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let m = blob(index["manifests"][0]["digest"].as_str().unwrap());
    m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

fn s3_opt(moto: &Moto, bucket: &str, rest: &str) -> String {
    format!("type=s3,bucket={bucket},region=us-east-1,endpoint_url={},use_path_style=true{rest}", moto.endpoint())
}

/// Export from store A (mode=max under the default layout, mode=min under
/// custom prefixes and two names), then build on store B, which never
/// built the project: from the max cache every step is cached and no RUN
/// executes; from the min cache only the stage outside the image runs.
/// Blobs the bucket has are not uploaded again.
#[test]
fn s3_cache_makes_a_fresh_store_fully_cached() {
    let Some(a) = common::BuildEnv::new(2, &[]) else { return };
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("ci-cache");
    let ctx_a = a.ctx("ctx", DOCKERFILE, &[("a.txt", "a\n")]);
    let out_a = a.store.scratch().join("out-a");
    let dest_a = format!("type=oci,dest={}", out_a.display());
    let max = s3_opt(&moto, "ci-cache", ",mode=max,name=max");
    let min = s3_opt(&moto, "ci-cache", ",mode=min,prefix=proj/,blobs_prefix=b/,manifests_prefix=m/,name=main;sha-1234");
    let o = ok(build(&a, &ctx_a, &["--cache-to", &max, "--cache-to", &min, "-o", &dest_a]));
    assert_eq!(runs(&o), 3, "store A runs the three RUNs:\n{}", stderr(&o));

    // The layout: blobs and manifests where BuildKit puts them.
    let keys = moto.keys("ci-cache");
    assert!(keys.contains("manifests/max"), "{keys:?}");
    assert!(keys.contains("proj/m/main") && keys.contains("proj/m/sha-1234"), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("manifests/") || k.starts_with("blobs/sha256:") || k.starts_with("proj/m/") || k.starts_with("proj/b/sha256:")), "{keys:?}");
    for (manifest, blobs) in [("manifests/max", "blobs/"), ("proj/m/main", "proj/b/")] {
        let config: serde_json::Value = serde_json::from_slice(&moto.get("ci-cache", manifest)).unwrap();
        let named: BTreeSet<String> = config["recipes"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|r| r["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()))
            .collect();
        let stored: BTreeSet<String> = keys.iter().filter_map(|k| k.strip_prefix(blobs)).map(str::to_string).collect();
        assert_eq!(named, stored, "{manifest}: the blobs under {blobs} are the ones it names");
        for d in &named {
            assert_eq!(&moto.digest_and_mtime("ci-cache", &format!("{blobs}{d}")).0, d, "blob {d} has its digest as content");
        }
    }
    assert_eq!(moto.get("ci-cache", "proj/m/main"), moto.get("ci-cache", "proj/m/sha-1234"));
    let max_recipes = serde_json::from_slice::<serde_json::Value>(&moto.get("ci-cache", "manifests/max")).unwrap()["recipes"].as_object().unwrap().len();
    let min_recipes = serde_json::from_slice::<serde_json::Value>(&moto.get("ci-cache", "proj/m/main")).unwrap()["recipes"].as_object().unwrap().len();
    assert!(max_recipes > min_recipes, "max {max_recipes} recipes, min {min_recipes}");

    // Exporting again uploads nothing: every blob is in the bucket (and
    // is not rewritten while younger than touch_refresh).
    let a_blob = keys.iter().find(|k| k.starts_with("blobs/")).unwrap().clone();
    let before = moto.digest_and_mtime("ci-cache", &a_blob);
    let o = ok(build(&a, &ctx_a, &["--cache-to", &max]));
    assert!(stderr(&o).contains(", 0 uploaded)"), "{}", stderr(&o));
    assert_eq!(moto.digest_and_mtime("ci-cache", &a_blob), before);
    // touch_refresh=0s touches the blobs (a server-side copy), still no upload.
    let o = ok(build(&a, &ctx_a, &["--cache-to", &format!("{max},touch_refresh=0s")]));
    assert!(stderr(&o).contains(", 0 uploaded)"), "{}", stderr(&o));
    assert_eq!(moto.digest_and_mtime("ci-cache", &a_blob).0, before.0);
    assert_eq!(moto.keys("ci-cache"), keys, "touching leaves no temporary keys");

    // Store B has never built the project. The credentials come from a
    // profile in a credentials file this time (no AWS_* keys in the env).
    let Some(b) = common::BuildEnv::new(2, &[]) else { return };
    // The same base image as A's (each BuildEnv makes its own busybox
    // layout, with its own file times, so another image), at another path:
    // where the base comes from must not leak into the cache keys.
    std::fs::remove_dir_all(&b.base).unwrap();
    common::run(Command::new("cp").arg("-a").arg(&a.base).arg(&b.base));
    assert_ne!(a.base, b.base);
    let ctx_b = b.ctx("ctx", DOCKERFILE, &[("a.txt", "a\n")]);
    let creds = b.store.scratch().join("aws-credentials");
    std::fs::write(&creds, "[ci]\naws_access_key_id = testing\naws_secret_access_key = testing\n").unwrap();
    let out_b = b.store.scratch().join("out-b");
    let dest_b = format!("type=oci,dest={}", out_b.display());
    let from_max = s3_opt(&moto, "ci-cache", ",name=max");
    let mut c = b.cmd();
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_CONFIG_FILE", &creds)
        .env("AWS_PROFILE", "ci")
        .args(["--progress=rawjson", "--cache-from", &from_max, "-o", &dest_b])
        .arg(&ctx_b);
    let o = ok(c.output().unwrap());
    let ev = common::events(&o);
    assert_eq!(executed(&o), Vec::<String>::new(), "no step executes on B:\n{}", stderr(&o));
    assert!(stderr(&o).contains("importing build cache s3://ci-cache/manifests/max"), "{}", stderr(&o));
    for step in ["echo tool", "echo one", "cat /one"] {
        assert_eq!(common::outcome(&ev, step), "cached", "{step}:\n{}", stderr(&o));
    }
    assert_eq!(layers(&out_b), layers(&out_a), "same image layers on B as on A");

    // mode=min on a store emptied of the project: the image's stage is
    // cached, the builder stage (only read by COPY --from) runs again.
    common::run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).env("STROMATEKT_ROOT", &b.root).args(["prune", "--all"]));
    let from_min = s3_opt(&moto, "ci-cache", ",prefix=proj/,blobs_prefix=b/,manifests_prefix=m/,name=sha-1234");
    let o = ok(build(&b, &ctx_b, &["--cache-from", &from_min]));
    let ev = common::events(&o);
    assert_eq!(common::outcome(&ev, "echo tool"), "done", "{}", stderr(&o));
    assert_eq!(common::outcome(&ev, "echo one"), "cached", "{}", stderr(&o));
    assert_eq!(common::outcome(&ev, "cat /one"), "cached", "{}", stderr(&o));
    assert_eq!(runs(&o), 1, "{}", stderr(&o));

    // A bucket that does not exist: --cache-to fails naming it, and pushes
    // nothing; with ignore-error=true it is a warning; --cache-from warns.
    let missing = s3_opt(&moto, "no-such-bucket", ",mode=max");
    let Some(reg) = common::RegistryServer::start() else { return };
    let tag = format!("{}/s3/app:1", reg.host());
    let o = build(&a, &ctx_a, &["--cache-to", &missing, "--push", "-t", &tag]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--cache-to"), "{}", stderr(&o));
    assert!(stderr(&o).contains("S3 bucket \"no-such-bucket\" does not exist"), "{}", stderr(&o));
    assert_eq!(reg.tags("s3/app"), Vec::<String>::new(), "the image was pushed although --cache-to failed");
    let o = ok(build(&a, &ctx_a, &["--cache-to", &format!("{missing},ignore-error=true")]));
    assert!(stderr(&o).contains("warning: --cache-to") && stderr(&o).contains("no-such-bucket"), "{}", stderr(&o));
    let o = ok(build(&a, &ctx_a, &["--cache-from", &missing]));
    assert!(stderr(&o).contains("warning: --cache-from") && stderr(&o).contains("no-such-bucket"), "{}", stderr(&o));
    assert_eq!(moto.keys("ci-cache"), keys, "nothing else was written");
    let buckets = moto.py("print([b['Name'] for b in s3.list_buckets()['Buckets']])");
    assert_eq!(buckets.trim(), "['ci-cache']");
}

/// `type=gha` and `type=azblob` are refused before anything is built, with
/// a message naming the backends we support.
#[test]
fn gha_and_azblob_caches_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    for (flag, value) in [("--cache-to", "type=gha,mode=max"), ("--cache-from", "type=gha"), ("--cache-to", "type=azblob,name=x")] {
        let o = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
            .env("STROMATEKT_ROOT", tmp.path().join("root"))
            .args(["build", flag, value])
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(!o.status.success());
        let e = stderr(&o);
        let kind = value.split(',').next().unwrap();
        assert!(e.contains(flag) && e.contains(kind) && e.contains("not supported"), "{e}");
        assert!(e.contains("type=registry, type=local, type=inline or type=s3"), "{e}");
        assert!(!tmp.path().join("root").exists(), "nothing was set up for a refused option");
    }
}
