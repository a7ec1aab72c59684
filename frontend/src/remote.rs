//! ADD sources that are not in a build context: `http(s)://` URLs and git
//! repositories, recognized as BuildKit does (`dfgitutil.ParseGitRef`,
//! `isHTTPSource` in `dockerfile2llb/convert_copy.go`), and COPY/ADD
//! `--chmod` validation (octal, or symbolic as chmod(1) since Dockerfile 1.14).

/// A git source: `remote#ref:subdir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef {
    /// The remote without the fragment or query.
    pub remote: String,
    /// `#ref` or `?ref=`/`?tag=`/`?branch=`.
    pub reference: Option<String>,
    /// `#ref:subdir` or `?subdir=`.
    pub subdir: Option<String>,
    /// `?keep-git-dir=true|false`.
    pub keep_git_dir: Option<bool>,
    /// `?checksum=`.
    pub checksum: Option<String>,
}

/// Whether `src` is an `http://` or `https://` URL (BuildKit's `isHTTPSource`).
pub fn is_http(src: &str) -> bool {
    let l = src.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// Parse `src` as a git reference if it is one that cannot be a local path:
/// `git://`, `git@host:path`, `ssh://`, `github.com/...`, or an http(s) URL
/// whose path ends in `.git` (BuildKit also treats `https://host/repo.git#ref`
/// as git).
pub fn git_ref(src: &str) -> Option<GitRef> {
    let lower = src.to_ascii_lowercase();
    let (main, fragment) = match src.split_once('#') {
        Some((m, f)) => (m, Some(f)),
        None => (src, None),
    };
    let (main, query) = match main.split_once('?') {
        Some((m, q)) if lower.contains("://") => (m, Some(q)),
        _ => (main, None),
    };
    let ml = main.to_ascii_lowercase();
    let scp_like = {
        // user@host:path, no scheme.
        let at = main.find('@');
        let colon = main.find(':');
        !main.contains("://") && matches!((at, colon), (Some(a), Some(c)) if a < c)
    };
    let is_git = ml.starts_with("git://")
        || ml.starts_with("ssh://")
        || ml.starts_with("git@")
        || scp_like
        || ml.starts_with("github.com/")
        || ((ml.starts_with("http://") || ml.starts_with("https://")) && ml.trim_end_matches('/').ends_with(".git"));
    if !is_git {
        return None;
    }
    let mut r = GitRef { remote: main.to_string(), reference: None, subdir: None, keep_git_dir: None, checksum: None };
    if let Some(f) = fragment {
        let (reference, subdir) = match f.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (f, None),
        };
        r.reference = Some(reference.to_string()).filter(|s| !s.is_empty());
        r.subdir = subdir.map(String::from).filter(|s| !s.is_empty());
    }
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "ref" | "tag" | "branch" => r.reference = Some(v.to_string()),
            "subdir" => r.subdir = Some(v.to_string()),
            "keep-git-dir" => r.keep_git_dir = Some(v == "true" || v == "1"),
            "checksum" | "commit" => r.checksum = Some(v.to_string()),
            _ => {}
        }
    }
    Some(r)
}

/// The file name BuildKit gives a downloaded URL: the last element of its
/// path, or `__unnamed__`.
pub fn http_filename(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let no_frag = after_scheme.split(['#', '?']).next().unwrap_or("");
    let path = no_frag.find('/').map_or("", |i| &no_frag[i..]);
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(b) if !b.is_empty() && b != "." && !path.ends_with('/') => b.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// Check a `--chmod` value: octal (`755`, `0644`, at most `7777`) or
/// symbolic (`u+x`, `u=rwX,go=rX`, `+x`, `g=u`).
pub fn valid_chmod(v: &str) -> bool {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) {
        return u32::from_str_radix(v, 8).is_ok_and(|m| m <= 0o7777);
    }
    // clause := [ugoa]* ([-+=] ([rwxXst]* | [ugo]))+
    v.split(',').all(|clause| {
        let ops = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        if ops.is_empty() {
            return false;
        }
        let mut chars = ops.chars().peekable();
        let mut any = false;
        while let Some(op) = chars.next() {
            if !matches!(op, '+' | '-' | '=') {
                return false;
            }
            any = true;
            match chars.peek() {
                Some('u' | 'g' | 'o') => {
                    chars.next();
                }
                _ => {
                    while chars.peek().is_some_and(|c| matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't')) {
                        chars.next();
                    }
                }
            }
        }
        any
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_git_and_http() {
        let g = git_ref("https://github.com/moby/buildkit.git#v0.10.1:docs").expect("git");
        assert_eq!(g.remote, "https://github.com/moby/buildkit.git");
        assert_eq!(g.reference.as_deref(), Some("v0.10.1"));
        assert_eq!(g.subdir.as_deref(), Some("docs"));
        assert!(git_ref("git@github.com:moby/buildkit.git").is_some());
        assert!(git_ref("https://example.com/file.tar.gz").is_none());
        assert!(git_ref("src/dir").is_none());
        let q = git_ref("https://host/r.git?ref=main&keep-git-dir=true").expect("query");
        assert_eq!((q.reference.as_deref(), q.keep_git_dir), (Some("main"), Some(true)));
        assert!(is_http("HTTPS://x/y"));
        assert_eq!(http_filename("https://example.com/a/b.tar.gz?x=1"), "b.tar.gz");
        assert_eq!(http_filename("https://example.com/"), "__unnamed__");
        assert_eq!(http_filename("https://example.com"), "__unnamed__");
    }

    #[test]
    fn chmod_forms() {
        for ok in ["755", "0644", "7777", "+x", "u+x", "u=rwX,go=rX", "g=u", "a-w", "u+x-w"] {
            assert!(valid_chmod(ok), "{ok}");
        }
        for bad in ["", "8", "17777", "u", "x+", "u+q", "u+x,", "rw"] {
            assert!(!valid_chmod(bad), "{bad}");
        }
    }
}
