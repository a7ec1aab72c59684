//! The `# syntax=` directive. BuildKit hands the build to the frontend image
//! it names; stromatekt has the Dockerfile frontend built in, so it accepts
//! the official Dockerfile frontend's 1.x line (`docker/dockerfile:1`,
//! `:1.7`, `:1.7.1`, `:1-labs`, with or without `docker.io/`, a digest, or
//! the `dockerfile-upstream` repository) and refuses any other image by name.

/// Check the `# syntax=` value of a Dockerfile, if any.
pub fn check(syntax: Option<&str>) -> Result<(), String> {
    let Some(raw) = syntax else { return Ok(()) };
    let image = raw.trim();
    if image.is_empty() || accepted(image) {
        return Ok(());
    }
    Err(format!(
        "# syntax={image}: stromatekt has the Dockerfile frontend built in and runs only docker/dockerfile:1.x \
         (docker/dockerfile:1, :1.N, :1.N.M, :1-labs); it cannot run the frontend image {image}: \
         remove the line or point it at docker/dockerfile:1"
    ))
}

fn accepted(image: &str) -> bool {
    let no_digest = image.split('@').next().unwrap_or(image);
    let name = no_digest.strip_prefix("docker.io/").or_else(|| no_digest.strip_prefix("index.docker.io/")).unwrap_or(no_digest);
    let (repo, tag) = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (name, None),
    };
    if repo != "docker/dockerfile" && repo != "docker/dockerfile-upstream" {
        return false;
    }
    let Some(tag) = tag else { return true };
    let version = tag.strip_suffix("-labs").unwrap_or(tag);
    if version == "latest" || version == "labs" {
        return true;
    }
    let mut parts = version.split('.');
    parts.next() == Some("1") && parts.all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_dockerfile_frontend_is_accepted() {
        for ok in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7",
            "docker/dockerfile:1.7.1",
            "docker/dockerfile:1-labs",
            "docker/dockerfile:1.7-labs",
            "docker.io/docker/dockerfile:1",
            "docker/dockerfile:1@sha256:ac85f380a63b13dfcefa89046420e1781752bab202122f8f50032edf31be0021",
            "docker/dockerfile",
        ] {
            assert!(check(Some(ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    fn other_frontends_are_refused_by_name() {
        for bad in ["docker/dockerfile:2", "tonistiigi/dockerfile:0.1", "example.com/my/frontend:1", "docker/dockerfile:0.9"] {
            let e = check(Some(bad)).unwrap_err();
            assert!(e.contains(&format!("frontend image {bad}")), "{e}");
        }
    }
}
