//! Base images for a build: resolving `FROM` references (OCI layouts on
//! disk, registry pulls into the store) and reading their configs before
//! lowering (ENV, SHELL, WORKDIR, ONBUILD) and for the build checks.

use super::input::Input;
use crate::image::source::{read_layout, split_layout_ref, SourceImage};
use crate::registry::Registry;
use crate::scheduler::ImageResolver;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Resolves `FROM` references: OCI layouts on disk, or registry pulls into
/// the store's content directory.
pub(crate) struct Resolver {
    content: PathBuf,
    /// The build's registry client.
    reg: Arc<dyn Registry>,
    /// Registry images whose manifest and config were read before lowering
    /// (for the base image's ENV, ONBUILD, ...), by (reference, platform):
    /// the pull then fetches that same manifest by digest, without asking
    /// the registry for the tag again (it may have moved meanwhile).
    resolved: std::sync::Mutex<BTreeMap<(String, String), crate::registry::pull::ResolvedImage>>,
}

impl Resolver {
    pub(super) fn new(content: PathBuf, reg: Arc<dyn Registry>) -> Resolver {
        Resolver { content, reg, resolved: Default::default() }
    }

    /// Only the config of image `reference` (no layers downloaded).
    fn config(&self, reference: &str, platform: &str) -> Result<crate::image::config::ImageConfig> {
        if reference.starts_with("oci-layout://") {
            let (path, tag) = split_layout_ref(reference);
            return Ok(read_layout(&path, tag.as_deref(), platform)?.config);
        }
        let r = crate::registry::pull::resolve_config(&*self.reg, reference, platform, &self.content)?;
        let config = r.config.clone();
        if let Ok(mut m) = self.resolved.lock() {
            m.insert((reference.to_string(), platform.to_string()), r);
        }
        Ok(config)
    }
}

impl ImageResolver for Resolver {
    fn resolve(&self, reference: &str, platform: &str) -> Result<SourceImage> {
        if reference.starts_with("oci-layout://") {
            let (path, tag) = split_layout_ref(reference);
            return Ok(read_layout(&path, tag.as_deref(), platform)?);
        }
        let reg = &*self.reg;
        let known = self.resolved.lock().ok().and_then(|m| m.get(&(reference.to_string(), platform.to_string())).cloned());
        Ok(match known {
            Some(r) => crate::registry::pull::pull_resolved(reg, r, &self.content)?,
            None => crate::registry::pull::pull(reg, reference, platform, &self.content)?,
        })
    }

    fn resolve_lazy(&self, reference: &str, platform: &str) -> Result<Option<(SourceImage, String)>> {
        if reference.starts_with("oci-layout://") {
            return Ok(None);
        }
        let known = self.resolved.lock().ok().and_then(|m| m.get(&(reference.to_string(), platform.to_string())).cloned());
        let r = match known {
            Some(r) => r,
            None => crate::registry::pull::resolve_config(&*self.reg, reference, platform, &self.content)?,
        };
        let pinned = r.pinned.clone();
        Ok(Some((crate::registry::pull::unfetched(r, &self.content)?, pinned)))
    }
}

/// Fill `opts.image_env` / `image_shell` with the configs of the FROM images
/// (BuildKit expands `$VAR` with the base image's ENV). Images that cannot be
/// resolved now are left out: their FROM step reports the error.
pub(super) fn base_image_configs(resolver: &Resolver, input: &Input, opts: &mut frontend::LowerOptions, platform: &str) {
    if input.text.is_empty() {
        return;
    }
    let Ok(refs) = frontend::base_images(&input.text, opts) else { return };
    for r in refs {
        if let Ok(config) = resolver.config(&r, platform) {
            // Inserted even when empty: a known Env without PATH gets
            // BuildKit's default PATH.
            opts.image_env.insert(r.clone(), config.config.env.clone().unwrap_or_default());
            if let Some(shell) = config.config.shell.clone() {
                opts.image_shell.insert(r.clone(), shell);
            }
            if let Some(wd) = config.config.working_dir.clone().filter(|w| !w.is_empty()) {
                opts.image_workdir.insert(r.clone(), wd);
            }
            if let Some(triggers) = config.config.on_build.clone().filter(|t| !t.is_empty()) {
                opts.image_onbuild.insert(r.clone(), triggers);
            }
        }
    }
}

/// What the build checks read of base image `name`: from the configs
/// lowering already fetched, else fetched now (None when unresolvable).
pub(super) fn base_facts(resolver: &Resolver, name: &str, plat: &str) -> Option<crate::cli::call::BaseFacts> {
    let cached = resolver.resolved.lock().ok().and_then(|m| m.get(&(name.to_string(), plat.to_string())).map(|r| r.config.clone()));
    let config = match cached {
        Some(c) => c,
        None => resolver.config(name, plat).ok()?,
    };
    Some(crate::cli::call::facts(&config))
}
