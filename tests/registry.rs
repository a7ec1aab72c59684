//! Integration tests for [`stromatekt::registry::oci::OciRegistry`] against a
//! real `docker-registry` (distribution) on loopback, started per test.
//!
//! When `docker-registry` is missing the tests are skipped with a message,
//! unless `CI=true`, where they fail.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stromatekt::image::manifest::{descriptor, digest_of, Index, Manifest, Platform, CONFIG_V1, INDEX_V1, LAYER_GZIP, MANIFEST_V1};
use stromatekt::registry::oci::OciRegistry;
use stromatekt::registry::{Registry, RegistryError};

const BINARY: &str = "/usr/bin/docker-registry";

/// A running `docker-registry serve`; killed on drop.
struct RegistryServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RegistryServer {
    /// Start one, or `None` (skip) when the binary is missing outside CI.
    fn start() -> Option<RegistryServer> {
        let binary = if Path::new(BINARY).exists() {
            PathBuf::from(BINARY)
        } else if let Some(p) = which("docker-registry") {
            p
        } else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("docker-registry not installed, but CI=true");
            }
            eprintln!("skipping: docker-registry not installed");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
            l.local_addr().expect("local addr").port()
        };
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .expect("write config");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn docker-registry");
        let server = RegistryServer { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.ping() {
            assert!(Instant::now() < deadline, "docker-registry did not answer GET /v2/ on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// Whether GET /v2/ answers 200.
    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port).as_bytes()).is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

/// A small gzip'd tar layer with one file.
fn gzip_layer() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let data = b"hello from stromatekt\n";
    let mut h = tar::Header::new_gnu();
    h.set_path("hello.txt").unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append(&h, &data[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn push_pull_roundtrip_against_docker_registry() {
    let Some(server) = RegistryServer::start() else { return };
    let reg = OciRegistry::new().unwrap();
    let reference = format!("{}/test/img:v1", server.host());
    let work = tempfile::tempdir().unwrap();

    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#.to_vec();
    let layer = gzip_layer();
    let config_path = work.path().join("config.json");
    let layer_path = work.path().join("layer.tar.gz");
    std::fs::write(&config_path, &config).unwrap();
    std::fs::write(&layer_path, &layer).unwrap();
    let config_desc = descriptor(CONFIG_V1, &config);
    let layer_desc = descriptor(LAYER_GZIP, &layer);

    assert!(!reg.blob_exists(&reference, &layer_desc.digest).unwrap());
    reg.push_blob(&reference, &config_desc.digest, &config_path).unwrap();
    reg.push_blob(&reference, &layer_desc.digest, &layer_path).unwrap();
    assert!(reg.blob_exists(&reference, &layer_desc.digest).unwrap());
    assert_eq!(reg.uploads(), 2);
    // Second push: already there, skipped.
    reg.push_blob(&reference, &layer_desc.digest, &layer_path).unwrap();
    assert_eq!(reg.uploads(), 2);

    let manifest = Manifest::new(config_desc.clone(), vec![layer_desc.clone()]).to_json();
    let digest = reg.push_manifest(&reference, &manifest, MANIFEST_V1).unwrap();
    assert_eq!(digest, digest_of(&manifest));

    if which("skopeo").is_some() {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", &format!("docker://{reference}")])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "skopeo failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&digest), "skopeo output lacks {digest}: {stdout}");
    } else {
        eprintln!("skopeo not installed; skipping skopeo check");
    }

    let got = reg.manifest(&reference, "linux/amd64").unwrap();
    assert_eq!(got.bytes, manifest);
    assert_eq!(got.digest, digest);
    assert_eq!(got.media_type, MANIFEST_V1);

    let dest = work.path().join("out").join("layer");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    reg.fetch_blob(&reference, &layer_desc.digest, &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), layer);

    // A digest that is not there errors and leaves nothing behind.
    let missing = work.path().join("out").join("missing");
    let err = reg.fetch_blob(&reference, &digest_of(b"not there"), &missing).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. } | RegistryError::Transport { .. }), "{err:?}");
    assert!(!missing.exists());

    // An index pointing at the manifest resolves to it for linux/amd64.
    let mut entry = descriptor(MANIFEST_V1, &manifest);
    entry.platform = Some(Platform { architecture: "amd64".into(), os: "linux".into(), variant: None });
    let index = Index::new(vec![entry]).to_json();
    let multi = format!("{}/test/img:multi", server.host());
    reg.push_manifest(&multi, &index, INDEX_V1).unwrap();
    let resolved = reg.manifest(&multi, "linux/amd64").unwrap();
    assert_eq!(resolved.digest, digest);
    assert_eq!(resolved.bytes, manifest);
    assert!(matches!(reg.manifest(&multi, "linux/s390x"), Err(RegistryError::NotFound { .. })));

    // Unknown tag.
    let err = reg.manifest(&format!("{}/test/img:nope", server.host()), "linux/amd64").unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
}

#[test]
fn invalid_reference_is_reported() {
    let reg = OciRegistry::new().unwrap();
    let err = reg.manifest("Not A Valid//Reference", "linux/amd64").unwrap_err();
    assert!(matches!(err, RegistryError::Reference { .. }), "{err:?}");
}
