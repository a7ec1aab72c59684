//! Fuzz target: the `.dockerignore` matcher. The input's first part (up to
//! a NUL byte) is the ignore file, the rest are paths, one per line, each
//! asked as a file and as a directory. Errors are impossible by design (bad
//! patterns are dropped as BuildKit drops them); panics and hangs (a pattern
//! whose matching is exponential) are bugs. (Normalising is not idempotent,
//! as in BuildKit: `*\v/\v` is cleaned to `*\v`, which trims to `*`.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (patterns, paths) = text.split_once('\0').unwrap_or((&text, "a/b/c"));
    let m = frontend::dockerignore::Matcher::parse(patterns);
    let _ = m.has_exceptions();
    // Matching is a pure function of the patterns: a matcher made from
    // the same text answers the same.
    let again = frontend::dockerignore::Matcher::parse(patterns);
    for p in paths.lines().take(64) {
        assert_eq!(m.excluded(p, false), again.excluded(p, false));
        assert_eq!(m.excluded(p, true), again.excluded(p, true));
    }
});
