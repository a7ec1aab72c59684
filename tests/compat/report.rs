//! The verdict of each case (its builds compared, its exception entries
//! applied) and the run's report: a line per case (PASS, KNOWN, XFAIL,
//! XPASS, FAIL, with the legacy builder's verdict after `;`), the
//! differences below it, and the counts.

use crate::cases::Case;
use crate::compare::{compare, relabel, Reference};
use crate::exceptions::{read_known, read_list, Entry};
use crate::expected::read_expected;
use crate::image::Image;
use crate::tree::drop_mount_stubs;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The exception lists, checked against the cases.
pub struct Lists {
    xfail: BTreeMap<String, Entry>,
    legacy: BTreeMap<String, Entry>,
    known: BTreeMap<String, Entry>,
}

impl Lists {
    pub fn read(names: &[String], cases_dir: &Path) -> Lists {
        let lists = Lists { xfail: read_list("expected-fail.txt"), legacy: read_list("legacy-differences.txt"), known: read_known() };
        for x in lists.xfail.keys().chain(lists.known.keys()).chain(lists.legacy.keys()) {
            assert!(names.contains(x), "an exception list names {x}, which is not a case in {}", cases_dir.display());
        }
        lists
    }
}

/// Our build against the reference (today's BuildKit, or `expected/`).
enum Outcome {
    Same,
    Differs(Vec<String>),
    /// Ours failed.
    BuildFailed(String),
    /// The reference builder failed on a case it should build.
    ReferenceFailed(String),
    /// A reference builder built a case checked against `expected/`: the
    /// case must be compared with it instead.
    ReferenceBuilds(String),
}

/// Our build against the legacy builder.
enum LegacyOutcome {
    /// `STROMATEKT_COMPAT_LEGACY=0` (never under CI).
    NotRun,
    /// Ours failed: nothing to compare.
    NotCompared,
    Same,
    Differs(Vec<String>),
    BuildFailed(String),
    /// An `expected/` case, which it must refuse: it did.
    Refused,
}

#[derive(Default)]
pub struct Tally {
    report: String,
    pass: usize,
    known: usize,
    fail: usize,
    xfail: usize,
    xpass: usize,
    l_same: usize,
    l_listed: usize,
    l_fail: usize,
    l_xf: usize,
    l_xpass: usize,
    l_nc: usize,
    failed: Vec<String>,
    legacy_failed: Vec<String>,
}

/// What changes from run to run in history: `expected/` has
/// `http://127.0.0.1:PORT` for the loopback server and `$BASE` for the base
/// image's reference (`ARG BASE=$BASE`).
fn placeholders(image: &mut Image, http: &str, base: &str) {
    if let Some(h) = image.config["history"].as_array_mut() {
        for e in h {
            if let Some(c) = e["created_by"].as_str().map(|c| c.replace(http, "http://127.0.0.1:PORT").replace(base, "$BASE")) {
                e["created_by"] = Value::String(c);
            }
        }
    }
}

/// An entry's patterns no difference matched this run: it can shrink.
fn stale(r: &mut String, unused: Vec<&String>) {
    for p in unused {
        let _ = writeln!(r, "       note: this run shows no line matching {p:?}: delete that pattern");
    }
}

fn indent(e: &str) -> Vec<String> {
    e.lines().enumerate().map(|(i, l)| if i == 0 { l.to_string() } else { format!("  {l}") }).collect()
}

impl Tally {
    /// Compares one case's builds and records its verdicts.
    #[allow(clippy::too_many_arguments)]
    pub fn case(&mut self, case: &Case, base: &Image, base_oci: &Path, ours: Result<Image, String>, modern: Result<Image, String>, legacy: Option<Result<Image, String>>, lists: &Lists, http: &str) {
        let name = case.name.as_str();
        let mut note = String::new();
        let mut ours_ref = None;
        let outcome = if case.expected {
            note.push_str(" [vs expected/]");
            match (&modern, &legacy, ours) {
                (Ok(_), _, _) => Outcome::ReferenceBuilds(format!("modern BuildKit builds {name} now: compare it with BuildKit (delete its reason and expected/)")),
                (_, Some(Ok(_)), _) => Outcome::ReferenceBuilds(format!("the legacy builder builds {name} now: compare it with the legacy builder")),
                (_, _, Err(e)) => Outcome::BuildFailed(e),
                (_, _, Ok(mut ours)) => match read_expected(&case.src, base) {
                    Err(e) => Outcome::ReferenceFailed(e),
                    Ok(reference) => {
                        placeholders(&mut ours, http, &format!("oci-layout://{}:latest", base_oci.display()));
                        let diffs = relabel(compare(&Reference::of(&ours), &reference, true), "expected");
                        if diffs.is_empty() {
                            Outcome::Same
                        } else {
                            Outcome::Differs(diffs)
                        }
                    }
                },
            }
        } else {
            match (modern, ours) {
                (Err(e), _) => Outcome::ReferenceFailed(e),
                (_, Err(e)) => Outcome::BuildFailed(e),
                (Ok(mut modern), Ok(mut ours)) => {
                    let stubs = drop_mount_stubs(&mut modern.layers, base.layers.len());
                    let our_stubs = drop_mount_stubs(&mut ours.layers, base.layers.len());
                    if stubs + our_stubs > 0 {
                        let _ = write!(note, " (runc stub entries ignored: {stubs} modern, {our_stubs} ours)");
                    }
                    let o = Reference::of(&ours);
                    let diffs = relabel(compare(&o, &Reference::of(&modern), true), "modern");
                    ours_ref = Some(o);
                    if diffs.is_empty() {
                        Outcome::Same
                    } else {
                        Outcome::Differs(diffs)
                    }
                }
            }
        };
        let legacy = match legacy {
            None => LegacyOutcome::NotRun,
            Some(Err(_)) if case.expected => LegacyOutcome::Refused,
            Some(Err(e)) => LegacyOutcome::BuildFailed(e),
            Some(Ok(mut image)) => match &ours_ref {
                None => LegacyOutcome::NotCompared,
                Some(ours) => {
                    let stubs = drop_mount_stubs(&mut image.layers, base.layers.len());
                    if stubs > 0 {
                        let _ = write!(note, " ({stubs} legacy mount-stub entries ignored)");
                    }
                    let diffs = relabel(compare(ours, &Reference::of(&image), false), "legacy");
                    if diffs.is_empty() {
                        LegacyOutcome::Same
                    } else {
                        LegacyOutcome::Differs(diffs)
                    }
                }
            },
        };
        self.record(name, outcome, legacy, note, lists);
    }

    fn record(&mut self, name: &str, outcome: Outcome, legacy: LegacyOutcome, mut note: String, lists: &Lists) {
        let (xfail, known, listed) = (lists.xfail.get(name), lists.known.get(name), lists.legacy.get(name));
        // Lines of a differing result that its entry does not accept.
        let mut rejected: Vec<String> = Vec::new();
        let mut legacy_lines: Vec<String> = match &legacy {
            LegacyOutcome::Differs(d) => std::iter::once(format!("{} legacy differences:", d.len())).chain(d.iter().map(|l| format!("  {l}"))).collect(),
            LegacyOutcome::BuildFailed(e) => indent(e),
            _ => Vec::new(),
        };
        let verdict = match (&legacy, listed) {
            (LegacyOutcome::NotRun, _) => "legacy: NOT RUN (STROMATEKT_COMPAT_LEGACY=0)".to_string(),
            (LegacyOutcome::Refused, _) => "legacy: refuses it too".to_string(),
            (LegacyOutcome::NotCompared, _) => {
                self.l_nc += 1;
                "legacy: not compared (no image of ours)".to_string()
            }
            (LegacyOutcome::Same, None) => {
                self.l_same += 1;
                "legacy: same".to_string()
            }
            (LegacyOutcome::Same, Some(e)) if e.sometimes => {
                self.l_same += 1;
                "legacy: same (this run; listed as sometimes different)".to_string()
            }
            (LegacyOutcome::Same, Some(e)) => {
                self.l_xpass += 1;
                format!("LEGACY-XPASS {name}: matches the legacy builder now, delete its entry in compat-tests/legacy-differences.txt (was: {})", e.reason)
            }
            (LegacyOutcome::BuildFailed(err), Some(e)) if e.accepts_failure(err) => {
                self.l_listed += 1;
                "legacy: listed build failure (compat-tests/legacy-differences.txt)".to_string()
            }
            (LegacyOutcome::Differs(d), _) => {
                // Accepted by the case's legacy entry, or, for a bug of
                // ours, by its expected-fail.txt entry.
                let patterns: Vec<String> = listed.iter().chain(xfail.iter()).filter(|e| !e.build_fails).flat_map(|e| e.patterns.clone()).collect();
                let all = crate::exceptions::Entry { patterns, ..Default::default() };
                let bad = all.unaccepted(d);
                if bad.is_empty() {
                    self.l_listed += 1;
                    if listed.is_some() { "legacy: listed differences (compat-tests/legacy-differences.txt)" } else { "legacy: differs too (expected-fail.txt)" }.to_string()
                } else {
                    self.l_fail += 1;
                    self.legacy_failed.push(name.to_string());
                    legacy_lines.push("legacy differences no entry accepts:".into());
                    legacy_lines.extend(bad.iter().map(|l| format!("  {l}")));
                    "LEGACY-FAIL: differs from the legacy builder (DOCKER_BUILDKIT=0)".to_string()
                }
            }
            (LegacyOutcome::BuildFailed(_), _) => {
                self.l_fail += 1;
                self.legacy_failed.push(name.to_string());
                "LEGACY-FAIL: the legacy builder failed, and no `build-fails:` entry of compat-tests/legacy-differences.txt matches its error".to_string()
            }
        };
        let _ = write!(note, "; {verdict}");
        let mut out = String::new();
        let r = &mut out;
        let mut failed = false;
        let mut fail = |r: &mut String, why: &str| {
            failed = true;
            let _ = writeln!(r, "FAIL   {name}{why}{note}");
        };
        match (&outcome, known, xfail) {
            (Outcome::ReferenceFailed(_) | Outcome::ReferenceBuilds(_), _, _) => fail(r, ": the reference"),
            (Outcome::Same, Some(k), _) => {
                self.pass += 1;
                let _ = writeln!(r, "PASS   {name}: matches now; remove it from \"{}\" in compat-tests/KNOWN-DIFFERENCES.md{note}", k.reason);
            }
            (Outcome::Same, None, Some(x)) => {
                self.xpass += 1;
                let _ = writeln!(r, "XPASS  {name}: now passing, delete its entry in compat-tests/expected-fail.txt (was: {}){note}", x.reason);
            }
            (Outcome::Same, None, None) => {
                self.pass += 1;
                let _ = writeln!(r, "PASS   {name}{note}");
            }
            (Outcome::Differs(d), Some(k), _) => {
                if k.accepts_differences(d) {
                    self.known += 1;
                    let _ = writeln!(r, "KNOWN  {name}: known difference \"{}\" (compat-tests/KNOWN-DIFFERENCES.md){note}", k.reason);
                    stale(r, k.unused(d));
                } else {
                    rejected = k.unaccepted(d).into_iter().cloned().collect();
                    fail(r, ": differences beyond its KNOWN-DIFFERENCES.md entry");
                }
            }
            (Outcome::Differs(d), None, Some(x)) => {
                if x.accepts_differences(d) {
                    self.xfail += 1;
                    let _ = writeln!(r, "XFAIL  {name}: {}{note}", x.reason);
                    stale(r, x.unused(d));
                } else {
                    rejected = x.unaccepted(d).into_iter().cloned().collect();
                    fail(r, ": differences beyond its expected-fail.txt entry");
                }
            }
            (Outcome::BuildFailed(e), _, Some(x)) if x.accepts_failure(e) => {
                self.xfail += 1;
                let _ = writeln!(r, "XFAIL  {name}: {}{note}", x.reason);
            }
            (Outcome::BuildFailed(_), _, _) | (Outcome::Differs(_), None, None) => fail(r, ""),
        }
        match outcome {
            Outcome::Same => {}
            Outcome::Differs(d) => {
                let _ = writeln!(r, "       {} differences:", d.len());
                for line in d {
                    let _ = writeln!(r, "         {line}");
                }
                if !rejected.is_empty() {
                    let _ = writeln!(r, "       not accepted by its entry:");
                    for line in rejected {
                        let _ = writeln!(r, "         {line}");
                    }
                }
            }
            Outcome::BuildFailed(why) | Outcome::ReferenceFailed(why) | Outcome::ReferenceBuilds(why) => {
                for line in why.lines() {
                    let _ = writeln!(r, "         {line}");
                }
            }
        }
        for line in legacy_lines {
            let _ = writeln!(r, "       {line}");
        }
        if failed {
            self.fail += 1;
            self.failed.push(name.to_string());
        }
        self.report.push_str(&out);
    }

    /// The report, with the counts.
    pub fn finish(&mut self, legacy_run: bool) -> String {
        let _ = writeln!(
            self.report,
            "\ncompat: {} cases: {} passed, {} known differences, {} failed, {} expected failures, {} now passing (move them); \
             legacy: {}",
            self.pass + self.known + self.fail + self.xfail + self.xpass,
            self.pass,
            self.known,
            self.fail,
            self.xfail,
            self.xpass,
            if legacy_run {
                format!(
                    "{} same, {} listed differences, {} failed, {} differing expected failures, {} now same (unlist them), {} not compared",
                    self.l_same, self.l_listed, self.l_fail, self.l_xf, self.l_xpass, self.l_nc
                )
            } else {
                "NOT RUN (STROMATEKT_COMPAT_LEGACY=0): the second reference was left out".to_string()
            }
        );
        self.report.clone()
    }

    pub fn assert_green(&self) {
        assert!(self.failed.is_empty(), "cases differing from today's BuildKit (or their expected/): {}", self.failed.join(", "));
        assert!(self.legacy_failed.is_empty(), "cases differing from the legacy builder, not in compat-tests/legacy-differences.txt: {}", self.legacy_failed.join(", "));
    }
}
