//! How buildx shows a check: the `--call=check` text (`Check complete, ...`,
//! each warning with the Dockerfile lines around it), the JSON BuildKit's
//! lint subrequest returns (`--call=check,format=json`), and the summary a
//! build prints after its steps (`N warnings found (use docker --debug to expand):`).

use super::gojson::J;
use super::{CheckError, Report, Warning};

/// A protobuf `Location` as Go's JSON writes it (zero fields left out).
pub fn location_json(ranges: &[(usize, usize)]) -> J {
    let pos = |line: usize| if line == 0 { J::Obj(vec![]) } else { J::Obj(vec![("line".into(), J::Num(line as i64))]) };
    J::Obj(vec![(
        "ranges".into(),
        J::Arr(ranges.iter().map(|(s, e)| J::Obj(vec![("start".into(), pos(*s)), ("end".into(), pos(*e))])).collect()),
    )])
}

/// Base64 (standard alphabet, padded), as Go encodes `[]byte` in JSON.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { A[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { A[n as usize & 63] as char } else { '=' });
    }
    out
}

fn warning_json(w: &Warning) -> J {
    let mut m = vec![("ruleName".to_string(), J::s(w.rule.name)), ("description".into(), J::s(w.rule.description))];
    if let Some(u) = w.rule.url {
        m.push(("url".into(), J::s(u)));
    }
    m.push(("detail".into(), J::s(&w.detail)));
    m.push(("location".into(), location_json(&w.ranges)));
    J::Obj(m)
}

/// The lint subrequest's `result.json`: warnings in the order found, the
/// Dockerfile as the one source (without BuildKit's LLB `definition` of it,
/// which we do not produce), and the error that stopped the check.
pub fn report_json(report: &Report, file: &str, text: &str) -> String {
    let warnings = if report.warnings.is_empty() { J::Null } else { J::Arr(report.warnings.iter().map(warning_json).collect()) };
    let source = J::Obj(vec![("filename".into(), J::s(file)), ("data".into(), J::s(base64(text.as_bytes()))), ("language".into(), J::s("Dockerfile"))]);
    let mut m = vec![("warnings".to_string(), warnings), ("sources".into(), J::Arr(vec![source]))];
    if let Some(e) = &report.error {
        m.push(("buildError".into(), J::Obj(vec![("message".into(), J::s(&e.message)), ("location".into(), location_json(&e.ranges))])));
    }
    J::Obj(m).render()
}

/// BuildKit's `errdefs.Source.Print`: `FILE:LINE`, then the lines around the
/// range between dashes, the range's lines marked `>>>`.
pub fn source_lines(file: &str, text: &str, ranges: &[(usize, usize)]) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(mut start) = ranges.iter().map(|r| r.0).min() else { return String::new() };
    let mut end = ranges.iter().map(|r| r.1.max(r.0)).max().unwrap_or(start);
    if start > lines.len() || start < 1 {
        return String::new();
    }
    end = end.min(lines.len());
    let pad = if end == start { 4 } else { 2 };
    let first = start;
    let mut p = 0;
    while p < pad {
        if start > 1 {
            start -= 1;
            p += 1;
        }
        if end != lines.len() {
            end += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{file}:{first}\n--------------------\n");
    for i in start..=end {
        let mark = if ranges.iter().any(|r| r.0 <= i && r.1.max(r.0) >= i) { ">>>" } else { "   " };
        out.push_str(&format!(" {i:>3} | {mark} {}\n", lines[i - 1]));
    }
    out.push_str("--------------------\n");
    out
}

/// The warnings sorted as buildx prints them (by first line; stable).
pub fn sorted(warnings: &[Warning]) -> Vec<&Warning> {
    let mut v: Vec<&Warning> = warnings.iter().collect();
    v.sort_by_key(|w| w.ranges.first().map(|r| r.0).unwrap_or(0));
    v
}

/// `--call=check` text on standard output. The error (if any) is returned
/// for the caller to print as buildx does (`ERROR: ...` on standard error).
pub fn report_text(report: &Report, file: &str, text: &str) -> (String, Option<String>) {
    let mut out = String::new();
    let n = report.warnings.len();
    if n == 1 {
        out.push_str("Check complete, 1 warning has been found!\n");
    } else if n > 1 {
        out.push_str(&format!("Check complete, {n} warnings have been found!\n"));
    }
    for w in sorted(&report.warnings) {
        out.push_str(&format!("\nWARNING: {}", w.rule.name));
        if let Some(u) = w.rule.url {
            out.push_str(&format!(" - {u}"));
        }
        out.push_str(&format!("\n{}\n", w.detail));
        out.push_str(&source_lines(file, text, &w.ranges));
    }
    let err = error_text(report.error.as_ref(), file, text);
    if err.is_some() {
        if n > 0 {
            out.push('\n');
        }
    } else if n == 0 {
        out.push_str("Check complete, no warnings found.\n");
    }
    (out, err)
}

fn error_text(e: Option<&CheckError>, file: &str, text: &str) -> Option<String> {
    let e = e?;
    let mut s = format!("{}\n", e.message);
    s.push_str(&source_lines(file, text, &e.ranges));
    Some(s)
}

/// The summary buildx prints on standard error after a build.
pub fn build_summary(warnings: &[Warning]) -> String {
    if warnings.is_empty() {
        return String::new();
    }
    let head = if warnings.len() == 1 { "1 warning found".to_string() } else { format!("{} warnings found", warnings.len()) };
    let mut out = format!("\n \x1b[33m{head} (use docker --debug to expand):\n\x1b[0m");
    for w in warnings {
        out.push_str(&format!(" - {}\n", w.short()));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"FROM"), "RlJPTQ==");
        assert_eq!(base64(b"FRO"), "RlJP");
        assert_eq!(base64(b"FR"), "RlI=");
    }

    #[test]
    fn source_window_as_buildkit() {
        let text = "# check=error=true\nFROM scratch as Build\nCOPY a /a\n";
        let s = source_lines("Dockerfile.e", text, &[(2, 2)]);
        assert_eq!(
            s,
            "Dockerfile.e:2\n--------------------\n   1 |     # check=error=true\n   2 | >>> FROM scratch as Build\n   3 |     COPY a /a\n   4 |     \n--------------------\n"
        );
    }
}
