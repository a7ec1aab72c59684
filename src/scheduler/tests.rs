//! Scheduler tests without root: [`DirStore`] snapshots and a
//! [`FakeExecutor`] whose behaviour writes files and sleeps.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::exec::fake::FakeExecutor;
use crate::progress::{Mode, Outcome, Progress, StepRecord};
use crate::store::mem::DirStore;
use frontend::LowerOptions;
use std::time::Duration;

struct NoImages;

impl ImageResolver for NoImages {
    fn resolve(&self, reference: &str, _platform: &str) -> Result<SourceImage> {
        bail!("no images in tests ({reference})")
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    store: DirStore,
    context: Context,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(&tmp.path().join("store")).unwrap();
    let ctx_dir = tmp.path().join("ctx");
    fs::create_dir_all(&ctx_dir).unwrap();
    fs::write(ctx_dir.join("a.txt"), "a").unwrap();
    let context = Context::open(&ctx_dir).unwrap().with_index(&tmp.path().join("index"));
    Fixture { _tmp: tmp, store, context }
}

/// When each fake command really ran: (command, start, end).
type Spans = std::sync::Arc<Mutex<Vec<(String, std::time::Instant, std::time::Instant)>>>;

/// An executor whose `sleep N` sleeps N*100 ms and whose `touch P` creates P.
fn fake() -> FakeExecutor {
    fake_recording(Spans::default())
}

fn fake_recording(spans: Spans) -> FakeExecutor {
    FakeExecutor::new().with_behaviour(move |req| {
        let cmd = req.args.last().cloned().unwrap_or_default();
        let t0 = std::time::Instant::now();
        let code = fake_command(req, &cmd);
        spans.lock().unwrap().push((cmd, t0, std::time::Instant::now()));
        code
    })
}

fn fake_command(req: &crate::exec::ExecRequest, cmd: &str) -> i32 {
    {
        for part in cmd.split("&&") {
            let words: Vec<&str> = part.split_whitespace().collect();
            match words.as_slice() {
                ["sleep", n] => std::thread::sleep(Duration::from_millis(n.parse::<u64>().unwrap_or(1) * 100)),
                ["touch", p] => {
                    let path = req.rootfs.join(p.trim_start_matches('/'));
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(path, p).unwrap();
                }
                ["false"] => return 1,
                _ => {}
            }
        }
        0
    }
}

fn graph(text: &str, args: &[(&str, &str)]) -> Graph {
    let opts = LowerOptions {
        file: "Dockerfile".into(),
        build_args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    frontend::build_graph(text, &opts).map_err(|e| e.render("Dockerfile", text)).unwrap()
}

/// Options of these tests: without root, the image's 0:0 is the user
/// running them.
fn opts() -> Options {
    Options { jobs: 4, ids: crate::fscopy::IdMap::for_current_user(), ..Options::default() }
}

fn build(f: &Fixture, exec: &FakeExecutor, text: &str, args: &[(&str, &str)]) -> (Result<State>, Vec<StepRecord>) {
    let g = graph(text, args);
    let progress = Progress::new(Mode::Quiet);
    let sched = Scheduler::new(&f.store, exec, &f.context, &NoImages, &progress, opts());
    let res = sched.run(&g).map(|states| states[&g.exports[0].node].clone());
    (res, progress.records())
}

fn by_text<'r>(records: &'r [StepRecord], needle: &str) -> &'r StepRecord {
    records.iter().find(|r| r.name.contains(needle)).unwrap_or_else(|| panic!("no step {needle} in {records:#?}"))
}

fn overlaps(a: &StepRecord, b: &StepRecord) -> bool {
    a.start < b.end && b.start < a.end
}

const STAGES: &str = "FROM scratch AS a\nRUN sleep 3 && touch /a\n\
FROM scratch AS b\nRUN sleep 3 && touch /b\n\
FROM scratch AS c\nRUN sleep 3 && touch /c\n\
FROM scratch\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\nRUN sleep 1 && touch /done\n";

#[test]
fn independent_stages_overlap_and_dependent_steps_do_not() {
    let f = fixture();
    let spans = Spans::default();
    let exec = fake_recording(spans.clone());
    let (res, rec) = build(&f, &exec, STAGES, &[]);
    let st = res.unwrap();
    // The commands themselves (inside the executor) overlapped.
    let spans = spans.lock().unwrap().clone();
    let span = |needle: &str| spans.iter().find(|s| s.0.contains(needle)).map(|s| (s.1, s.2)).unwrap();
    let (sa, sb, sc, sd) = (span("touch /a"), span("touch /b"), span("touch /c"), span("touch /done"));
    let ov = |x: (std::time::Instant, std::time::Instant), y: (std::time::Instant, std::time::Instant)| x.0 < y.1 && y.0 < x.1;
    assert!(ov(sa, sb) && ov(sb, sc) && ov(sa, sc), "commands did not run concurrently");
    assert!(sa.1 <= sd.0 && sb.1 <= sd.0 && sc.1 <= sd.0, "the dependent command overlapped its inputs");
    let (a, b, c) = (by_text(&rec, "touch /a"), by_text(&rec, "touch /b"), by_text(&rec, "touch /c"));
    assert!(overlaps(a, b) && overlaps(b, c) && overlaps(a, c), "stages did not overlap: {rec:#?}");
    let last = by_text(&rec, "touch /done");
    for r in [a, b, c] {
        assert!(r.end <= last.start, "the final RUN started before its inputs ended: {rec:#?}");
    }
    for copy in rec.iter().filter(|r| r.name.contains("COPY")) {
        assert!(copy.end <= last.start);
    }
    assert_eq!(st.layers.len(), 4);
    let top = f.store.get(st.top.as_deref().unwrap()).unwrap();
    for p in ["a", "b", "c", "done"] {
        assert!(top.join(p).is_file(), "{p} missing from the result");
    }
}

#[test]
fn rebuild_is_fully_cached_and_runs_nothing() {
    let f = fixture();
    let exec = fake();
    build(&f, &exec, STAGES, &[]).0.unwrap();
    let runs = exec.requests().len();
    assert_eq!(runs, 4);
    let (res, rec) = build(&f, &exec, STAGES, &[]);
    res.unwrap();
    assert_eq!(exec.requests().len(), runs, "a cached rebuild started containers");
    assert!(rec.iter().all(|r| r.outcome == Outcome::Cached), "{rec:#?}");
}

#[test]
fn build_arg_change_reruns_from_its_first_use() {
    let f = fixture();
    let exec = fake();
    let text = "FROM scratch\nRUN touch /one\nARG V=1\nRUN touch /two\nRUN echo $V && touch /three\nRUN touch /four\n";
    build(&f, &exec, text, &[]).0.unwrap();
    let (res, rec) = build(&f, &exec, text, &[("V", "2")]);
    res.unwrap();
    assert_eq!(by_text(&rec, "touch /one").outcome, Outcome::Cached);
    // BuildKit: every RUN after the ARG sees it in its environment.
    assert_eq!(by_text(&rec, "touch /two").outcome, Outcome::Done);
    assert_eq!(by_text(&rec, "touch /three").outcome, Outcome::Done);
    assert_eq!(by_text(&rec, "touch /four").outcome, Outcome::Done);
}

#[test]
fn copy_cache_follows_content_and_mode_not_mtime() {
    let f = fixture();
    let exec = fake();
    let text = "FROM scratch\nRUN touch /first\nCOPY a.txt /a.txt\nRUN touch /after\n";
    build(&f, &exec, text, &[]).0.unwrap();
    let file = f.context.dir.join("a.txt");

    // mtime only: cached.
    let later = std::time::SystemTime::now() + Duration::from_secs(100);
    fs::File::options().write(true).open(&file).unwrap().set_modified(later).unwrap();
    let (res, rec) = build(&f, &exec, text, &[]);
    res.unwrap();
    assert!(rec.iter().all(|r| r.outcome == Outcome::Cached), "mtime change re-ran: {rec:#?}");

    // content: the COPY and what follows re-run, earlier steps cached.
    fs::write(&file, "changed").unwrap();
    let (res, rec) = build(&f, &exec, text, &[]);
    res.unwrap();
    assert_eq!(by_text(&rec, "touch /first").outcome, Outcome::Cached);
    assert_eq!(by_text(&rec, "COPY").outcome, Outcome::Done);
    assert_eq!(by_text(&rec, "touch /after").outcome, Outcome::Done);

    // mode: same.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let (res, rec) = build(&f, &exec, text, &[]);
    res.unwrap();
    assert_eq!(by_text(&rec, "touch /first").outcome, Outcome::Cached);
    assert_eq!(by_text(&rec, "COPY").outcome, Outcome::Done);
    assert_eq!(by_text(&rec, "touch /after").outcome, Outcome::Done);
}

#[test]
fn no_cache_reruns_everything_and_filter_only_its_stage() {
    let f = fixture();
    let exec = fake();
    let text = "FROM scratch AS a\nRUN touch /a\nFROM scratch\nRUN touch /b\n";
    build(&f, &exec, text, &[]).0.unwrap();
    let g = graph(text, &[]);
    let progress = Progress::new(Mode::Quiet);
    let opts = Options { jobs: 2, no_cache_stages: vec!["a".into()], ..Options::default() };
    Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, opts).run(&g).unwrap();
    // Stage a is not needed by the final stage: nothing ran.
    assert!(progress.records().iter().all(|r| r.outcome == Outcome::Cached));
    let progress = Progress::new(Mode::Quiet);
    let opts = Options { jobs: 2, no_cache: true, ..Options::default() };
    Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, opts).run(&g).unwrap();
    assert!(progress.records().iter().all(|r| r.outcome == Outcome::Done));
    // The --no-cache results replaced the old ones: the next build reuses them.
    let progress = Progress::new(Mode::Quiet);
    Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, Options::default()).run(&g).unwrap();
    assert!(progress.records().iter().all(|r| r.outcome == Outcome::Cached), "{:#?}", progress.records());
    assert!(f.store.list_active().unwrap().is_empty());
}

#[test]
fn no_cache_filter_rebuilds_what_is_built_on_the_stage() {
    let f = fixture();
    let exec = fake();
    let text = "FROM scratch AS a\nRUN touch /a\nFROM a AS b\nRUN touch /b\nFROM scratch AS c\nRUN touch /c\nFROM b\nCOPY --from=c /c /c\n";
    build(&f, &exec, text, &[]).0.unwrap();
    let g = graph(text, &[]);
    let progress = Progress::new(Mode::Quiet);
    let opts = Options { jobs: 2, no_cache_stages: vec!["a".into()], ..Options::default() };
    Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, opts).run(&g).unwrap();
    let rec = progress.records();
    // a is rebuilt, and so is b (built on the new a) and the final stage;
    // c does not read a: it stays cached.
    assert_eq!(by_text(&rec, "touch /a").outcome, Outcome::Done);
    assert_eq!(by_text(&rec, "touch /b").outcome, Outcome::Done, "{rec:#?}");
    assert_eq!(by_text(&rec, "touch /c").outcome, Outcome::Cached, "{rec:#?}");
    // The next plain build reuses all of it.
    let progress = Progress::new(Mode::Quiet);
    Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, Options::default()).run(&g).unwrap();
    assert!(progress.records().iter().all(|r| r.outcome == Outcome::Cached), "{:#?}", progress.records());
}

#[test]
fn a_failure_stops_the_build_and_leaves_no_work_snapshots() {
    let f = fixture();
    let exec = fake();
    let text = "FROM scratch AS a\nRUN sleep 5 && touch /a\nFROM scratch AS b\nRUN false\nFROM scratch\nCOPY --from=a /a /a\nCOPY --from=b / /\n";
    let (res, rec) = build(&f, &exec, text, &[]);
    let err = format!("{:#}", res.unwrap_err());
    assert!(err.contains("Dockerfile:4") && err.contains("exit code: 1"), "{err}");
    assert!(exec.kill_count() >= 1, "running steps were not killed");
    assert!(rec.iter().all(|r| !r.name.contains("COPY")), "steps after the failure ran: {rec:#?}");
    assert!(f.store.list_active().unwrap().is_empty(), "work snapshots left: {:?}", f.store.list_active());
}

#[test]
fn cancel_flag_interrupts() {
    let f = fixture();
    let exec = fake();
    let g = graph("FROM scratch\nRUN sleep 2\nRUN touch /x\n", &[]);
    let progress = Progress::new(Mode::Quiet);
    let sched = Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, Options::default());
    sched.cancel_flag().store(true, Ordering::SeqCst);
    let err = sched.run(&g).unwrap_err();
    assert!(err.to_string().contains("interrupted"), "{err}");
    assert!(exec.requests().is_empty());
}

#[test]
fn recovery_removes_work_snapshots_of_dead_processes_only() {
    let f = fixture();
    let exec = fake();
    f.store.prepare("w-999999999-dead", None).unwrap();
    let mine = format!("w-{}-live", std::process::id());
    f.store.prepare(&mine, None).unwrap();
    let progress = Progress::new(Mode::Quiet);
    Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, Options::default()).recover().unwrap();
    assert_eq!(f.store.list_active().unwrap(), vec![mine]);
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn a_context_tree_is_walked_once_per_build() {
    let f = fixture();
    let exec = fake();
    let progress = Progress::new(Mode::Quiet);
    let dir = f.context.dir.join("t");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("f"), "one").unwrap();
    let sched = Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, opts());
    let first = sched.context_tree_digest(sched.context, &dir, "t").unwrap();
    // The pre-hash thread and the COPY share the first walk's result.
    fs::write(dir.join("f"), "two").unwrap();
    assert_eq!(sched.context_tree_digest(sched.context, &dir, "t").unwrap(), first);
    // The next build walks again and sees the change.
    let next = Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, opts());
    assert_ne!(next.context_tree_digest(next.context, &dir, "t").unwrap(), first);
    // A COPY of the tree reuses the digest: its key is the one of a fresh
    // build of the same content.
    let g = graph("FROM scratch\nCOPY t /t\n", &[]);
    let states = next.run(&g).unwrap();
    let again = Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, opts()).run(&g).unwrap();
    let top = |s: &BTreeMap<NodeId, State>| s[&g.exports[0].node].top.clone();
    assert_eq!(top(&states), top(&again));
}

/// Task specs: tasks that need nothing of each other run at once, and the
/// changesets a task applies are the very layers other tasks made,
/// restacked in the order it names them (`Append`).
#[test]
fn spec_tasks_overlap_and_changesets_restack() {
    let f = fixture();
    let spans = Spans::default();
    let exec = fake_recording(spans.clone());
    let run = |cmd: &str| format!(r#"{{"stepType": "run", "spec": {{"version": "1.0.0", "process": {{"args": ["sh", "-c", "{cmd}"]}}}}}}"#);
    let snap = |var: &str| format!(r#"{{"stepType": "snapshot-changeset", "var": "{var}"}}"#);
    let text = format!(
        r#"{{"tasks": [
          {{"resultVar": "a", "steps": [{}, {}, {}, {}]}},
          {{"resultVar": "b", "steps": [{}, {}]}},
          {{"resultVar": "c", "steps": [{}, {{"stepType": "apply-changesets", "layers": ["y", "bs", "x"]}}, {}]}}]}}"#,
        run("sleep 3 && touch /a1"),
        snap("x"),
        run("touch /a2"),
        snap("y"),
        run("sleep 3 && touch /b"),
        snap("bs"),
        run("touch /c1"),
        run("touch /c2"),
    );
    let g = frontend::spec::build_graph("spec.json", &text, None).map_err(|e| e.render()).unwrap().graph;
    let progress = Progress::new(Mode::Quiet);
    let sched = Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, opts());
    let st = sched.run(&g).map(|states| states[&g.exports[0].node].clone()).unwrap();
    let spans = spans.lock().unwrap().clone();
    let span = |needle: &str| spans.iter().find(|s| s.0.contains(needle)).map(|s| (s.1, s.2)).unwrap();
    let (a1, b, a2, c2) = (span("touch /a1"), span("touch /b"), span("touch /a2"), span("touch /c2"));
    assert!(a1.0 < b.1 && b.0 < a1.1, "tasks a and b did not run at once");
    assert!(a1.1 <= a2.0, "a task's steps run in order");
    assert!(a2.1 <= c2.0 && b.1 <= c2.0, "c ran before the changesets it applies");
    // c's layers: y (a2), bs (b), x (a1), then its own c1 and c2.
    let files: Vec<Vec<String>> = st
        .layers
        .iter()
        .map(|l| f.store.diff(l.parent.as_deref(), &l.name).unwrap().into_iter().map(|c| c.path.display().to_string()).collect())
        .collect();
    assert_eq!(files, vec![vec!["a2"], vec!["b"], vec!["a1"], vec!["c1"], vec!["c2"]]);
    let top = f.store.get(st.top.as_deref().unwrap()).unwrap();
    for p in ["a1", "a2", "b", "c1", "c2"] {
        assert!(top.join(p).is_file(), "{p} missing from c's tree");
    }
    assert_eq!(st.config.history.len(), 5, "one history entry per layer");
}

#[test]
fn work_keys_are_unique_per_call_and_owned_by_this_process() {
    let f = fixture();
    let exec = fake();
    let progress = Progress::new(Mode::Quiet);
    let sched = Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, opts());
    // Two imports of one layer at once (two stages on images sharing it)
    // must not prepare the same key.
    let (a, b) = (sched.work_key("img-0123456789abcdef"), sched.work_key("img-0123456789abcdef"));
    assert_ne!(a, b);
    for k in [&a, &b] {
        assert_eq!(crate::store::temps::active_owner(k), Some(std::process::id() as i32), "{k}");
        f.store.prepare(k, None).unwrap();
    }
}

#[test]
fn scopes_give_each_build_of_a_shared_graph_its_own_context() {
    let f = fixture();
    let other_dir = f._tmp.path().join("other");
    fs::create_dir_all(&other_dir).unwrap();
    fs::write(other_dir.join("a.txt"), "other").unwrap();
    let other = Context::open(&other_dir).unwrap();
    // Two builds of `COPY a.txt /a.txt`, one graph: the second build's nodes follow the first's.
    let one = graph("FROM scratch\nCOPY a.txt /a.txt\n", &[]);
    let mut nodes = one.nodes.clone();
    let n = nodes.len();
    for node in &one.nodes {
        let mut op = node.op.clone();
        platforms::remap_inputs(&mut op, &|id: NodeId| NodeId(id.0 + n));
        nodes.push(Node { id: NodeId(node.id.0 + n), op, origin: node.origin.clone(), created_by: node.created_by.clone() });
    }
    let export = one.exports[0].node;
    let g = Graph { version: one.version, nodes, exports: vec![one.exports[0].clone(), frontend::ir::Export { node: NodeId(export.0 + n), platform: None }] };
    let scope = |context| Scope { context, remote_context: false, named_contexts: BTreeMap::new(), secrets: BTreeMap::new(), ssh: BTreeMap::new(), platform: "linux/amd64".into() };
    let scopes = Scopes { list: vec![scope(&f.context), scope(&other)], of_node: (0..2 * n).map(|i| i / n).collect(), uncached: Default::default() };
    let exec = fake();
    let progress = Progress::new(Mode::Quiet);
    let sched = Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, opts()).with_scopes(scopes);
    let states = sched.run(&g).unwrap();
    let read = |id: NodeId| fs::read_to_string(f.store.get(states[&id].top.as_ref().unwrap()).unwrap().join("a.txt")).unwrap();
    assert_eq!(read(export), "a");
    assert_eq!(read(NodeId(export.0 + n)), "other", "the second build copies from its own context");
}
