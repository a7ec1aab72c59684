//! Walking a source directory for the [`Copier`]: entries in name order,
//! leaving out what `.dockerignore` or `--exclude` exclude, yet entering an
//! excluded directory when an exception may re-include something below it.

use super::{excluded_by, Copier, Owners};
use anyhow::{Context as _, Result};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

impl Copier<'_> {
    /// Copy the contents of directory `src` (its path `rel` in the source
    /// root; `item` = the selected source it belongs to) into `dst`. Regular
    /// files are written by worker threads ([`super::files`]); all is in
    /// place when this returns.
    pub(crate) fn tree(&mut self, src: &Path, dst: &Path, rel: &str, item: &str, from_context: bool, owners: Owners) -> Result<()> {
        self.with_file_pool(|cp| cp.walk(src, dst, rel, item, from_context, owners))
    }

    /// [`Self::tree`] on the walking thread.
    pub(super) fn walk(&mut self, src: &Path, dst: &Path, rel: &str, item: &str, from_context: bool, owners: Owners) -> Result<()> {
        for (n, is_dir, excluded) in self.children(src, rel, item, from_context)? {
            let r = if rel.is_empty() { n.to_string_lossy().into_owned() } else { format!("{rel}/{}", n.to_string_lossy()) };
            let (child, d) = (src.join(&n), dst.join(&n));
            if excluded {
                // An excluded directory with exceptions below it exists only
                // if something in it is re-included (as the context walker).
                if is_dir && self.has_included(&child, &r, item, from_context)? {
                    self.entry(&child, &d, owners)?;
                    self.walk(&child, &d, &r, item, from_context, owners)?;
                    self.dir_done(child, d)?;
                }
                continue;
            }
            self.entry(&child, &d, owners)?;
            if is_dir {
                self.walk(&child, &d, &r, item, from_context, owners)?;
                self.dir_done(child, d)?;
            }
        }
        Ok(())
    }

    /// Directory `dst` (a copy of `src`) is filled: set its times now, or,
    /// while workers may still be writing files in it, once they are done.
    fn dir_done(&mut self, src: PathBuf, dst: PathBuf) -> Result<()> {
        match &mut self.pool {
            Some(p) => {
                p.dir_times.push((src, dst));
                Ok(())
            }
            None => self.times(&src, &dst),
        }
    }

    /// The entries of directory `src` (its path `rel`), sorted: name, whether
    /// a directory, whether excluded (by .dockerignore or `--exclude`).
    /// Excluded entries are listed only when they are directories whose
    /// patterns have exceptions (something below may be re-included).
    fn children(&self, src: &Path, rel: &str, item: &str, from_context: bool) -> Result<Vec<(OsString, bool, bool)>> {
        let mut out = Vec::new();
        let mut entries: Vec<(OsString, bool)> = Vec::new();
        for e in fs::read_dir(src).with_context(|| format!("reading directory {}", src.display()))? {
            let e = e.with_context(|| format!("reading directory {}", src.display()))?;
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            entries.push((e.file_name(), is_dir));
        }
        entries.sort();
        for (n, is_dir) in entries {
            let r = if rel.is_empty() { n.to_string_lossy().into_owned() } else { format!("{rel}/{}", n.to_string_lossy()) };
            let by_ctx = from_context && self.ignore.is_some_and(|m| m.excluded(&r, is_dir));
            let by_flag = excluded_by(self.exclude, item, &r);
            let exceptions = (by_ctx && self.ignore.is_some_and(|m| m.has_exceptions()))
                || (by_flag && self.exclude.is_some_and(|m| m.has_exceptions()));
            if (by_ctx || by_flag) && !(is_dir && exceptions) {
                continue;
            }
            out.push((n, is_dir, by_ctx || by_flag));
        }
        Ok(out)
    }

    /// Whether anything below directory `src` is not excluded.
    fn has_included(&self, src: &Path, rel: &str, item: &str, from_context: bool) -> Result<bool> {
        for (n, is_dir, excluded) in self.children(src, rel, item, from_context)? {
            if !excluded {
                return Ok(true);
            }
            let r = if rel.is_empty() { n.to_string_lossy().into_owned() } else { format!("{rel}/{}", n.to_string_lossy()) };
            if is_dir && self.has_included(&src.join(&n), &r, item, from_context)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
