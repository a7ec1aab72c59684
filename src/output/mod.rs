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
//! attested.rs  images with attestations: an index with attestation manifests
//! ```

pub mod annotations;
pub mod attested;
pub mod compress;
pub mod image;
pub mod load;
pub mod spec;

use crate::image::config::ImageConfig;
use crate::image::manifest::Descriptor;
use crate::progress::Progress;
use crate::registry::Registry;
use crate::scheduler::State;
use crate::store::Store;
use anyhow::{anyhow, Context as _, Result};
use image::{BuiltImage, Encoding};
pub use attested::attach_to_index;
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
    /// Attestations of the image, attached where each output keeps them.
    pub attestations: crate::attest::ForImage,
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
/// `need_image` is false. Pushes go through `reg`, the build's registry
/// client.
pub fn write_outputs<S: Store>(store: &S, state: &State, req: &Request, progress: &Progress, need_image: bool, reg: &dyn Registry) -> Result<Option<ImageInfo>> {
    let temp = store.temp_path();
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
        BuiltImage::assemble(config, layers.clone(), layers.len().saturating_sub(ours), enc, &temp)
    };
    let record_as = |img: &BuiltImage, desc: &Descriptor, names: &[String], info: &mut Option<ImageInfo>| {
        if info.is_none() {
            *info = Some(ImageInfo { config_digest: img.image_id().to_string(), descriptor: desc.clone(), names: names.to_vec() });
        }
    };
    let record = |img: &BuiltImage, names: &[String], info: &mut Option<ImageInfo>| record_as(img, &img.manifest_desc, names, info);
    let atts = &req.attestations;
    let warn_dropped = |what: &str| {
        if !atts.dropped_by_load().is_empty() {
            progress.message(&format!("warning: {what} cannot hold attestations (no image index): they are not in it; push the image or use type=oci to keep them"));
        }
    };
    // The final stage's base image, recorded on the manifest.
    let bases: Vec<(Option<&str>, &crate::image::base::BaseRef)> = state.base.iter().map(|b| (None, b)).collect();
    let annotations_of = |o: &OutputSpec| req.annotations.merged(&o.annotations).with_bases(&bases);
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
            Kind::Local | Kind::Tar => {
                let root = state.top.as_ref().and_then(|t| store.get(t));
                let files = crate::attest::attach::file_statements(root.as_deref(), &atts.in_files())?;
                write_fs(store, state, o, progress, &files, req.epoch)?
            }
            Kind::Oci if !o.oci_as_tar() => {
                let Some(Dest::Path(dir)) = &o.dest else { return Err(anyhow!("type=oci,tar=false needs dest=DIR")) };
                let ann = annotations_of(o);
                let (img_ann, idx_ann) = attested::split_annotations(&ann);
                let plain = image(encoding_of(o), &mut parts)?;
                let in_layout = attested::usable(&plain, atts.in_layout())?;
                let img = annotations::annotate_image(plain, if in_layout.is_empty() { &ann } else { &img_ann })?;
                let tag = names.first().map(|n| image::tag_part(n)).unwrap_or_else(|| "latest".into());
                img.write_layout_dir(dir, &tag)?;
                if in_layout.is_empty() {
                    progress.message(&format!("exported {} to {}", img.manifest_desc.digest, dir.display()));
                    record(&img, &names, &mut info);
                } else {
                    let idx = attested::attach_single(dir, &img, &in_layout, &atts.platform, &names, &tag, &idx_ann)?;
                    progress.message(&format!("exported index {} (image {} and its attestations) to {}", idx.digest, img.manifest_desc.digest, dir.display()));
                    record_as(&img, &idx, &names, &mut info);
                }
            }
            Kind::Oci | Kind::Docker if o.kind == Kind::Oci || o.dest.is_some() => {
                let docker = o.kind == Kind::Docker;
                let ann = annotations_of(o);
                let (img_ann, idx_ann) = attested::split_annotations(&ann);
                let plain = image(encoding_of(o), &mut parts)?;
                let in_layout = if docker { vec![] } else { attested::usable(&plain, atts.in_layout())? };
                let img = annotations::annotate_image(plain, if in_layout.is_empty() { &ann } else { &img_ann })?;
                if docker || in_layout.is_empty() {
                    if docker {
                        warn_dropped("a docker archive");
                    }
                    write_to(o.dest.as_ref(), |w| img.write_archive(w, &names, docker).map(|_| ()))?;
                    if let Some(Dest::Path(p)) = &o.dest {
                        progress.message(&format!("exported {} to {}", img.manifest_desc.digest, p.display()));
                    }
                    record(&img, &names, &mut info);
                } else {
                    let mut idx = None;
                    write_to(o.dest.as_ref(), |w| {
                        idx = Some(attested::write_oci_tar(&img, &in_layout, &atts.platform, &names, &idx_ann, &temp, w)?);
                        Ok(())
                    })?;
                    let idx = idx.ok_or_else(|| anyhow!("internal: OCI tar not written"))?;
                    if let Some(Dest::Path(p)) = &o.dest {
                        progress.message(&format!("exported index {} (image {} and its attestations) to {}", idx.digest, img.manifest_desc.digest, p.display()));
                    }
                    record_as(&img, &idx, &names, &mut info);
                }
            }
            Kind::Oci => return Err(anyhow!("internal: unhandled oci output")),
            // `--load`, and type=image without push= (the docker driver's
            // meaning: into the local image store).
            Kind::Docker | Kind::Image if !o.push => {
                let img = annotations::annotate_image(image(encoding_of(o), &mut parts)?, &annotations_of(o))?;
                warn_dropped("the Docker image store (docker load)");
                std::fs::create_dir_all(&temp).with_context(|| format!("creating {}", temp.display()))?;
                let tmp = tempfile::Builder::new().prefix(&crate::store::temp_prefix("load")).suffix(".tar").tempfile_in(&temp).context("temp file in the store")?;
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
                let ann = annotations_of(o);
                let (img_ann, idx_ann) = attested::split_annotations(&ann);
                let plain = image(encoding_of(o), &mut parts)?;
                let pushed = attested::usable(&plain, atts.pushed())?;
                let img = annotations::annotate_image(plain, if pushed.is_empty() { &ann } else { &img_ann })?;
                let tmp = tempfile::Builder::new().prefix(&crate::store::temp_prefix("push")).tempdir_in(store.root()).context("temp dir in the store")?;
                // A lazy base's layers are not here: the push finds them
                // in the base's repository.
                let mut push_opts = crate::registry::push::PushOptions::default();
                if let Some(lazy) = &state.lazy {
                    push_opts.mount_from.push(lazy.pinned.clone());
                    for (d, _) in &state.base_blobs {
                        push_opts.remote.insert(d.digest.clone(), vec![lazy.pinned.clone()]);
                    }
                }
                let absent = push_opts.remote.keys().cloned().collect();
                img.write_layout_dir_without(tmp.path(), "latest", &absent)?;
                let top = if pushed.is_empty() {
                    img.manifest_desc.clone()
                } else {
                    attested::attach_single(tmp.path(), &img, &pushed, &atts.platform, &names, "latest", &idx_ann)?
                };
                for n in &names {
                    let t = std::time::Instant::now();
                    let (digest, st) = crate::registry::push::push_layout_stats(reg, tmp.path(), &top, n, &push_opts)
                        .with_context(|| format!("pushing {n}"))?;
                    progress.message(&format!("pushed {n}@{digest}: {}", st.summary(t.elapsed())));
                    if let Some(lazy) = &state.lazy {
                        let how = if registry_of(&lazy.pinned) == registry_of(n) { "mounted from" } else { "copied registry to registry from" };
                        progress.message(&format!("base {}: {} layers not downloaded ({how} {})", lazy.reference, state.base_blobs.len(), lazy.pinned));
                    }
                }
                record_as(&img, &top, &names, &mut info);
            }
        }
    }
    if info.is_none() && need_image {
        let img = image(Encoding::default(), &mut parts)?;
        record(&img, &req.tags, &mut info);
    }
    Ok(info)
}

/// The registry host of image reference `r` (None when it does not parse).
fn registry_of(r: &str) -> Option<String> {
    let n = crate::registry::pull::normalize_reference(r).ok()?;
    crate::registry::reference::parse(&n).ok().map(|p| p.registry().to_string())
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
fn write_fs<S: Store>(store: &S, state: &State, o: &OutputSpec, progress: &Progress, files: &[(String, Vec<u8>)], epoch: Option<u64>) -> Result<()> {
    let fs_tar = |w: &mut dyn Write| -> Result<()> {
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
    // Attestation files (type=tar) go after the filesystem's entries.
    let tar = |w: &mut dyn Write| -> Result<()> {
        if files.is_empty() {
            return fs_tar(w);
        }
        let mut hold = crate::attest::attach::HoldTail::new(w);
        fs_tar(&mut hold)?;
        hold.finish_with(files, epoch)?;
        Ok(())
    };
    match (o.kind, &o.dest) {
        (Kind::Local, Some(Dest::Path(dir))) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let root = store.temp_path();
            std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
            let tmp = tempfile::Builder::new().prefix(&crate::store::temp_prefix("local")).tempfile_in(&root).context("temp file in the store")?;
            {
                let mut w = std::io::BufWriter::new(tmp.reopen().context("opening the temp tar")?);
                fs_tar(&mut w)?;
                w.flush().context("writing the temp tar")?;
            }
            let r = std::io::BufReader::new(tmp.reopen().context("reading the temp tar")?);
            crate::image::layer::extract(r, dir).with_context(|| format!("writing the filesystem to {}", dir.display()))?;
            for (name, bytes) in files {
                let p = dir.join(name);
                std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).with_context(|| format!("chmod {}", p.display()))?;
            }
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
pub fn write_metadata(path: &Path, info: Option<&ImageInfo>, extra: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let mut v = info.map(ImageInfo::metadata).unwrap_or_else(|| serde_json::json!({}));
    if let Some(m) = v.as_object_mut() {
        m.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let bytes = serde_json::to_vec_pretty(&v)?;
    std::fs::write(path, bytes).with_context(|| format!("writing --metadata-file {}", path.display()))
}

/// `--iidfile` and `--metadata-file` of a multi-platform build: the index
/// digest (buildx writes it when there is no single config digest), and
/// `containerimage.digest`/`descriptor`/`image.name` plus `extra`.
pub fn write_index_records(
    iidfile: Option<&Path>,
    metadata_file: Option<&Path>,
    index: &Descriptor,
    names: &[String],
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    if let Some(path) = iidfile {
        std::fs::write(path, &index.digest).with_context(|| format!("writing --iidfile {}", path.display()))?;
    }
    if let Some(path) = metadata_file {
        let mut m = serde_json::json!({
            "containerimage.digest": index.digest,
            "containerimage.descriptor": { "mediaType": index.media_type, "digest": index.digest, "size": index.size },
        });
        if !names.is_empty() {
            m["image.name"] = serde_json::Value::String(names.join(","));
        }
        if let Some(o) = m.as_object_mut() {
            o.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        std::fs::write(path, serde_json::to_vec_pretty(&m)?).with_context(|| format!("writing --metadata-file {}", path.display()))?;
    }
    Ok(())
}
