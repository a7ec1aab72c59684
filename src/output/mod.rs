//! Build outputs (`-o/--output`, `--load`, `--push`, `--iidfile`,
//! `--metadata-file`), in docker/buildx syntax: OCI layouts (directory or
//! tar), docker archives, the final filesystem (directory or tar), image
//! pushes, and loads into Docker or Podman.
//!
//! The build itself and the layer blobs (`scheduler::export::image_parts`)
//! are left to the scheduler; this module only encodes and writes.
//!
//! ```text
//! spec.rs      parse `type=...,dest=...` values
//! compress.rs  re-encode layer blobs (zstd, uncompressed)
//! image.rs     assemble config + layers + manifest; layout dir / tar / docker archive
//! load.rs      docker archive -> Docker daemon (unix socket) or podman load
//! ```

pub mod annotations;
pub mod compress;
pub mod image;
pub mod load;
pub mod spec;

use crate::image::config::ImageConfig;
use crate::image::manifest::Descriptor;
use crate::progress::Progress;
use crate::scheduler::State;
use crate::store::Store;
use anyhow::{anyhow, Context as _, Result};
use image::{BuiltImage, Encoding};
use spec::{Dest, Kind, OutputSpec};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the outputs need besides the built state.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Parsed `-o` values.
    pub outputs: Vec<OutputSpec>,
    /// `-t` names.
    pub tags: Vec<String>,
    /// `--label KEY=VALUE`s, added to the image config.
    pub labels: Vec<(String, String)>,
    /// `--load`.
    pub load: bool,
    /// `--push`.
    pub push: bool,
    /// Layer export threads.
    pub jobs: usize,
    /// `SOURCE_DATE_EPOCH`: clamp file times, set `created` (reproducible images).
    pub epoch: Option<u64>,
    /// `--annotation`s (each output's `annotation.*` options are added to them).
    pub annotations: annotations::Annotations,
}

/// The image the build produced, as recorded by `--iidfile`,
/// `--metadata-file` and `-q`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Config digest (the Docker image ID).
    pub config_digest: String,
    /// Manifest descriptor.
    pub descriptor: Descriptor,
    /// Image names.
    pub names: Vec<String>,
}

impl ImageInfo {
    /// The `--metadata-file` JSON, with the keys buildx writes.
    pub fn metadata(&self) -> serde_json::Value {
        let mut m = serde_json::json!({
            "containerimage.config.digest": self.config_digest,
            "containerimage.digest": self.descriptor.digest,
            "containerimage.descriptor": {
                "mediaType": self.descriptor.media_type,
                "digest": self.descriptor.digest,
                "size": self.descriptor.size,
            },
        });
        if !self.names.is_empty() {
            m["image.name"] = serde_json::Value::String(self.names.join(","));
        }
        m
    }
}

fn encoding_of(o: &OutputSpec) -> Encoding {
    Encoding { compression: o.compression, level: o.compression_level, force: o.force_compression, oci: o.oci_mediatypes() }
}

/// Write every requested output of `state`; returns the image written (or,
/// with no image output, the default-encoded image, for `-q` and
/// `--iidfile`), or None when only filesystem outputs were asked for and
/// `need_image` is false.
pub fn write_outputs<S: Store>(store: &S, state: &State, req: &Request, progress: &Progress, need_image: bool) -> Result<Option<ImageInfo>> {
    let root = store.root().to_path_buf();
    let mut info: Option<ImageInfo> = None;
    // Built lazily: filesystem-only outputs never make layer blobs.
    let mut parts: Option<(ImageConfig, Vec<(Descriptor, PathBuf)>)> = None;
    let ours = state.layers.len();
    let image = |enc: Encoding, parts: &mut Option<(ImageConfig, Vec<(Descriptor, PathBuf)>)>| -> Result<BuiltImage> {
        if parts.is_none() {
            let t = std::time::Instant::now();
            let (blocks0, reused0) = crate::image::compress::reuse_counters();
            let (mut config, layers) = crate::scheduler::export::image_parts_at(store, state, req.jobs, req.epoch)?;
            let ours: u64 = layers.iter().skip(layers.len().saturating_sub(state.layers.len())).map(|(d, _)| d.size).sum();
            if t.elapsed() > std::time::Duration::from_millis(200) {
                // Layers were diffed and compressed now (not from the cache).
                let (blocks1, reused1) = crate::image::compress::reuse_counters();
                let reuse = match blocks1.saturating_sub(blocks0) {
                    0 => String::new(),
                    n => format!(", {} of {n} gzip blocks reused", reused1.saturating_sub(reused0)),
                };
                progress.message(&format!("exported layers: {}{reuse}", crate::progress::rate_text(ours, t.elapsed())));
            }
            if !req.labels.is_empty() {
                let labels = config.config.labels.get_or_insert_with(Default::default);
                for (k, v) in &req.labels {
                    labels.insert(k.clone(), v.clone());
                }
            }
            *parts = Some((config, layers));
        }
        let (config, layers) = parts.as_ref().ok_or_else(|| anyhow!("internal: image parts missing"))?;
        BuiltImage::assemble(config, layers.clone(), layers.len().saturating_sub(ours), enc, &root.join("tmp"))
    };
    let record = |img: &BuiltImage, names: &[String], info: &mut Option<ImageInfo>| {
        if info.is_none() {
            *info = Some(ImageInfo { config_digest: img.image_id().to_string(), descriptor: img.manifest_desc.clone(), names: names.to_vec() });
        }
    };
    let mut outputs = req.outputs.clone();
    if req.push {
        outputs.push(OutputSpec { push: true, ..spec::parse("type=image").map_err(|e| anyhow!("{e}"))? });
    }
    if req.load {
        outputs.push(OutputSpec { dest: None, ..spec::parse("type=docker,dest=-").map_err(|e| anyhow!("{e}"))? });
    }
    for o in &outputs {
        let mut names = req.tags.clone();
        names.extend(o.names.iter().cloned());
        match o.kind {
            Kind::Local | Kind::Tar => write_fs(store, state, o, progress)?,
            Kind::Oci if !o.oci_as_tar() => {
                let Some(Dest::Path(dir)) = &o.dest else { return Err(anyhow!("type=oci,tar=false needs dest=DIR")) };
                let img = annotations::annotate_image(image(encoding_of(o), &mut parts)?, &req.annotations.merged(&o.annotations))?;
                let tag = names.first().map(|n| image::tag_part(n)).unwrap_or_else(|| "latest".into());
                img.write_layout_dir(dir, &tag)?;
                progress.message(&format!("exported {} to {}", img.manifest_desc.digest, dir.display()));
                record(&img, &names, &mut info);
            }
            Kind::Oci | Kind::Docker if o.kind == Kind::Oci || o.dest.is_some() => {
                let img = annotations::annotate_image(image(encoding_of(o), &mut parts)?, &req.annotations.merged(&o.annotations))?;
                let docker = o.kind == Kind::Docker;
                write_to(o.dest.as_ref(), |w| img.write_archive(w, &names, docker).map(|_| ()))?;
                if let Some(Dest::Path(p)) = &o.dest {
                    progress.message(&format!("exported {} to {}", img.manifest_desc.digest, p.display()));
                }
                record(&img, &names, &mut info);
            }
            Kind::Oci => return Err(anyhow!("internal: unhandled oci output")),
            // `--load`, and type=image without push= (the docker driver's
            // meaning: into the local image store).
            Kind::Docker | Kind::Image if !o.push => {
                let img = annotations::annotate_image(image(encoding_of(o), &mut parts)?, &req.annotations.merged(&o.annotations))?;
                std::fs::create_dir_all(root.join("tmp")).with_context(|| format!("creating {}/tmp", root.display()))?;
                let tmp = tempfile::Builder::new().prefix(&crate::cache::temp_prefix("load")).suffix(".tar").tempfile_in(root.join("tmp")).context("temp file in the store")?;
                let file = std::io::BufWriter::new(tmp.reopen().context("opening the temp archive")?);
                let mut file = img.write_archive(file, &names, true)?;
                file.flush().context("writing the temp archive")?;
                match load::load(tmp.path())? {
                    load::Loaded::Docker(sock, msg) => progress.message(&format!("loaded {} into Docker ({}){}", img.image_id(), sock.display(), if msg.is_empty() { String::new() } else { format!(": {msg}") })),
                    load::Loaded::Podman(msg) => progress.message(&format!("loaded {} into Podman: {msg}", img.image_id())),
                }
                record(&img, &names, &mut info);
            }
            Kind::Docker | Kind::Image => {
                if names.is_empty() {
                    return Err(anyhow!("pushing needs an image name: add -t REGISTRY/REPO[:TAG] (or name= in --output)"));
                }
                let img = annotations::annotate_image(image(encoding_of(o), &mut parts)?, &req.annotations.merged(&o.annotations))?;
                let tmp = tempfile::Builder::new().prefix(&crate::cache::temp_prefix("push")).tempdir_in(&root).context("temp dir in the store")?;
                img.write_layout_dir(tmp.path(), "latest")?;
                let reg = crate::registry::oci::OciRegistry::new()?;
                for n in &names {
                    let t = std::time::Instant::now();
                    let (digest, st) = crate::registry::push::push_layout_stats(&reg, tmp.path(), &img.manifest_desc, n, &Default::default())
                        .with_context(|| format!("pushing {n}"))?;
                    progress.message(&format!("pushed {n}@{digest}: {}", crate::progress::transfer_summary(&st, t.elapsed())));
                }
                record(&img, &names, &mut info);
            }
        }
    }
    if info.is_none() && need_image {
        let img = image(Encoding::default(), &mut parts)?;
        record(&img, &req.tags, &mut info);
    }
    Ok(info)
}

/// Open `dest` (a file, or stdout) and run `f` on a buffered writer.
fn write_to(dest: Option<&Dest>, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    match dest {
        Some(Dest::Path(p)) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let file = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
            let mut w = std::io::BufWriter::new(file);
            f(&mut w).with_context(|| format!("writing {}", p.display()))?;
            w.flush().with_context(|| format!("writing {}", p.display()))
        }
        Some(Dest::Stdout) | None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            f(&mut w).context("writing to standard output")?;
            w.flush().context("writing to standard output")
        }
    }
}

/// The final filesystem (`type=local` / `type=tar`).
fn write_fs<S: Store>(store: &S, state: &State, o: &OutputSpec, progress: &Progress) -> Result<()> {
    let tar = |w: &mut dyn Write| -> Result<()> {
        match &state.top {
            None => {
                tar::Builder::new(w).finish().context("writing an empty tar")?;
            }
            Some(top) => {
                let changes = store.diff(None, top).with_context(|| format!("listing snapshot {top}"))?;
                let tree = store.get(top).ok_or_else(|| anyhow!("snapshot {top} vanished"))?;
                crate::image::layer::write_tar(&tree, &changes, w, None).with_context(|| format!("writing the filesystem of {top}"))?;
            }
        }
        Ok(())
    };
    match (o.kind, &o.dest) {
        (Kind::Local, Some(Dest::Path(dir))) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let root = store.root().join("tmp");
            std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
            let tmp = tempfile::Builder::new().prefix(&crate::cache::temp_prefix("local")).tempfile_in(&root).context("temp file in the store")?;
            {
                let mut w = std::io::BufWriter::new(tmp.reopen().context("opening the temp tar")?);
                tar(&mut w)?;
                w.flush().context("writing the temp tar")?;
            }
            let r = std::io::BufReader::new(tmp.reopen().context("reading the temp tar")?);
            crate::image::layer::extract(r, dir).with_context(|| format!("writing the filesystem to {}", dir.display()))?;
            progress.message(&format!("exported the filesystem to {}", dir.display()));
        }
        _ => {
            write_to(o.dest.as_ref(), |w| tar(w))?;
            if let Some(Dest::Path(p)) = &o.dest {
                progress.message(&format!("exported the filesystem to {}", p.display()));
            }
        }
    }
    Ok(())
}

/// Write `info`'s image ID to `path` (`--iidfile`).
pub fn write_iidfile(path: &Path, info: &ImageInfo) -> Result<()> {
    std::fs::write(path, &info.config_digest).with_context(|| format!("writing --iidfile {}", path.display()))
}

/// Write `--metadata-file`.
pub fn write_metadata(path: &Path, info: Option<&ImageInfo>) -> Result<()> {
    let v = info.map(ImageInfo::metadata).unwrap_or_else(|| serde_json::json!({}));
    let bytes = serde_json::to_vec_pretty(&v)?;
    std::fs::write(path, bytes).with_context(|| format!("writing --metadata-file {}", path.display()))
}
