//! The layer of an incremental COPY, written by copying the kept entries
//! from the previous layer's blob (`image::splice`), is the blob a cold
//! build of the same tree exports: same digest, same diff_id.

use super::*;
use crate::cache::layers::{layer_blob_blocks, CachedLayer};

const TEXT: &str = "FROM scratch\nCOPY data /data\n";
const EPOCH: Option<u64> = Some(1_700_000_000);

/// Build [`TEXT`] on `store` and export its COPY's layer: the record, how
/// many tar entries were copied from the previous blob, and whether the
/// COPY was incremental.
fn build_and_export(store: &DirStore, context: &Context) -> (CachedLayer, usize, bool) {
    let g = graph(TEXT);
    let exec = FakeExecutor::new();
    let progress = Progress::new(Mode::Quiet);
    let sched = Scheduler::new(store, &exec, context, &NoImages, &progress, options());
    let st = sched.run(&g).map(|states| states[&g.exports[0].node].clone()).unwrap();
    let incremental = sched.incremental_copies.load(std::sync::atomic::Ordering::SeqCst) == 1;
    let (rec, _, made) = layer_blob_blocks(store, st.layers.last().unwrap(), EPOCH).unwrap();
    (rec, made.map_or(0, |(_, copied)| copied), incremental)
}

/// The layer a cold build of the context makes, on a fresh store.
fn cold(ctx: &Path) -> CachedLayer {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(&tmp.path().join("store")).unwrap();
    let context = Context::open(ctx).unwrap();
    let (rec, copied, incremental) = build_and_export(&store, &context);
    assert!(!incremental && copied == 0);
    rec
}

#[test]
fn spliced_layers_equal_cold_ones() {
    let mut files: Vec<(String, String)> = Vec::new();
    for d in 0..4 {
        for i in 0..25 {
            files.push((format!("data/d{d}/f{i:02}.txt"), format!("file {d}/{i} ").repeat(i * 40 + 1)));
        }
    }
    files.push(("data/z-last".into(), "the last entry".into()));
    let spec: Vec<(&str, &str, u32)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str(), 0o644)).collect();
    let f = fx(&spec);
    let d = f.ctx().join("data");
    symlink("d0/f00.txt", d.join("link")).unwrap();
    let (_, copied, _) = build_and_export(&f.store, &f.context);
    assert_eq!(copied, 0, "nothing to copy from on the first build");

    type Edit = Box<dyn Fn(&Path)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("the first file", Box::new(|d| fs::write(d.join("d0/f00.txt"), "changed first").unwrap())),
        ("a file in the middle, same size", Box::new(|d| {
            let p = d.join("d2/f12.txt");
            let mut b = fs::read(&p).unwrap();
            b[3] ^= 1;
            fs::write(p, b).unwrap();
        })),
        ("the last entry", Box::new(|d| fs::write(d.join("z-last"), "the last entry, longer now".repeat(30)).unwrap())),
        ("a removal", Box::new(|d| fs::remove_file(d.join("d1/f07.txt")).unwrap())),
        ("an added file", Box::new(|d| fs::write(d.join("d3/f07b.txt"), "added between two").unwrap())),
        ("a symlink's target", Box::new(|d| {
            fs::remove_file(d.join("link")).unwrap();
            symlink("d1/f01.txt", d.join("link")).unwrap();
        })),
    ];
    for (what, edit) in &edits {
        edit(&d);
        let (got, copied, incremental) = build_and_export(&f.store, &f.context);
        assert!(incremental, "after {what}: the COPY was not incremental");
        assert!(copied >= 90, "after {what}: only {copied} entries copied from the previous layer");
        let want = cold(&f.ctx());
        assert_eq!((&got.digest, &got.diff_id, got.size), (&want.digest, &want.diff_id, want.size), "after {what}");
    }

    // A damaged entry index is missing: the layer is written from its
    // files, still the same blob, and the next build has an index again.
    let entries = f.store.root().join("cache/entries");
    let damage = |how: &dyn Fn(&mut Vec<u8>)| {
        for e in fs::read_dir(&entries).unwrap() {
            let p = e.unwrap().path();
            let mut bytes = fs::read(&p).unwrap();
            how(&mut bytes);
            fs::write(&p, bytes).unwrap();
        }
    };
    damage(&|b| b[20] ^= 0x40);
    fs::write(d.join("d0/f03.txt"), "after a damaged index").unwrap();
    let (got, copied, incremental) = build_and_export(&f.store, &f.context);
    assert!(incremental);
    assert_eq!(copied, 0, "a damaged entry index was used");
    assert_eq!(got.digest, cold(&f.ctx()).digest);
    fs::write(d.join("d0/f04.txt"), "and again").unwrap();
    let (got, copied, _) = build_and_export(&f.store, &f.context);
    assert!(copied >= 90);
    assert_eq!(got.digest, cold(&f.ctx()).digest);

    // An index that is whole but does not match its blob (offsets moved):
    // the header check stops the copy and the layer is written from files.
    for e in fs::read_dir(&entries).unwrap() {
        let p = e.unwrap().path();
        let digest = format!("sha256:{}", p.file_name().unwrap().to_string_lossy());
        // (the indexes damaged above and not read since are gone now)
        let Some(mut idx) = crate::cache::entries::read(f.store.root(), &digest) else { continue };
        for t in &mut idx {
            t.start += 512;
        }
        crate::cache::entries::keep(f.store.root(), &digest, &idx);
    }
    fs::write(d.join("d0/f05.txt"), "after a wrong index").unwrap();
    let (got, copied, _) = build_and_export(&f.store, &f.context);
    assert_eq!(copied, 0, "entries were copied by a wrong index");
    assert_eq!(got.digest, cold(&f.ctx()).digest);
}
