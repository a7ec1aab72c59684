//! Image references (`[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`), parsed by hand.
//!
//! oci-spec's `Reference::from_str` matches one regular expression whose tag
//! part repeats a Unicode word class up to 128 times; compiling it takes
//! ~50 ms of CPU, once per process, in every build that names a registry
//! image (most of a no-op rebuild). This parser follows the same grammar
//! (distribution's reference grammar; the word class is ASCII, as in
//! Docker's Go regexp), and gives the same [`Reference`] (`docker.io`,
//! `library/` and `latest` filled in) and the same [`ParseError`]s; its tests
//! compare the two.

use frontend::reference::{valid_path_component, valid_tag};
use oci_client::{ParseError, Reference};

/// Longest repository name (distribution's `NameTotalLengthMax`).
const NAME_MAX: usize = 255;

/// Parse `s` as oci-spec's `s.parse::<Reference>()` does.
pub fn parse(s: &str) -> Result<Reference, ParseError> {
    if s.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    // A colon after the last slash starts the tag; one before it is a port.
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if !valid_name(name) || !tag.is_none_or(valid_tag) || !digest.is_none_or(valid_digest) {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_MAX {
        return Err(ParseError::NameTooLong);
    }
    if let Some(d) = digest {
        let expected = match d.split_once(':') {
            Some(("sha256", _)) => 64,
            Some(("sha384", _)) => 96,
            Some(("sha512", _)) => 128,
            Some(_) => return Err(ParseError::DigestUnsupported),
            None => return Err(ParseError::DigestInvalidFormat),
        };
        if d.len() - d.find(':').map_or(0, |i| i + 1) != expected {
            return Err(ParseError::DigestInvalidLength);
        }
    }
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t.into(), d.into()),
        (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest").into()),
    })
}

/// `[DOMAIN/]PATH[/PATH]...`.
fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.iter().all(|p| valid_path_component(p)) {
        return true;
    }
    parts.len() > 1 && valid_domain(parts[0]) && parts[1..].iter().all(|p| valid_path_component(p))
}

/// `host[:port]`, the host being dot-separated labels of letters, digits
/// and inner dashes.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    host.split('.').all(label) && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// `ALGORITHM:HEX`: algorithm components `[A-Za-z][A-Za-z0-9]*` joined by
/// one of `-_+.`, and at least 32 hex digits.
fn valid_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else { return false };
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(|x| x.is_ascii_alphanumeric())
    };
    alg.split(['-', '_', '+', '.']).all(component) && hex.len() >= 32 && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Docker's `splitDockerDomain`: the first component is the registry when
/// it has a dot or a colon or is `localhost`; Docker Hub otherwise, whose
/// one-component names live under `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((left, right)) if left.contains(['.', ':']) || left == "localhost" => (left.to_string(), right.to_string()),
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ours and oci-spec's agree: same parts, or the same error.
    #[test]
    fn agrees_with_oci_spec() {
        let d64 = "sha256:".to_string() + &"a".repeat(64);
        let long = "a".repeat(256);
        let cases: Vec<String> = [
            "busybox",
            "busybox:1.36",
            "library/busybox",
            "docker.io/busybox",
            "index.docker.io/busybox:latest",
            "docker.io/library/busybox:1",
            "localhost/app",
            "localhost:5000/app",
            "localhost:5000",
            "127.0.0.1:5000/a/b/c:v1.2-rc_3",
            "[::1]:5000/app",
            "registry.example.com/team/app",
            "Registry.Example.com/app",
            "my-registry.io:443/x",
            "-bad.io/x",
            "bad-.io/x",
            "a..b.io/x",
            "host:port/x",
            "foo/Bar",
            "Foo/bar",
            "UPPER",
            "a__b",
            "a___b",
            "a--------b",
            "a._b",
            "a.b_c-d",
            "_a",
            "a.",
            "a//b",
            "/a",
            "a/",
            ":tag",
            "app:",
            "app:.bad",
            "app:-bad",
            "app:_ok.tag-1",
            "app:a:b",
            "app@",
            "app@sha256:abc",
            "app@md5:0123456789abcdef0123456789abcdef",
            "app@sha256:0123456789abcdef0123456789abcdef",
            "app@sha512:0123456789abcdef0123456789abcdef",
            "app@sha256+b64:0123456789abcdef0123456789abcdef",
            "app@1sha:0123456789abcdef0123456789abcdef",
            "app@sha256:0123456789abcdef0123456789abcdeg",
            "app@@sha256:0123456789abcdef0123456789abcdef",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("app@{d64}"),
            format!("app:v1@{d64}"),
            format!("localhost:5000/app:v1@{d64}"),
            format!("app:{}", "t".repeat(128)),
            format!("app:{}", "t".repeat(129)),
            long.clone(),
            format!("example.com/{long}"),
        ])
        .collect();
        for s in &cases {
            let ours = parse(s);
            let theirs = s.parse::<Reference>();
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(
                        (a.registry(), a.repository(), a.tag(), a.digest(), a.whole()),
                        (b.registry(), b.repository(), b.tag(), b.digest(), b.whole()),
                        "{s:?}"
                    );
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{s:?}"),
                _ => panic!("{s:?}: ours {ours:?}, oci-spec {theirs:?}"),
            }
        }
    }

    #[test]
    fn ascii_word_class_in_tags() {
        // Docker's Go regexp: \w is ASCII; a non-ASCII tag is refused.
        assert_eq!(parse("app:tág").map(|r| r.whole()), Err(ParseError::ReferenceInvalidFormat));
        assert_eq!(parse("127.0.0.1:5000/app").map(|r| r.whole()), Ok("127.0.0.1:5000/app:latest".to_string()));
    }
}
