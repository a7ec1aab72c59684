//! The grammar of Docker image references (`[DOMAIN/]PATH[:TAG][@DIGEST]`,
//! distribution's `reference` package): the checks of a path component and
//! of a tag, shared by the lint's FROM-name check here and the registry
//! client's reference parser in the main crate, and that lint check itself.

/// Whether `name` parses as a Docker image reference (distribution's
/// `ParseNormalizedNamed`): lower-case path components, optional domain,
/// tag and digest; not empty, not a bare 64-hex ID.
pub(crate) fn valid_reference(name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else { return false };
        if algo.is_empty() || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return false;
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if !tag.is_none_or(valid_tag) {
        return false;
    }
    if repo.is_empty() || (repo.len() == 64 && repo.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())) {
        return false;
    }
    let mut comps: Vec<&str> = repo.split('/').collect();
    if comps.len() > 1 {
        let first = comps[0];
        if first.contains('.') || first.contains(':') || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) {
            let host = first.split(':').next().unwrap_or("");
            if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                return false;
            }
            comps.remove(0);
        }
    }
    comps.iter().all(|c| valid_path_component(c))
}

/// A path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes
/// (`[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`).
pub fn valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// A tag: `[\w][\w.-]{0,127}` with an ASCII word class.
pub fn valid_tag(t: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = t.as_bytes();
    !b.is_empty() && b.len() <= 128 && word(b[0]) && b.iter().all(|c| word(*c) || *c == b'.' || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_and_tags() {
        for ok in ["a", "ubuntu", "a.b", "a_b", "a__b", "a---b", "x9"] {
            assert!(valid_path_component(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a___b", "a._b", "é"] {
            assert!(!valid_path_component(bad), "{bad}");
        }
        assert!(valid_tag("latest") && valid_tag("_x.1-2") && valid_tag(&"a".repeat(128)));
        assert!(!valid_tag("") && !valid_tag(".x") && !valid_tag("-x") && !valid_tag("a/b") && !valid_tag(&"a".repeat(129)));
    }

    #[test]
    fn references() {
        for ok in ["busybox", "busybox:1.36", "localhost:5000/a/b:t", "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef"] {
            assert!(valid_reference(ok), "{ok}");
        }
        for bad in ["", "Busybox", "busybox:", "a@sha256:12", &"a".repeat(64)] {
            assert!(!valid_reference(bad), "{bad}");
        }
    }
}
