//! ADD sources that are not in a build context: `http(s)://` URLs and git
//! repositories, recognized as BuildKit does (`dfgitutil.ParseGitRef`,
//! `isHTTPSource` in `dockerfile2llb/convert_copy.go`), and COPY/ADD
//! `--chmod` validation (octal, or symbolic as chmod(1) since Dockerfile 1.14).

/// A git source: `remote#ref:subdir`, or the query form of Dockerfile 1.18
/// (`remote?ref=&tag=&branch=&subdir=&keep-git-dir=&checksum=&submodules=`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GitRef {
    /// The remote without the fragment or query (what `git fetch` is given).
    pub remote: String,
    /// `#ref`, `?ref=`, `?tag=` (as `refs/tags/TAG`) or `?branch=` (as
    /// `refs/heads/BRANCH`); None = the default branch.
    pub reference: Option<String>,
    /// `#ref:subdir` or `?subdir=`, cleaned (no leading `/`).
    pub subdir: Option<String>,
    /// `?keep-git-dir=true|false`.
    pub keep_git_dir: Option<bool>,
    /// `?checksum=` / `?commit=`: a prefix of the commit the ref must be at.
    pub checksum: Option<String>,
    /// `?submodules=false` skips submodules.
    pub submodules: Option<bool>,
    /// `github.com/owner/repo` without a scheme: accepted by BuildKit for
    /// build contexts only (deprecated), never for ADD.
    pub indistinguishable_from_local: bool,
}

/// Whether `src` is an `http://` or `https://` URL (BuildKit's `isHTTPSource`).
pub fn is_http(src: &str) -> bool {
    let l = src.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// [`parse_git_ref`], with a malformed query counted as "not git".
pub fn git_ref(src: &str) -> Option<GitRef> {
    parse_git_ref(src).ok().flatten()
}

/// Parse `src` as a git reference, as BuildKit's `dfgitutil.ParseGitRef`
/// does: `Ok(None)` when it is not one (a local path, a plain http(s) URL
/// whose path does not end in `.git`, an unknown scheme), an error when it
/// is one with a bad query (`?ref=a&tag=b`, `?keep-git-dir=maybe`, an
/// unknown key). Git forms: `git://`, `ssh://`, `http(s)://...git`,
/// `user@host:path` (scp-like), `github.com/...`.
pub fn parse_git_ref(src: &str) -> Result<Option<GitRef>, String> {
    if src.starts_with("./") || src.starts_with("../") {
        return Ok(None);
    }
    let mut r = GitRef::default();
    let (remote, query, fragment);
    if let Some(rest) = src.strip_prefix("github.com/") {
        r.indistinguishable_from_local = true;
        let (main, q, f) = split_url_tail(rest);
        (remote, query, fragment) = (format!("github.com/{main}"), q, f);
    } else if let Some(scheme_len) = scheme_len(src) {
        let scheme = src[..scheme_len].to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "ssh" | "git") {
            return Ok(None);
        }
        let (main, q, f) = split_url_tail(src);
        if scheme.starts_with("http") {
            // Only a path ending in `.git` makes an http(s) URL a repository.
            let after = &main[scheme_len + 3..];
            let path = after.find('/').map_or("", |i| &after[i..]);
            if !path.ends_with(".git") {
                return Ok(None);
            }
        }
        (remote, query, fragment) = (main.to_string(), q, f);
    } else if let Some((main, q, f)) = scp_like(src) {
        (remote, query, fragment) = (main.to_string(), q, f);
    } else {
        return Ok(None);
    }
    r.remote = remote;
    if let Some(f) = fragment.filter(|f| !f.is_empty()) {
        let (reference, subdir) = f.split_once(':').unwrap_or((f, ""));
        r.reference = Some(reference.to_string()).filter(|s| !s.is_empty());
        r.subdir = clean_subdir(subdir);
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        load_query(&mut r, q)?;
    }
    Ok(Some(r))
}

/// The length of `scheme` in `scheme://...` (letters and digits only).
fn scheme_len(s: &str) -> Option<usize> {
    let i = s.find("://")?;
    (i > 0 && s[..i].chars().all(|c| c.is_ascii_alphanumeric())).then_some(i)
}

/// `main?query#fragment` -> (main, query, fragment), as a URL parser splits them.
fn split_url_tail(s: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, fragment) = match s.split_once('#') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    match rest.split_once('?') {
        Some((a, b)) => (a, Some(b), fragment),
        None => (rest, None, fragment),
    }
}

/// `user@host:path[?query][#fragment]` (git's scp-like syntax; BuildKit's
/// `sshutil.ParseSCPStyleURL`): (user@host:path, query, fragment).
fn scp_like(s: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    let (user, rest) = s.split_once('@')?;
    if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return None;
    }
    let (host, _) = rest.split_once(':')?;
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return None;
    }
    // The path is the shortest match: it stops at the first `?` or `#`.
    let path_start = user.len() + 1 + host.len() + 1;
    let end = s[path_start..].find(['?', '#']).map_or(s.len(), |i| path_start + i);
    let (main, tail) = s.split_at(end);
    let (query, fragment) = match tail.strip_prefix('?') {
        Some(t) => match t.split_once('#') {
            Some((q, f)) => (Some(q), Some(f)),
            None => (Some(t), None),
        },
        None => (None, tail.strip_prefix('#')),
    };
    Some((main, query, fragment))
}

/// `path.Join("/", subdir)` without the leading `/`; None when empty.
fn clean_subdir(subdir: &str) -> Option<String> {
    Some(crate::path::clean_below_root(subdir)).filter(|c| !c.is_empty())
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Percent-decoding of a query component (`+` is a space), as Go's `url.ParseQuery`.
fn query_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(hex.ok_or_else(|| format!("invalid URL escape in query {s:?}"))?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("query {s:?} is not UTF-8"))
}

/// The query form (BuildKit's `GitRef.loadQuery`): each key at most once,
/// with a value (`submodules` and `keep-git-dir` may go without, meaning
/// true); `tag=` and `branch=` become full ref names and conflict with a
/// different `ref` or `#fragment`.
fn load_query(r: &mut GitRef, query: &str) -> Result<(), String> {
    let mut values: Vec<(String, String)> = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        values.push((query_unescape(k)?, query_unescape(v)?));
    }
    let (mut tag, mut branch) = (None::<String>, None::<String>);
    for (i, (k, v)) in values.iter().enumerate() {
        if values[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(format!("query {k:?} has multiple values"));
        }
        let flag = |name: &str| -> Result<bool, String> {
            if v.is_empty() {
                return Ok(true);
            }
            parse_bool(v).ok_or_else(|| format!("invalid {name} value: {v:?}"))
        };
        if v.is_empty() && !matches!(k.as_str(), "submodules" | "keep-git-dir" | "fetch-by-commit") {
            return Err(format!("query {k:?} has no value"));
        }
        match k.as_str() {
            "ref" => {
                if let Some(old) = r.reference.as_ref().filter(|o| *o != v) {
                    return Err(format!("ref conflicts: {old:?} vs {v:?}"));
                }
                r.reference = Some(v.clone());
            }
            "tag" => tag = Some(v.clone()),
            "branch" => branch = Some(v.clone()),
            "subdir" => {
                let clean = clean_subdir(v);
                if let (Some(old), Some(new)) = (&r.subdir, &clean) {
                    if old != new {
                        return Err(format!("subdir conflicts: {old:?} vs {v:?}"));
                    }
                }
                r.subdir = clean;
            }
            "checksum" | "commit" => r.checksum = Some(v.clone()),
            "keep-git-dir" => r.keep_git_dir = Some(flag("keep-git-dir")?),
            "submodules" => r.submodules = Some(flag("submodules")?),
            // The default (checkout time); `commit` is not implemented.
            "mtime" if v == "checkout" => {}
            "mtime" if v == "commit" => return Err("query mtime=commit is not supported by stromatekt (files get the checkout time)".into()),
            "mtime" => return Err(format!("invalid mtime value: {v:?} (must be \"checkout\" or \"commit\")")),
            "fetch-by-commit" => return Err("query fetch-by-commit is not supported by stromatekt".into()),
            _ => return Err(format!("unexpected query {k:?}")),
        }
    }
    if let Some(t) = tag {
        let t = if t.starts_with("refs/tags/") { t } else { format!("refs/tags/{t}") };
        if let Some(old) = r.reference.as_ref().filter(|o| **o != t) {
            return Err(format!("ref conflicts: {old:?} vs {t:?}"));
        }
        r.reference = Some(t);
        if branch.is_some() {
            return Err("branch conflicts with tag".into());
        }
    }
    if let Some(b) = branch {
        let b = if b.starts_with("refs/heads/") { b } else { format!("refs/heads/{b}") };
        if let Some(old) = r.reference.as_ref().filter(|o| **o != b) {
            return Err(format!("ref conflicts: {old:?} vs {b:?}"));
        }
        r.reference = Some(b);
    }
    Ok(())
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

    /// BuildKit's `TestParseGitRef` cases (dfgitutil/git_ref_test.go).
    #[test]
    fn buildkit_parse_git_ref_cases() {
        let none = [
            "https://example.com/",
            "https://example.com/foo",
            "https://example.com/foo.git/",
            "https://example.com/foo.git.bar",
            "custom.xyz/moby/buildkit.git",
            "https://github.com/moby/buildkit",
            "http://github.com/docker/docker.git:#branch",
            "./.git",
            ".git",
            "../x.git",
            "ftp://host/r.git",
        ];
        for n in none {
            assert_eq!(parse_git_ref(n), Ok(None), "{n}");
        }
        let p = |s: &str| parse_git_ref(s).expect(s).expect(s);
        assert_eq!(p("https://example.com/foo.git#release/1.2").reference.as_deref(), Some("release/1.2"));
        assert_eq!(p("git://example.com/foo").remote, "git://example.com/foo");
        let gh = p("github.com/moby/buildkit#master");
        assert!(gh.indistinguishable_from_local);
        assert_eq!((gh.remote.as_str(), gh.reference.as_deref()), ("github.com/moby/buildkit", Some("master")));
        assert_eq!(p("https://foo:bar@github.com/moby/buildkit.git").remote, "https://foo:bar@github.com/moby/buildkit.git");
        assert_eq!(p("git@github.com:moby/buildkit").remote, "git@github.com:moby/buildkit");
        let sub = p("https://github.com/foo/bar.git#baz/qux:quux/quuz");
        assert_eq!((sub.reference.as_deref(), sub.subdir.as_deref()), (Some("baz/qux"), Some("quux/quuz")));
        let only_sub = p("https://github.com/docker/docker.git#:myfolder");
        assert_eq!((only_sub.reference, only_sub.subdir.as_deref()), (None, Some("myfolder")));
        assert_eq!(p("https://h/r.git#main:/a/../b/").subdir.as_deref(), Some("b"));
        let scp = p("git@host:team/r.git?tag=v1#:docs");
        assert_eq!((scp.remote.as_str(), scp.reference.as_deref(), scp.subdir.as_deref()), ("git@host:team/r.git", Some("refs/tags/v1"), Some("docs")));
    }

    #[test]
    fn query_form() {
        let p = |s: &str| parse_git_ref(s).expect(s).expect(s);
        let q = p("https://h/r.git?branch=dev&subdir=a/b&checksum=abc123&keep-git-dir&submodules=false");
        assert_eq!(q.reference.as_deref(), Some("refs/heads/dev"));
        assert_eq!(q.subdir.as_deref(), Some("a/b"));
        assert_eq!(q.checksum.as_deref(), Some("abc123"));
        assert_eq!((q.keep_git_dir, q.submodules), (Some(true), Some(false)));
        assert_eq!(p("https://h/r.git?ref=v1#v1").reference.as_deref(), Some("v1"));
        assert_eq!(p("https://h/r.git?tag=refs/tags/v1&ref=refs/tags/v1").reference.as_deref(), Some("refs/tags/v1"));
        assert_eq!(p("https://h/r.git?mtime=checkout").reference, None);
        for (bad, msg) in [
            ("https://h/r.git?ref=a#b", "ref conflicts"),
            ("https://h/r.git?tag=a&branch=a", "branch conflicts with tag"),
            ("https://h/r.git?ref=a&tag=b", "ref conflicts"),
            ("https://h/r.git?subdir=a#:b", "subdir conflicts"),
            ("https://h/r.git?ref=", "has no value"),
            ("https://h/r.git?ref=a&ref=b", "multiple values"),
            ("https://h/r.git?keep-git-dir=maybe", "invalid keep-git-dir value"),
            ("https://h/r.git?frobnicate=1", "unexpected query"),
            ("https://h/r.git?mtime=never", "invalid mtime value"),
        ] {
            let e = parse_git_ref(bad).expect_err(bad);
            assert!(e.contains(msg), "{bad}: {e}");
        }
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
