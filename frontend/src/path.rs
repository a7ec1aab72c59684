//! Lexical cleaning of slash-separated paths, as Go's `path.Clean`: the one
//! cleaner for `.dockerignore` patterns, COPY sources and destinations,
//! mount targets, WORKDIR and Git subdirectories.

/// Go's `path.Clean`: repeated slashes, `.` and `..` resolved lexically, no
/// trailing slash; `..` at the root of a rooted path is dropped, and an
/// empty result is `.` (`/` when rooted).
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// `p` as a path below a root: `path.Clean("/" + p)` without the leading
/// `/`, so `..` never leaves the root; `""` is the root itself.
pub fn clean_below_root(p: &str) -> String {
    let c = clean(&format!("/{p}"));
    c.trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_as_go() {
        for (p, want) in [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("a/./b/../c/", "a/c"),
            ("/a/./b/../c/", "/a/c"),
            ("a/..", "."),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("//a//b//", "/a/b"),
        ] {
            assert_eq!(clean(p), want, "clean({p:?})");
        }
    }

    #[test]
    fn below_root() {
        for (p, want) in [("", ""), ("/", ""), ("a/../..", ""), ("../x", "x"), ("/a/./b/", "a/b"), ("a//b", "a/b")] {
            assert_eq!(clean_below_root(p), want, "clean_below_root({p:?})");
        }
    }
}
