//! The exception lists of `compat-tests/`: `expected-fail.txt` (bugs of
//! ours, still to fix), `legacy-differences.txt` (where the legacy builder
//! legitimately differs from BuildKit) and `KNOWN-DIFFERENCES.md`
//! (differences from today's BuildKit kept on purpose).
//!
//! Every entry names the exact difference lines it accepts: patterns where
//! `*` matches any text, one per line. A case's differences are accepted
//! only when every line matches a pattern of its entry; any other line
//! fails the case. A build failure is accepted only by an entry whose
//! reason starts `build-fails:`, and its patterns must match a line of the
//! error.
//!
//! `expected-fail.txt` and `legacy-differences.txt`:
//!
//! ```text
//! <case>: <reason>
//!     <pattern>
//!     <pattern>
//! <case>: build-fails: <reason>
//!     <pattern of an error line>
//! ```
//!
//! `KNOWN-DIFFERENCES.md`: a `## title` section per difference, its
//! `Cases: a, b` line, and an `Accepts:` line followed by indented
//! `<case>: <pattern>` lines.

use crate::common;
use std::collections::BTreeMap;
use std::fs;

/// One case's entry in a list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub reason: String,
    /// `build-fails:`: the build is expected to fail (with an error line
    /// matching a pattern) instead of differing.
    pub build_fails: bool,
    /// `sometimes:`: the difference shows in some runs only (the legacy
    /// builder's own variance); a run without it is no news.
    pub sometimes: bool,
    pub patterns: Vec<String>,
}

/// `*` matches any text (also none); everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl Entry {
    /// The lines no pattern accepts.
    pub fn unaccepted<'a>(&self, lines: &'a [String]) -> Vec<&'a String> {
        lines.iter().filter(|l| !self.patterns.iter().any(|p| glob(p, l))).collect()
    }

    /// The patterns no line matches (stale: the entry should shrink).
    pub fn unused(&self, lines: &[String]) -> Vec<&String> {
        self.patterns.iter().filter(|p| !lines.iter().any(|l| glob(p, l))).collect()
    }

    /// Whether a build failure with this error is the one the entry expects.
    pub fn accepts_failure(&self, error: &str) -> bool {
        self.build_fails && !self.patterns.is_empty() && self.patterns.iter().all(|p| error.lines().any(|l| glob(p, l.trim())))
    }

    /// Whether these differences are exactly what the entry accepts.
    pub fn accepts_differences(&self, lines: &[String]) -> bool {
        !self.build_fails && !lines.is_empty() && self.unaccepted(lines).is_empty()
    }
}

/// Parses `expected-fail.txt` / `legacy-differences.txt` text.
pub fn parse_list(text: &str, file: &str) -> Result<BTreeMap<String, Entry>, String> {
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("compat-tests/{file}:{}: {why}: {line:?}", n + 1);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let Some(case) = &current else { return Err(bad("a pattern line before any `case: reason` line")) };
            if let Some(e) = out.get_mut(case) {
                e.patterns.push(line.trim().to_string());
            }
            continue;
        }
        let Some((case, reason)) = line.split_once(':') else { return Err(bad("expected `case: reason`")) };
        let (case, reason) = (case.trim().to_string(), reason.trim().to_string());
        let entry = Entry { build_fails: reason.starts_with("build-fails:"), sometimes: reason.starts_with("sometimes:"), reason, patterns: Vec::new() };
        if out.insert(case.clone(), entry).is_some() {
            return Err(bad("a second entry for the case"));
        }
        current = Some(case);
    }
    if let Some((case, _)) = out.iter().find(|(_, e)| e.patterns.is_empty()) {
        return Err(format!("compat-tests/{file}: the entry of {case} names no difference line it accepts (indented patterns below it)"));
    }
    Ok(out)
}

pub fn read_list(file: &str) -> BTreeMap<String, Entry> {
    let text = fs::read_to_string(common::repo_root().join("compat-tests").join(file)).unwrap_or_default();
    parse_list(&text, file).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses `KNOWN-DIFFERENCES.md`: case -> the entry (reason = the section's
/// title). At most 3 sections.
pub fn parse_known(text: &str) -> Result<BTreeMap<String, Entry>, String> {
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let (mut title, mut sections, mut accepting) = (String::new(), 0, false);
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("## ") {
            title = t.trim().to_string();
            sections += 1;
            accepting = false;
        } else if let Some(cases) = line.strip_prefix("Cases:") {
            for c in cases.split(',').map(|c| c.trim().trim_matches('`')).filter(|c| !c.is_empty()) {
                out.insert(c.to_string(), Entry { reason: title.clone(), ..Entry::default() });
            }
        } else if line.trim() == "Accepts:" {
            accepting = true;
        } else if accepting && line.starts_with("    ") && !line.trim().is_empty() {
            let (case, pattern) = line.trim().split_once(": ").ok_or_else(|| format!("KNOWN-DIFFERENCES.md: `case: pattern` expected under Accepts: {line:?}"))?;
            let e = out.get_mut(case).ok_or_else(|| format!("KNOWN-DIFFERENCES.md: {case} is not on the Cases: line of \"{title}\""))?;
            e.patterns.push(pattern.to_string());
        } else if !line.trim().is_empty() {
            accepting = false;
        }
    }
    if sections > 3 {
        return Err(format!("KNOWN-DIFFERENCES.md: at most 3 differences kept on purpose, found {sections}"));
    }
    if let Some((case, _)) = out.iter().find(|(_, e)| e.patterns.is_empty()) {
        return Err(format!("KNOWN-DIFFERENCES.md: {case} is on a Cases: line but no Accepts: line names a difference of it"));
    }
    Ok(out)
}

pub fn read_known() -> BTreeMap<String, Entry> {
    let text = fs::read_to_string(common::repo_root().join("compat-tests/KNOWN-DIFFERENCES.md")).unwrap_or_default();
    parse_known(&text).unwrap_or_else(|e| panic!("{e}"))
}
