//! Build progress: BuildKit-style numbered step lines (`plain`), a live
//! view of the running steps on a terminal (`tty`: timers and last log
//! lines, finished steps collapsed to one line, as buildx), one JSON event
//! per line (`rawjson`), or nothing (`quiet`), plus the end-of-build summary
//! (total time, steps run and cached, critical path).
//!
//! A `rawjson` line is our event (`event`, `step`, `name`, ...) and, for
//! steps and their logs, also BuildKit's `SolveStatus` (`vertexes`, `logs`),
//! which is what `docker buildx build --progress rawjson` writes: clients of
//! that stream (Docker Compose) show our steps.
//!
//! Every event is also recorded with its timestamp, so tests can check which
//! steps overlapped without timing anything.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `#5 [stage 2/4] RUN ...` / `#5 DONE 1.2s` lines on stderr.
    Plain,
    /// A live view on the terminal (stderr): running steps with timers and
    /// their last log lines; finished steps collapse to one line.
    Tty,
    /// One JSON object per event on stderr.
    RawJson,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// Parse `--progress`: `auto` is `tty` when stderr is a terminal, else
    /// `plain`; `tty` falls back to `plain` when stderr is not a terminal.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "auto" | "tty" => Some(if std::io::stderr().is_terminal() && std::env::var("TERM").as_deref() != Ok("dumb") {
                Mode::Tty
            } else {
                Mode::Plain
            }),
            "plain" => Some(Mode::Plain),
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
    /// The start as Unix time (the rawjson events' `time` and `started`).
    started_unix: f64,
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
    live: Option<Arc<Mutex<Live>>>,
    /// `tty` mode's redraw timer; dropping the sender stops it at once.
    ticker: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

/// Log lines kept per running step in `tty` mode.
const TAIL_LINES: usize = 6;

/// A running step, as `tty` mode shows it.
#[derive(Debug)]
struct LiveStep {
    name: String,
    start: Instant,
    tail: VecDeque<String>,
    partial: String,
}

/// What `tty` mode has on screen.
#[derive(Debug)]
struct Live {
    began: Instant,
    running: BTreeMap<usize, LiveStep>,
    /// Lines of the live area currently drawn (below the permanent lines).
    drawn: usize,
}

impl Live {
    /// The live area: a header, then each running step with its timer and
    /// its last log lines, each line cut to `width` characters.
    fn render(&self, now: Instant, width: usize) -> Vec<String> {
        let cut = |s: &str, w: usize| -> String { s.chars().filter(|c| !c.is_control()).take(w).collect() };
        let mut out = vec![format!("[+] Building {:.1}s ({} running)", now.duration_since(self.began).as_secs_f64(), self.running.len())];
        for (n, st) in &self.running {
            let timer = format!(" {:.1}s", now.duration_since(st.start).as_secs_f64());
            let head = cut(&format!("#{n} {}", st.name), width.saturating_sub(timer.len()).max(1));
            out.push(format!("\x1b[34m{head}\x1b[0m{timer}"));
            for l in &st.tail {
                out.push(format!("\x1b[2m{}\x1b[0m", cut(&format!("#{n} {l}"), width)));
            }
        }
        out
    }

    /// Redraw: erase the live area, print `permanent` lines above it, draw it again.
    fn redraw(&mut self, permanent: &[String]) {
        let mut s = String::new();
        if self.drawn > 0 {
            s.push_str(&format!("\x1b[{}A", self.drawn));
        }
        s.push_str("\r\x1b[J");
        for p in permanent {
            s.push_str(p);
            s.push('\n');
        }
        let lines = if self.running.is_empty() { vec![] } else { self.render(Instant::now(), term_width().saturating_sub(1).max(20)) };
        for l in &lines {
            s.push_str(l);
            s.push('\n');
        }
        self.drawn = lines.len();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(s.as_bytes());
        let _ = err.flush();
    }
}

/// Columns of the terminal on stderr (80 when unknown).
fn term_width() -> usize {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer we pass, which
    // lives for the whole call; on failure it writes nothing.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(80)
    }
}

fn lock_live(l: &Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Progress {
    /// A printer in `mode`, its clock starting now.
    pub fn new(mode: Mode) -> Progress {
        let began = Instant::now();
        let mut live = None;
        let mut ticker = None;
        if mode == Mode::Tty {
            let l = Arc::new(Mutex::new(Live { began, running: BTreeMap::new(), drawn: 0 }));
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let l2 = l.clone();
            // Timers tick even while no step prints anything; the wait ends
            // early when the printer is dropped (the sender goes away).
            let handle = std::thread::Builder::new().name("progress-tty".into()).spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(std::time::Duration::from_millis(150)) {
                    let mut g = lock_live(&l2);
                    if !g.running.is_empty() {
                        g.redraw(&[]);
                    }
                }
            });
            if let Ok(h) = handle {
                ticker = Some((stop, h));
            }
            live = Some(l);
        }
        Progress {
            mode,
            began,
            next: AtomicUsize::new(1),
            records: Mutex::new(Vec::new()),
            out: Mutex::new(()),
            live,
            ticker: Mutex::new(ticker),
        }
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
            Mode::Tty => {
                drop(err);
                if let Some(live) = &self.live {
                    let text = plain();
                    let lines: Vec<String> = text.lines().map(String::from).collect();
                    lock_live(live).redraw(&lines);
                }
            }
            Mode::RawJson => {
                let mut ev = json();
                add_solve_status(&mut ev);
                let _ = writeln!(err, "{ev}");
            }
            Mode::Quiet => {}
        }
    }

    /// A step of node `node` starts.
    pub fn start(&self, node: usize, name: &str) -> Step {
        let number = self.next.fetch_add(1, Ordering::SeqCst);
        let step = Step { number, node, name: name.to_string(), start: Instant::now(), started_unix: unix_now() };
        if let Some(live) = &self.live {
            let mut g = lock_live(live);
            g.running.insert(number, LiveStep { name: name.to_string(), start: step.start, tail: VecDeque::new(), partial: String::new() });
            g.redraw(&[]);
            return step;
        }
        self.emit(
            || format!("#{number} {name}"),
            || serde_json::json!({"event": "start", "step": number, "node": node, "name": name, "time": step.started_unix}),
        );
        step
    }

    /// Output of a running step.
    pub fn log(&self, step: &Step, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let t = step.start.elapsed().as_secs_f64();
        if let Some(live) = &self.live {
            let mut g = lock_live(live);
            if let Some(st) = g.running.get_mut(&step.number) {
                st.partial.push_str(&text);
                while let Some(i) = st.partial.find(['\n', '\r']) {
                    let line: String = st.partial.drain(..=i).collect();
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if !line.is_empty() {
                        st.tail.push_back(line);
                        if st.tail.len() > TAIL_LINES {
                            st.tail.pop_front();
                        }
                    }
                }
            }
            g.redraw(&[]);
            return;
        }
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
        if let Some(live) = &self.live {
            let mut g = lock_live(live);
            let gone = g.running.remove(&n);
            let mut lines = vec![match outcome {
                Outcome::Done => format!("\x1b[32m#{n} {}\x1b[0m DONE {dur:.1}s", step.name),
                Outcome::Cached => format!("\x1b[36m#{n} {}\x1b[0m CACHED", step.name),
                Outcome::Error => format!("\x1b[31m#{n} {}\x1b[0m ERROR after {dur:.1}s", step.name),
            }];
            // A failed step keeps its last lines on screen.
            if outcome == Outcome::Error {
                if let Some(st) = gone {
                    lines.extend(st.tail.iter().chain(Some(&st.partial).filter(|p| !p.is_empty())).map(|l| format!("#{n} {l}")));
                }
            }
            g.redraw(&lines);
        } else {
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
                serde_json::json!({"event": ev, "step": n, "node": step.node, "name": step.name, "time": unix_now(), "duration": dur, "started": step.started_unix})
            },
        );
        }
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
                let steps = if run == 1 { "step" } else { "steps" };
                let mut s = format!("built in {total:.2}s: {run} {steps} run, {cached} cached");
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

/// The `SolveStatus` fields of a rawjson event: a step's vertex (its digest
/// unique to this process and step, name, start and end times, cached or
/// failed) or a log chunk of it (base64, as Go encodes bytes).
fn add_solve_status(ev: &mut serde_json::Value) {
    use sha2::Digest as _;
    let (Some(kind), Some(step)) = (ev["event"].as_str().map(str::to_string), ev["step"].as_u64()) else { return };
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(format!("stromatekt:{}:{step}", std::process::id()))));
    let time = ev["time"].as_f64().unwrap_or_else(unix_now);
    let name = ev["name"].as_str().unwrap_or_default().to_string();
    let status = match kind.as_str() {
        "start" => serde_json::json!({"vertexes": [{"digest": digest, "name": name, "started": rfc3339_nano(time)}]}),
        "done" | "cached" | "error" => {
            // The same start as the step's start event: BuildKit's display
            // treats two starts as two intervals, the first never ending.
            let started = ev["started"].as_f64().unwrap_or_else(|| time - ev["duration"].as_f64().unwrap_or(0.0));
            let mut v = serde_json::json!({"digest": digest, "name": name, "started": rfc3339_nano(started), "completed": rfc3339_nano(time)});
            if kind == "cached" {
                v["cached"] = true.into();
            }
            if kind == "error" {
                v["error"] = "failed".into();
            }
            serde_json::json!({"vertexes": [v]})
        }
        "log" => {
            let data = ev["data"].as_str().unwrap_or_default();
            serde_json::json!({"logs": [{"vertex": digest, "stream": 1, "data": frontend::lint::print::base64(data.as_bytes()), "timestamp": rfc3339_nano(unix_now())}]})
        }
        _ => return,
    };
    if let (Some(obj), serde_json::Value::Object(extra)) = (ev.as_object_mut(), status) {
        obj.extend(extra);
    }
}

/// RFC 3339 with nanoseconds, UTC, of a Unix time in seconds.
fn rfc3339_nano(t: f64) -> String {
    let secs = t.max(0.0).floor();
    let nanos = ((t.max(0.0) - secs) * 1e9) as u32;
    chrono::DateTime::from_timestamp(secs as i64, nanos.min(999_999_999))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Human size: `523.0 MB`.
pub fn human_bytes(bytes: u64) -> String {
    let mb = bytes as f64 / 1e6;
    if mb >= 1000.0 {
        format!("{:.2} GB", mb / 1000.0)
    } else if mb >= 1.0 {
        format!("{mb:.1} MB")
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

/// `BYTES in T s (RATE)` for a transfer of `bytes` taking `took`.
pub fn rate_text(bytes: u64, took: std::time::Duration) -> String {
    let secs = took.as_secs_f64().max(1e-3);
    format!("{} in {secs:.1}s ({}/s)", human_bytes(bytes), human_bytes((bytes as f64 / secs) as u64))
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

impl Drop for Progress {
    /// Stop `tty` mode's ticker and erase what is left of the live area.
    fn drop(&mut self) {
        let ticker = self.ticker.get_mut().map(|t| t.take()).unwrap_or_else(|e| e.into_inner().take());
        if let Some((stop, handle)) = ticker {
            drop(stop);
            let _ = handle.join();
        }
        if let Some(live) = &self.live {
            let mut g = lock_live(live);
            g.running.clear();
            g.redraw(&[]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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
        // Tests run with stderr captured or piped: never a terminal here.
        if !std::io::stderr().is_terminal() {
            assert_eq!(Mode::parse("tty"), Some(Mode::Plain));
            assert_eq!(Mode::parse("auto"), Some(Mode::Plain));
        }
    }

    #[test]
    fn rawjson_events_carry_buildkit_solve_status() {
        let mut ev = serde_json::json!({"event": "cached", "step": 3, "node": 1, "name": "[a 2/3] RUN x", "time": 86400.5, "duration": 0.25});
        add_solve_status(&mut ev);
        let v = &ev["vertexes"][0];
        assert_eq!(v["name"], "[a 2/3] RUN x");
        assert_eq!(v["cached"], true);
        assert_eq!(v["started"], "1970-01-02T00:00:00.250000000Z");
        assert_eq!(v["completed"], "1970-01-02T00:00:00.500000000Z");
        assert!(v["digest"].as_str().is_some_and(|d| d.starts_with("sha256:") && d.len() == 71));
        assert_eq!(ev["event"], "cached", "our fields stay");
        let mut log = serde_json::json!({"event": "log", "step": 3, "data": "hi\n"});
        add_solve_status(&mut log);
        assert_eq!(log["logs"][0]["data"], "aGkK");
        assert_eq!(log["logs"][0]["vertex"], v["digest"]);
        let mut msg = serde_json::json!({"event": "message", "text": "x"});
        add_solve_status(&mut msg);
        assert!(msg.get("vertexes").is_none());
    }

    #[test]
    fn tty_live_area_shows_running_steps_and_their_last_lines() {
        let began = Instant::now();
        let mut live = Live { began, running: BTreeMap::new(), drawn: 0 };
        let tail: VecDeque<String> = ["one", "two"].iter().map(|s| s.to_string()).collect();
        live.running.insert(3, LiveStep { name: "[stage 1/2] RUN make -j8 all".into(), start: began, tail, partial: String::new() });
        let lines = live.render(began + std::time::Duration::from_millis(1500), 20);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].starts_with("[+] Building 1.5s (1 running)"));
        assert!(lines[1].contains("#3 [stage 1/2") && lines[1].ends_with(" 1.5s"), "{:?}", lines[1]);
        assert!(lines[2].contains("#3 one") && lines[3].contains("#3 two"));
    }
}
