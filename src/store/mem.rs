//! [`DirStore`]: a [`Store`] whose snapshots are plain directory copies
//! (`cp -a`) and whose diff walks both trees. It needs neither root nor btrfs,
//! so the scheduler and layer code are testable anywhere; it is O(tree) where
//! the btrfs store is O(change), and it never reports [`ChangeKind::Replaced`].
//! It can be primed to fail an operation, for failure-path tests.
//!
//! Layout: `ROOT/active/KEY` (writable), `ROOT/committed/NAME`.

use super::{Change, ChangeKind, Store, StoreError};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// A store of directory copies.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
    fail_on: Mutex<BTreeSet<String>>,
    calls: Mutex<Vec<String>>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}

impl DirStore {
    /// Open (creating) a store at `root`.
    pub fn open(root: &Path) -> Result<DirStore, StoreError> {
        super::layout::create_skeleton(root).map_err(io("creating the store in", root))?;
        Ok(DirStore { root: root.to_path_buf(), fail_on: Mutex::default(), calls: Mutex::default() })
    }

    /// Make the next calls of `op` (`prepare`, `commit`, `remove`, `diff`) fail.
    pub fn fail(&self, op: &str) {
        self.fail_on.lock().expect("lock not poisoned").insert(op.to_string());
    }

    /// The calls made so far, as `op arg`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock not poisoned").clone()
    }

    fn record(&self, op: &'static str, arg: &str) -> Result<(), StoreError> {
        self.calls.lock().expect("lock not poisoned").push(format!("{op} {arg}"));
        if self.fail_on.lock().expect("lock not poisoned").contains(op) {
            return Err(StoreError::Io {
                op,
                path: PathBuf::from(arg),
                source: std::io::Error::other("injected failure"),
            });
        }
        Ok(())
    }

    fn active(&self, key: &str) -> PathBuf {
        self.root.join("active").join(key)
    }

    fn committed(&self, name: &str) -> PathBuf {
        self.root.join("committed").join(name)
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), StoreError> {
    let status = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(from)
        .arg(to)
        .status()
        .map_err(io("running cp for", to))?;
    if !status.success() {
        return Err(StoreError::Io { op: "copying", path: to.to_path_buf(), source: std::io::Error::other(format!("cp exited with {status}")) });
    }
    Ok(())
}

impl Store for DirStore {
    fn root(&self) -> &Path {
        &self.root
    }

    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<PathBuf, StoreError> {
        self.record("prepare", key)?;
        let dir = self.active(key);
        if dir.exists() {
            return Err(StoreError::Exists(key.to_string()));
        }
        match parent {
            Some(p) => {
                let src = self.get(p).ok_or_else(|| StoreError::NotFound(p.to_string()))?;
                copy_tree(&src, &dir)?;
            }
            None => fs::create_dir(&dir).map_err(io("creating", &dir))?,
        }
        Ok(dir)
    }

    fn commit(&self, key: &str, name: &str) -> Result<PathBuf, StoreError> {
        self.record("commit", name)?;
        let from = self.active(key);
        if !from.exists() {
            return Err(StoreError::NotFound(key.to_string()));
        }
        let to = self.committed(name);
        if to.exists() {
            self.remove(key)?;
            return Ok(to);
        }
        fs::rename(&from, &to).map_err(io("committing", &to))?;
        Ok(to)
    }

    fn remove(&self, key_or_name: &str) -> Result<(), StoreError> {
        self.record("remove", key_or_name)?;
        for p in [self.active(key_or_name), self.committed(key_or_name)] {
            if p.exists() {
                fs::remove_dir_all(&p).map_err(io("removing", &p))?;
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<PathBuf> {
        let p = self.committed(name);
        p.is_dir().then_some(p)
    }

    fn diff(&self, parent: Option<&str>, child: &str) -> Result<Vec<Change>, StoreError> {
        self.record("diff", child)?;
        let new = self.get(child).ok_or_else(|| StoreError::NotFound(child.to_string()))?;
        let old = match parent {
            Some(p) => Some(self.get(p).ok_or_else(|| StoreError::NotFound(p.to_string()))?),
            None => None,
        };
        let mut out = Vec::new();
        walk_diff(old.as_deref(), &new, Path::new(""), &mut out)?;
        out.sort();
        Ok(out)
    }

    fn list_active(&self) -> Result<Vec<String>, StoreError> {
        list(&self.root.join("active"))
    }

    fn list_committed(&self) -> Result<Vec<String>, StoreError> {
        list(&self.root.join("committed"))
    }
}

fn list(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map_err(io("listing", dir))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    v.sort();
    Ok(v)
}

fn entries(dir: &Path) -> Result<BTreeSet<std::ffi::OsString>, StoreError> {
    Ok(fs::read_dir(dir).map_err(io("listing", dir))?.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
}

/// Whether two entries of the same path differ in type, metadata or content
/// (mtime is ignored, as BuildKit's cache ignores it).
fn differs(a: &Path, am: &fs::Metadata, b: &Path, bm: &fs::Metadata) -> Result<bool, StoreError> {
    if am.file_type() != bm.file_type() || am.mode() != bm.mode() || am.uid() != bm.uid() || am.gid() != bm.gid() {
        return Ok(true);
    }
    let ft = am.file_type();
    if ft.is_symlink() {
        return Ok(fs::read_link(a).map_err(io("reading", a))? != fs::read_link(b).map_err(io("reading", b))?);
    }
    if ft.is_file() {
        if am.len() != bm.len() {
            return Ok(true);
        }
        return Ok(fs::read(a).map_err(io("reading", a))? != fs::read(b).map_err(io("reading", b))?);
    }
    Ok(am.rdev() != bm.rdev())
}

fn add_all(new: &Path, rel: &Path, out: &mut Vec<Change>) -> Result<(), StoreError> {
    for name in entries(&new.join(rel))? {
        let r = rel.join(&name);
        out.push(Change { path: r.clone(), kind: ChangeKind::Added });
        if fs::symlink_metadata(new.join(&r)).map_err(io("stat", &r))?.is_dir() {
            add_all(new, &r, out)?;
        }
    }
    Ok(())
}

fn walk_diff(old: Option<&Path>, new: &Path, rel: &Path, out: &mut Vec<Change>) -> Result<(), StoreError> {
    let Some(old) = old else { return add_all(new, rel, out) };
    let old_names = entries(&old.join(rel))?;
    let new_names = entries(&new.join(rel))?;
    for name in old_names.difference(&new_names) {
        out.push(Change { path: rel.join(name), kind: ChangeKind::Deleted });
    }
    for name in &new_names {
        let r = rel.join(name);
        let (np, op) = (new.join(&r), old.join(&r));
        let nm = fs::symlink_metadata(&np).map_err(io("stat", &np))?;
        if !old_names.contains(name) {
            out.push(Change { path: r.clone(), kind: ChangeKind::Added });
            if nm.is_dir() {
                add_all(new, &r, out)?;
            }
            continue;
        }
        let om = fs::symlink_metadata(&op).map_err(io("stat", &op))?;
        if differs(&op, &om, &np, &nm)? {
            out.push(Change { path: r.clone(), kind: ChangeKind::Modified });
        }
        match (om.is_dir(), nm.is_dir()) {
            (true, true) => walk_diff(Some(old), new, &r, out)?,
            (false, true) => add_all(new, &r, out)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn changes(v: &[Change]) -> Vec<(String, ChangeKind)> {
        v.iter().map(|c| (c.path.display().to_string(), c.kind)).collect()
    }

    #[test]
    fn prepare_commit_diff() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DirStore::open(tmp.path()).unwrap();
        let a = s.prepare("w1", None).unwrap();
        fs::create_dir(a.join("etc")).unwrap();
        fs::write(a.join("etc/keep"), "1").unwrap();
        fs::write(a.join("etc/gone"), "1").unwrap();
        fs::write(a.join("mode"), "x").unwrap();
        fs::write(a.join("edit"), "old").unwrap();
        s.commit("w1", "base").unwrap();
        assert_eq!(
            changes(&s.diff(None, "base").unwrap()),
            vec![
                ("edit".into(), ChangeKind::Added),
                ("etc".into(), ChangeKind::Added),
                ("etc/gone".into(), ChangeKind::Added),
                ("etc/keep".into(), ChangeKind::Added),
                ("mode".into(), ChangeKind::Added),
            ]
        );

        let b = s.prepare("w2", Some("base")).unwrap();
        fs::remove_file(b.join("etc/gone")).unwrap();
        fs::set_permissions(b.join("mode"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(b.join("edit"), "new").unwrap();
        fs::create_dir_all(b.join("new/sub")).unwrap();
        symlink("/etc/keep", b.join("new/link")).unwrap();
        s.commit("w2", "top").unwrap();
        assert_eq!(
            changes(&s.diff(Some("base"), "top").unwrap()),
            vec![
                ("edit".into(), ChangeKind::Modified),
                ("etc/gone".into(), ChangeKind::Deleted),
                ("mode".into(), ChangeKind::Modified),
                ("new".into(), ChangeKind::Added),
                ("new/link".into(), ChangeKind::Added),
                ("new/sub".into(), ChangeKind::Added),
            ]
        );
        // The parent is untouched by the child's changes.
        assert!(s.get("base").unwrap().join("etc/gone").exists());
        assert_eq!(s.list_committed().unwrap(), vec!["base".to_string(), "top".to_string()]);
        assert!(s.list_active().unwrap().is_empty());
    }

    #[test]
    fn commit_of_existing_name_keeps_the_first_and_drops_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DirStore::open(tmp.path()).unwrap();
        let a = s.prepare("w1", None).unwrap();
        fs::write(a.join("f"), "first").unwrap();
        s.commit("w1", "n").unwrap();
        let b = s.prepare("w2", None).unwrap();
        fs::write(b.join("f"), "second").unwrap();
        let p = s.commit("w2", "n").unwrap();
        assert_eq!(fs::read_to_string(p.join("f")).unwrap(), "first");
        assert!(s.list_active().unwrap().is_empty());
    }

    #[test]
    fn injected_failure_and_recorded_calls() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DirStore::open(tmp.path()).unwrap();
        s.prepare("w1", None).unwrap();
        s.fail("commit");
        let err = s.commit("w1", "n").unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_eq!(s.list_active().unwrap(), vec!["w1".to_string()]);
        assert!(s.prepare("w3", Some("missing")).is_err());
        assert_eq!(s.calls(), vec!["prepare w1", "commit n", "prepare w3"]);
    }
}
