//! Which rules run and whether a violation fails the build: the
//! `# check=skip=A,B;error=true;experimental=C|all` directive, the same text in
//! the `BUILDKIT_DOCKERFILE_CHECK` build argument (which then replaces the
//! directive, as in BuildKit). (BuildKit after v0.25 also reads `check=`
//! comments right above an instruction; Docker 28's v0.25 does not, and
//! neither do we.)

/// A parsed check configuration (BuildKit's `linter.Config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `skip=all`.
    pub skip_all: bool,
    /// `skip=A,B`.
    pub skip: Vec<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=A,B`.
    pub experimental: Vec<String>,
    /// `error=true`: a violation fails the build.
    pub error: bool,
}

impl Config {
    /// Parse `skip=...;error=...;experimental=...` (BuildKit's `ParseLintOptions`).
    pub fn parse(text: &str) -> Result<Config, String> {
        let text = text.trim();
        let mut c = Config::default();
        if text.is_empty() {
            return Ok(c);
        }
        for part in text.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option {}", super::rules::go_quote(part)));
            };
            match k.trim() {
                "skip" => {
                    let v = v.trim();
                    if v == "all" {
                        c.skip_all = true;
                    } else {
                        c.skip = v.split(',').map(|r| r.trim().to_string()).collect();
                    }
                }
                "experimental" => {
                    let v = v.trim();
                    if v == "all" {
                        c.experimental_all = true;
                    } else {
                        c.experimental = v.split(',').map(|r| r.trim().to_string()).collect();
                    }
                }
                "error" => {
                    c.error = parse_go_bool(v.trim()).ok_or_else(|| {
                        format!(
                            "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
                            super::rules::go_quote(part),
                            super::rules::go_quote(v.trim())
                        )
                    })?;
                }
                other => return Err(format!("invalid check option {}", super::rules::go_quote(other))),
            }
        }
        Ok(c)
    }

    /// This configuration with `other`'s skips and experiments added (its
    /// `error` is not taken, as in BuildKit's `WithMergedConfig`).
    pub fn merged(&self, other: &Config) -> Config {
        let mut c = self.clone();
        c.skip_all |= other.skip_all;
        c.experimental_all |= other.experimental_all;
        c.skip.extend(other.skip.iter().cloned());
        c.experimental.extend(other.experimental.iter().cloned());
        c
    }

    /// Whether `rule` runs under this configuration.
    pub fn enabled(&self, rule: &super::rules::Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.iter().any(|r| r == rule.name)
        } else {
            !(self.skip_all || self.skip.iter().any(|r| r == rule.name))
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_directive() {
        let c = Config::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, vec!["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error);
        assert!(Config::parse("skip=all").unwrap().skip_all);
        assert!(Config::parse("experimental=all").unwrap().experimental_all);
        assert_eq!(Config::parse("error=maybe").unwrap_err(), "failed to parse check option \"error=maybe\": strconv.ParseBool: parsing \"maybe\": invalid syntax");
        assert_eq!(Config::parse("color=red").unwrap_err(), "invalid check option \"color\"");
        assert_eq!(Config::parse("nonsense").unwrap_err(), "invalid check option \"nonsense\"");
    }
}
