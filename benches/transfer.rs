//! Layer export and registry push throughput (run by `make bench`; plain
//! `std::time`, no harness):
//! - compressing a 1 GB mixed layer: single-threaded gzip (flate2, level 6)
//!   against our parallel gzip and multi-threaded zstd (level 3); our gzip
//!   as the export runs it (with the store's block index), cold, then on
//!   the same data shifted by a 100-byte insertion (blocks reused);
//! - pushing a 500 MB image to a `docker-registry` on loopback, then pushing
//!   it again (which must upload no blob).
//!
//! Writes `bench/transfer.md` (a table) and prints it.

#![allow(clippy::unwrap_used)]

use sha2::Digest;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stromatekt::image::blocks::BlockIndex;
use stromatekt::image::compress::{BlockCache, ParGzWriter};
use stromatekt::image::layout::Layout;
use stromatekt::image::manifest::{descriptor, Descriptor, Manifest, CONFIG_V1, LAYER_GZIP, MANIFEST_V1};
use stromatekt::registry::oci::OciRegistry;

const MB: usize = 1 << 20;

/// Deterministic "mixed" content: runs of text-like bytes and runs of noise,
/// like a layer of binaries and text.
fn mixed(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let words: &[&[u8]] = &[b"lib", b"usr/share/doc/", b"the ", b"function ", b"return 0;\n", b"ELF", b"\x00\x00\x00\x00"];
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let run = 512 + (x % 4096) as usize;
        if x.is_multiple_of(3) {
            for _ in 0..run {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
        } else {
            while v.len() < len && run > 0 {
                let w = words[(x % words.len() as u64) as usize];
                v.extend_from_slice(w);
                x = x.rotate_left(5).wrapping_add(0x1234_5679);
                if v.len() % run < w.len() {
                    break;
                }
            }
        }
    }
    v.truncate(len);
    v
}

/// CPU time of the process so far (all threads), seconds.
fn cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass; no other memory is involved.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let c = cpu();
    let r = f();
    eprintln!("transfer bench: {:.2} s wall, {:.2} s cpu", t.elapsed().as_secs_f64(), cpu() - c);
    (r, t.elapsed())
}

fn rate(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MB as f64 / d.as_secs_f64()
}

/// A docker-registry on a free loopback port, killed on drop.
struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry() -> Option<Registry> {
    if !Path::new("/usr/bin/docker-registry").exists() {
        eprintln!("transfer bench: docker-registry missing, push skipped");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new("/usr/bin/docker-registry").arg("serve").arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(Registry { child, port, _dir: dir });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// An OCI layout with one image whose single layer is `layer` (gzip blob bytes).
fn layout_with(dir: &Path, layer_blob: &Path) -> Descriptor {
    let layout = Layout::create(dir).unwrap();
    let bytes = std::fs::read(layer_blob).unwrap();
    let ld = Descriptor { media_type: LAYER_GZIP.into(), ..descriptor(LAYER_GZIP, &bytes) };
    drop(bytes);
    layout.put_file(&ld.digest, layer_blob).unwrap();
    let cfg = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{}}}}"#,
        ld.digest
    );
    let cd = descriptor(CONFIG_V1, cfg.as_bytes());
    layout.put_bytes(&cd.digest, cfg.as_bytes()).unwrap();
    let m = Manifest::new(cd, vec![ld]).to_json();
    let md = descriptor(MANIFEST_V1, &m);
    layout.put_bytes(&md.digest, &m).unwrap();
    layout.set_manifest(md.clone(), Some("latest")).unwrap();
    md
}

fn main() {
    let size = std::env::var("STROMATEKT_BENCH_EXPORT_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024usize);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!("transfer bench: generating {size} MB of mixed data");
    let data = mixed(size * MB);
    let mut rows: Vec<(String, String)> = Vec::new();

    let (single, t1) = time(|| {
        let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::new(6));
        gz.write_all(&data).unwrap();
        gz.finish().unwrap().len()
    });
    let (par, t2) = time(|| {
        let mut gz = ParGzWriter::new(Vec::with_capacity(data.len() / 2), 6).unwrap();
        gz.write_all(&data).unwrap();
        gz.finish().unwrap().len()
    });
    let (zs, t3) = time(|| {
        let mut z = zstd::stream::write::Encoder::new(Vec::with_capacity(data.len() / 2), 3).unwrap();
        z.multithread(cores as u32).unwrap();
        z.write_all(&data).unwrap();
        z.finish().unwrap().len()
    });
    rows.push((format!("gzip -6, one thread ({size} MB mixed layer)"), format!("{:.0} MB/s ({:.1} s, ratio {:.2})", rate(data.len(), t1), t1.as_secs_f64(), single as f64 / data.len() as f64)));
    rows.push((
        format!("parallel gzip -6, {cores} cores"),
        format!("{:.0} MB/s ({:.1} s, {:.2}x one thread, ratio {:.2})", rate(data.len(), t2), t2.as_secs_f64(), t1.as_secs_f64() / t2.as_secs_f64(), par as f64 / data.len() as f64),
    ));
    rows.push((format!("zstd -3, {cores} threads"), format!("{:.0} MB/s ({:.1} s, ratio {:.2})", rate(data.len(), t3), t3.as_secs_f64(), zs as f64 / data.len() as f64)));

    // The export path: blocks looked up in (and recorded to) the store's
    // block index; then the same data with 100 bytes inserted near the start.
    {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = tmp.path().join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let index = Arc::new(BlockIndex::new(&tmp.path().join("blocks"), &blobs));
        let export = |input: &[u8]| {
            let file = blobs.join("tmp");
            let mut gz = ParGzWriter::with_cache(std::io::BufWriter::new(std::fs::File::create(&file).unwrap()), 6, Some(index.clone() as Arc<dyn BlockCache>)).unwrap();
            gz.write_all(input).unwrap();
            let (mut out, blocks) = gz.finish_blocks().unwrap();
            out.flush().unwrap();
            drop(out);
            let hex = hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()));
            std::fs::rename(&file, blobs.join(&hex)).unwrap();
            index.record(&format!("sha256:{hex}"), &blocks.records).unwrap();
            blocks
        };
        let (cold, t4) = time(|| export(&data));
        let mut shifted = data[..4096].to_vec();
        shifted.extend_from_slice(&[b'+'; 100]);
        shifted.extend_from_slice(&data[4096..]);
        let (warm, t5) = time(|| export(&shifted));
        rows.push((
            "parallel gzip -6 with the block index, cold (export path)".into(),
            format!("{:.0} MB/s ({:.1} s, {} blocks)", rate(data.len(), t4), t4.as_secs_f64(), cold.total),
        ));
        rows.push((
            "same data with 100 bytes inserted, warm block index".into(),
            format!("{:.0} MB/s ({:.1} s, {} of {} blocks reused)", rate(shifted.len(), t5), t5.as_secs_f64(), warm.reused, warm.total),
        ));
    }
    drop(data);

    if let Some(reg) = registry() {
        let push_mb = 500usize;
        let tmp = tempfile::tempdir().unwrap();
        // A 500 MB layer blob.
        let blob = tmp.path().join("layer.gz");
        {
            let mut gz = ParGzWriter::new(std::io::BufWriter::new(std::fs::File::create(&blob).unwrap()), 1).unwrap();
            // Noise: gzip keeps its size, so the image is ~500 MB.
            let mut x: u64 = 0x2545_F491_4F6C_DD1D;
            let chunk: Vec<u8> = (0..16 * MB)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            for i in 0..push_mb / 16 {
                let mut c = chunk.clone();
                c[0] = i as u8;
                gz.write_all(&c).unwrap();
            }
            gz.finish().unwrap().flush().unwrap();
        }
        let blob_size = std::fs::metadata(&blob).unwrap().len() as usize;
        let dir: PathBuf = tmp.path().join("layout");
        let md = layout_with(&dir, &blob);
        let target = format!("127.0.0.1:{}/bench/push:latest", reg.port);
        let client = OciRegistry::new().unwrap();
        let (r, t) = time(|| stromatekt::registry::push::push_layout(&client, &dir, &md, &target));
        r.unwrap();
        let first_uploads = client.uploads();
        let (r, t_again) = time(|| stromatekt::registry::push::push_layout(&client, &dir, &md, &target));
        r.unwrap();
        let again = client.uploads() - first_uploads;
        rows.push((
            format!("push of a {} MB image to a loopback registry", blob_size / MB),
            format!("{:.0} MB/s ({:.1} s, {first_uploads} blobs uploaded)", rate(blob_size, t), t.as_secs_f64()),
        ));
        rows.push(("re-push of the unchanged image".into(), format!("{:.2} s, {again} blobs uploaded", t_again.as_secs_f64())));
    }

    let mut md = String::from("| transfer | result |\n|---|---|\n");
    for (k, v) in &rows {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    println!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/transfer.md");
    if let Some(d) = out.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = std::fs::write(&out, md);
}
