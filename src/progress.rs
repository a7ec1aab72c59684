//! Build progress: BuildKit-style numbered step lines (`plain`), one JSON
//! event per line (`rawjson`), or nothing (`quiet`), plus the end-of-build
//! summary (total time, steps run and cached, critical path).
//!
//! Every event is also recorded with its timestamp, so tests can check which
//! steps overlapped without timing anything.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `#5 [stage 2/4] RUN ...` / `#5 DONE 1.2s` lines on stderr.
    Plain,
    /// One JSON object per event on stderr.
    RawJson,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// Parse `--progress` (`auto` and `tty` are shown as `plain` for now).
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "auto" | "tty" | "plain" => Some(Mode::Plain),
            "rawjson" => Some(Mode::RawJson),
            "quiet" => Some(Mode::Quiet),
            _ => None,
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ran.
    Done,
    /// Reused from the cache.
    Cached,
    /// Failed.
    Error,
}

/// One finished step, as recorded.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// Step number (`#N`).
    pub number: usize,
    /// IR node index.
    pub node: usize,
    /// Display name (`[stage 2/4] RUN ...`).
    pub name: String,
    /// Start, seconds since the build started.
    pub start: f64,
    /// End, seconds since the build started.
    pub end: f64,
    /// How it ended.
    pub outcome: Outcome,
}

/// A step in progress.
#[derive(Debug)]
pub struct Step {
    number: usize,
    node: usize,
    name: String,
    start: Instant,
}

impl Step {
    /// Its `#N`.
    pub fn number(&self) -> usize {
        self.number
    }
}

/// The progress printer (shared by all workers).
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    began: Instant,
    next: AtomicUsize,
    records: Mutex<Vec<StepRecord>>,
    out: Mutex<()>,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Progress {
    /// A printer in `mode`, its clock starting now.
    pub fn new(mode: Mode) -> Progress {
        Progress { mode, began: Instant::now(), next: AtomicUsize::new(1), records: Mutex::new(Vec::new()), out: Mutex::new(()) }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn emit(&self, plain: impl FnOnce() -> String, json: impl FnOnce() -> serde_json::Value) {
        let _guard = self.out.lock();
        let mut err = std::io::stderr().lock();
        match self.mode {
            Mode::Plain => {
                let _ = writeln!(err, "{}", plain());
            }
            Mode::RawJson => {
                let _ = writeln!(err, "{}", json());
            }
            Mode::Quiet => {}
        }
    }

    /// A step of node `node` starts.
    pub fn start(&self, node: usize, name: &str) -> Step {
        let number = self.next.fetch_add(1, Ordering::SeqCst);
        let step = Step { number, node, name: name.to_string(), start: Instant::now() };
        self.emit(
            || format!("#{number} {name}"),
            || serde_json::json!({"event": "start", "step": number, "node": node, "name": name, "time": unix_now()}),
        );
        step
    }

    /// Output of a running step.
    pub fn log(&self, step: &Step, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let t = step.start.elapsed().as_secs_f64();
        self.emit(
            || {
                let mut s = String::new();
                for (i, line) in text.trim_end_matches('\n').split('\n').enumerate() {
                    if i > 0 {
                        s.push('\n');
                    }
                    s.push_str(&format!("#{} {t:.3} {line}", step.number));
                }
                s
            },
            || serde_json::json!({"event": "log", "step": step.number, "data": text}),
        );
    }

    /// The step ended.
    pub fn finish(&self, step: Step, outcome: Outcome) {
        let end = self.began.elapsed().as_secs_f64();
        let start = step.start.duration_since(self.began).as_secs_f64();
        let n = step.number;
        let dur = end - start;
        self.emit(
            || match outcome {
                Outcome::Done => format!("#{n} DONE {dur:.1}s"),
                Outcome::Cached => format!("#{n} CACHED"),
                Outcome::Error => format!("#{n} ERROR after {dur:.1}s"),
            },
            || {
                let ev = match outcome {
                    Outcome::Done => "done",
                    Outcome::Cached => "cached",
                    Outcome::Error => "error",
                };
                serde_json::json!({"event": ev, "step": n, "node": step.node, "name": step.name, "time": unix_now(), "duration": dur})
            },
        );
        if let Ok(mut r) = self.records.lock() {
            r.push(StepRecord { number: n, node: step.node, name: step.name, start, end, outcome });
        }
    }

    /// A free-form message (`plain`: as is; `rawjson`: a `message` event).
    pub fn message(&self, text: &str) {
        self.emit(|| text.to_string(), || serde_json::json!({"event": "message", "text": text}));
    }

    /// Steps finished so far.
    pub fn records(&self) -> Vec<StepRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Seconds since the build started.
    pub fn elapsed(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }

    /// Print the summary: total time, steps run and cached, and the critical
    /// path through `inputs` (node -> the nodes it depends on).
    pub fn summary(&self, inputs: &dyn Fn(usize) -> Vec<usize>) {
        let records = self.records();
        let total = self.elapsed();
        let run = records.iter().filter(|r| r.outcome == Outcome::Done).count();
        let cached = records.iter().filter(|r| r.outcome == Outcome::Cached).count();
        let path = critical_path(&records, inputs);
        let path_time: f64 = path.iter().map(|r| r.end - r.start).sum();
        let shown: Vec<String> = path.iter().filter(|r| r.end - r.start >= 0.05).map(|r| format!("#{}", r.number)).collect();
        self.emit(
            || {
                let mut s = format!("built in {total:.2}s: {run} steps run, {cached} cached");
                if !shown.is_empty() {
                    s.push_str(&format!("; critical path {path_time:.1}s: {}", shown.join(" -> ")));
                }
                s
            },
            || {
                serde_json::json!({"event": "summary", "total": total, "run": run, "cached": cached,
                    "critical_path": path.iter().map(|r| r.number).collect::<Vec<_>>(), "critical_path_time": path_time})
            },
        );
    }
}

/// The chain of recorded steps with the largest summed duration, following
/// dependencies (`inputs` walks the graph through nodes without a record).
pub fn critical_path(records: &[StepRecord], inputs: &dyn Fn(usize) -> Vec<usize>) -> Vec<StepRecord> {
    use std::collections::BTreeMap;
    let by_node: BTreeMap<usize, &StepRecord> = records.iter().map(|r| (r.node, r)).collect();
    let mut memo: BTreeMap<usize, (f64, Option<usize>)> = BTreeMap::new();
    fn best(
        n: usize,
        by_node: &BTreeMap<usize, &StepRecord>,
        inputs: &dyn Fn(usize) -> Vec<usize>,
        memo: &mut BTreeMap<usize, (f64, Option<usize>)>,
        depth: usize,
    ) -> (f64, Option<usize>) {
        if let Some(v) = memo.get(&n) {
            return *v;
        }
        let own = by_node.get(&n).map(|r| r.end - r.start).unwrap_or(0.0);
        let mut top = (0.0, None);
        if depth < 10_000 {
            for i in inputs(n) {
                let (t, _) = best(i, by_node, inputs, memo, depth + 1);
                if top.1.is_none() || t > top.0 {
                    top = (t, Some(i));
                }
            }
        }
        let v = (own + top.0, top.1);
        memo.insert(n, v);
        v
    }
    let mut end = None;
    let mut end_t = -1.0;
    for r in records {
        let (t, _) = best(r.node, &by_node, inputs, &mut memo, 0);
        if t > end_t {
            end_t = t;
            end = Some(r.node);
        }
    }
    let mut path = Vec::new();
    let mut cur = end;
    while let Some(n) = cur {
        if let Some(r) = by_node.get(&n) {
            path.push((*r).clone());
        }
        cur = memo.get(&n).and_then(|v| v.1);
    }
    path.reverse();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(number: usize, node: usize, start: f64, end: f64) -> StepRecord {
        StepRecord { number, node, name: String::new(), start, end, outcome: Outcome::Done }
    }

    #[test]
    fn critical_path_follows_the_longest_chain() {
        // 0 -> 1 (2s) -> 3 (1s); 0 -> 2 (0.5s) -> 3
        let records = vec![rec(1, 1, 0.0, 2.0), rec(2, 2, 0.0, 0.5), rec(3, 3, 2.0, 3.0)];
        let inputs = |n: usize| match n {
            3 => vec![1, 2],
            1 | 2 => vec![0],
            _ => vec![],
        };
        let p: Vec<usize> = critical_path(&records, &inputs).iter().map(|r| r.number).collect();
        assert_eq!(p, vec![1, 3]);
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse("plain"), Some(Mode::Plain));
        assert_eq!(Mode::parse("rawjson"), Some(Mode::RawJson));
        assert_eq!(Mode::parse("quiet"), Some(Mode::Quiet));
        assert_eq!(Mode::parse("fancy"), None);
    }
}
