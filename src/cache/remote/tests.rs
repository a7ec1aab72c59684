//! Whole builds through the scheduler with a cache exported to a local
//! layout and imported on a fresh store (S3: `s3.rs`).

#![allow(clippy::unwrap_used)]

use super::*;
use crate::context::Context;
use crate::exec::fake::FakeExecutor;
use crate::image::source::SourceImage;
use crate::progress::{Mode, Outcome, Progress, StepRecord};
use crate::scheduler::{ImageResolver, Options, Scheduler, State};
use crate::store::mem::DirStore;
use crate::store::Store;
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::{Arc, Mutex};

struct NoImages;

impl ImageResolver for NoImages {
    fn resolve(&self, reference: &str, _platform: &str) -> Result<SourceImage> {
        bail!("no images in tests ({reference})")
    }
}

/// `touch P` creates P in the rootfs; nothing else does anything.
pub(super) fn fake() -> FakeExecutor {
    FakeExecutor::new().with_behaviour(|req| {
        let cmd = req.args.last().cloned().unwrap_or_default();
        for part in cmd.split("&&") {
            if let ["touch", p] = part.split_whitespace().collect::<Vec<_>>().as_slice() {
                let path = req.rootfs.join(p.trim_start_matches('/'));
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, p).unwrap();
            }
        }
        0
    })
}

const DOCKERFILE: &str = "FROM scratch AS builder\nRUN touch /tool\n\
FROM scratch\nCOPY a.txt /a.txt\nRUN touch /one\nWORKDIR /work\n\
# stromatekt:parallel\nRUN touch /p1\nRUN touch /p2\n# stromatekt:end\n\
COPY --from=builder /tool /tool\nRUN touch /work/out\n";

pub(super) struct Machine {
    pub(super) _tmp: tempfile::TempDir,
    pub(super) store: DirStore,
    pub(super) context: Context,
}

pub(super) fn machine() -> Machine {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(&tmp.path().join("store")).unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a.txt"), "a").unwrap();
    let context = Context::open(&ctx).unwrap().with_index(&tmp.path().join("index"));
    Machine { _tmp: tmp, store, context }
}

/// Build DOCKERFILE on `m`; returns the result, the step records and
/// the recorder.
pub(super) fn build(m: &Machine, exec: &FakeExecutor, cache: Option<Arc<ImportedCache>>) -> (State, Vec<StepRecord>, Recorder) {
    let g = frontend::build_graph(DOCKERFILE, &frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() }).unwrap();
    let progress = Progress::new(Mode::Quiet);
    let mut sched = Scheduler::new(&m.store, exec, &m.context, &NoImages, &progress, Options { jobs: 4, ..Options::default() });
    if let Some(c) = cache {
        sched = sched.with_remote_cache(c);
    }
    let states = sched.run(&g).unwrap();
    let st = states[&g.exports[0].node].clone();
    let rec = Recorder { plans: Mutex::new(sched.recorded().plans()), deps: Mutex::new(sched.recorded().deps.lock().unwrap().clone()) };
    (st, progress.records(), rec)
}

pub(super) fn digests<S: Store>(store: &S, st: &State) -> Vec<String> {
    crate::scheduler::export::image_parts(store, st, 2).unwrap().1.into_iter().map(|(d, _)| d.digest).collect()
}

#[test]
fn rejects_unsafe_names() {
    let mut c = CacheConfig { version: 1, recipes: BTreeMap::new() };
    c.recipes.insert("../etc".into(), Recipe { start: None, layers: vec![] });
    assert!(c.validate("x").is_err());
    let mut c = CacheConfig { version: 1, recipes: BTreeMap::new() };
    c.recipes.insert("run-1".into(), Recipe { start: Some("w-1-x".into()), layers: vec![] });
    assert!(c.validate("x").is_err());
    let mut c = CacheConfig { version: 1, recipes: BTreeMap::new() };
    c.recipes.insert("img-abc".into(), Recipe { start: None, layers: vec![] });
    assert!(c.validate("x").unwrap_err().to_string().contains("base image"));
    let c = CacheConfig { version: 2, recipes: BTreeMap::new() };
    assert!(c.validate("x").unwrap_err().to_string().contains("version 2"));
}

/// mode=max through a local layout: on a fresh store every step is a
/// hit, nothing runs, the image is the same, and each needed blob is
/// brought over once.
#[test]
fn local_cache_max_makes_every_step_cached_elsewhere() {
    if !crate::test_skip::root() {
        return;
    }
    let a = machine();
    let exec_a = fake();
    let (st_a, _, rec) = build(&a, &exec_a, None);
    assert!(!exec_a.requests().is_empty());
    let dir = a._tmp.path().join("cache");
    let spec = parse_cache_spec(&format!("type=local,dest={},mode=max", dir.display())).unwrap();
    let sum = export_cache(&a.store, &rec, &[&st_a], &spec, None).unwrap();
    assert!(sum.recipes >= 8, "{sum:?}");

    let b = machine();
    let exec_b = fake();
    let imported = Arc::new(ImportedCache::import(&parse_cache_spec(&format!("type=local,src={}", dir.display())).unwrap(), None, "linux/amd64").unwrap());
    let (st_b, records, _) = build(&b, &exec_b, Some(imported.clone()));
    assert!(exec_b.requests().is_empty(), "containers ran: {:?}", exec_b.requests().iter().map(|r| r.args.clone()).collect::<Vec<_>>());
    assert!(!records.is_empty());
    for r in &records {
        assert_eq!(r.outcome, Outcome::Cached, "{} was not cached", r.name);
    }
    assert_eq!(digests(&b.store, &st_b), digests(&a.store, &st_a));
    // Each blob once: the final image's layers plus the builder stage's
    // one layer (a blob equal to another counts once).
    let distinct: BTreeSet<&str> = imported.config().recipes.values().flat_map(|r| r.layers.iter().map(|l| l.digest.as_str())).collect();
    assert_eq!(imported.downloaded(), distinct.len());
    assert!(distinct.len() <= st_b.layers.len() + 1);
    assert!(b.store.get(st_b.top.as_deref().unwrap()).unwrap().join("work/out").exists());
}

/// mode=min exports the result's chain only: the final stage is cached
/// elsewhere; the builder stage (not in the image) runs again.
#[test]
fn local_cache_min_covers_the_result() {
    if !crate::test_skip::root() {
        return;
    }
    let a = machine();
    let exec_a = fake();
    let (st_a, _, rec) = build(&a, &exec_a, None);
    let dir = a._tmp.path().join("cache-min");
    export_cache(&a.store, &rec, &[&st_a], &CacheSpec::Local { src: None, dest: Some(dir.clone()), mode: CacheMode::Min }, None).unwrap();

    let b = machine();
    let exec_b = fake();
    let imported = Arc::new(ImportedCache::from_local(&dir).unwrap());
    let (st_b, records, _) = build(&b, &exec_b, Some(imported.clone()));
    let ran: Vec<String> = exec_b.requests().iter().map(|r| r.args.join(" ")).collect();
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].contains("touch /tool"), "{ran:?}");
    for r in records.iter().filter(|r| !r.name.contains("touch /tool")) {
        assert_eq!(r.outcome, Outcome::Cached, "{} was not cached", r.name);
    }
    assert_eq!(digests(&b.store, &st_b), digests(&a.store, &st_a));
    assert_eq!(imported.downloaded(), st_b.layers.len());
}

/// A cache entry the local store has is not fetched; a corrupt blob is
/// a warning and the step runs.
#[test]
fn corrupt_local_cache_falls_back_to_building() {
    if !crate::test_skip::root() {
        return;
    }
    let a = machine();
    let exec_a = fake();
    let (st_a, _, rec) = build(&a, &exec_a, None);
    let dir = a._tmp.path().join("cache-bad");
    export_cache(&a.store, &rec, &[&st_a], &CacheSpec::Local { src: None, dest: Some(dir.clone()), mode: CacheMode::Max }, None).unwrap();
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        if fs::read(&p).unwrap().starts_with(&[0x1f, 0x8b]) {
            fs::write(&p, b"garbage").unwrap();
        }
    }
    let b = machine();
    let exec_b = fake();
    let imported = Arc::new(ImportedCache::from_local(&dir).unwrap());
    let (st_b, _, _) = build(&b, &exec_b, Some(imported));
    assert!(!exec_b.requests().is_empty());
    assert!(b.store.get(st_b.top.as_deref().unwrap()).unwrap().join("work/out").exists());
}
