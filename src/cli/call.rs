//! `build --call=check|outline|targets|subrequests.describe` and `--check`,
//! answered from the Dockerfile without building (as buildx prints BuildKit's
//! subrequest results: text, or `format=json`; `check` exits 1 when a rule
//! fires), and the build checks of an ordinary build: their summary printed
//! after the build, and `# check=error=true` failing it before any step runs.

use anyhow::{bail, Result};
use frontend::lint::{self, print, Report};
use std::collections::BTreeMap;
use std::io::Write;

/// A parsed `--call` value (buildx's `CallFunc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `lint` (for `check`), `outline`, `targets` or `subrequests.describe`.
    pub name: String,
    /// `json` or empty (text).
    pub format: String,
    /// `ignorestatus=true`: exit 0 even when the check found something.
    pub ignore_status: bool,
}

/// The call asked for by `--call`/`--check`, if not a plain build.
pub fn requested(call: Option<&str>, check: Option<&str>) -> Result<Option<Call>> {
    let mut value = call.map(str::to_string);
    if let Some(c) = check {
        match c {
            "true" | "1" | "t" | "T" | "TRUE" | "True" => value = Some("check".into()),
            "false" | "0" | "f" | "F" | "FALSE" | "False" => {}
            other => bail!("invalid argument {other:?} for \"--check\" flag: strconv.ParseBool: parsing {other:?}: invalid syntax"),
        }
    }
    let Some(v) = value.filter(|v| !v.is_empty()) else { return Ok(None) };
    let mut c = Call { name: String::new(), format: String::new(), ignore_status: false };
    for field in v.split(',') {
        match field.split_once('=') {
            Some(("format", f)) => c.format = f.to_string(),
            Some(("ignorestatus", b)) => {
                c.ignore_status = match b {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("invalid ignorestatus print value: {b}"),
                }
            }
            Some(_) => bail!("invalid print field: {field}"),
            None if !c.name.is_empty() => bail!("invalid print value: {v}"),
            None => c.name = field.to_string(),
        }
    }
    if c.name == "check" {
        c.name = "lint".into();
    }
    if c.name == "build" {
        return Ok(None);
    }
    if !matches!(c.name.as_str(), "lint" | "outline" | "targets" | "subrequests.describe") {
        bail!("--call {}: unknown method (stromatekt answers check, outline, targets and subrequests.describe)", c.name);
    }
    if !c.format.is_empty() && c.format != "json" {
        bail!("--call {v}: unknown format {:?} (use format=json, or none for text)", c.format);
    }
    Ok(Some(c))
}

/// What the CLI knows of a base image.
pub struct BaseFacts {
    /// Config Env.
    pub env: Vec<String>,
    /// Config Shell.
    pub shell: Option<Vec<String>>,
    /// `os/arch[/variant]`.
    pub platform: String,
}

/// The facts the checks read from a base image's config.
pub fn facts(config: &crate::image::config::ImageConfig) -> BaseFacts {
    let mut platform = format!("{}/{}", config.os, config.architecture);
    if let Some(v) = config.variant.as_deref().filter(|v| !v.is_empty()) {
        platform.push('/');
        platform.push_str(v);
    }
    BaseFacts { env: config.config.env.clone().unwrap_or_default(), shell: config.config.shell.clone(), platform }
}

/// The `# syntax=` directive: the built-in Dockerfile frontend's 1.x line,
/// or an error naming the frontend image.
pub fn syntax(text: &str) -> Result<()> {
    let Ok(ast) = frontend::parser::parse(text) else { return Ok(()) };
    frontend::syntax::check(ast.directives.syntax.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Fill the check's base-image facts with `resolve` (None: not resolvable;
/// its FROM fails later in the build with the registry's error).
pub fn fill_bases(input: &mut lint::Input, text: &str, resolve: &dyn Fn(&str) -> Option<BaseFacts>) {
    for name in lint::base_images(text, input) {
        if let Some(f) = resolve(&name) {
            input.image_env.insert(name.clone(), f.env);
            if let Some(s) = f.shell {
                input.image_shell.insert(name.clone(), s);
            }
            input.image_platform.insert(name, f.platform);
        }
    }
}

/// The file name locations show (BuildKit shows the Dockerfile's base name).
pub fn shown_name(shown: &str) -> String {
    std::path::Path::new(shown).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into())
}

/// The Dockerfile's name in `--check` text, as buildx shows it: `-f` as
/// given, `stdin` for `-f -`, else `CONTEXT/Dockerfile` (cleaned).
pub fn display_name(file: Option<&std::path::Path>, context: &std::path::Path) -> String {
    match file {
        Some(f) if f == std::path::Path::new("-") => "stdin".into(),
        Some(f) => f.display().to_string(),
        None if context == std::path::Path::new("-") => "Dockerfile".into(),
        None => frontend::mounts::clean_path(&format!("{}/Dockerfile", context.display())),
    }
}

/// Answer `call` for the Dockerfile `text` (`display`: its name in text
/// output); returns the exit code.
/// `build_error`: why lowering the Dockerfile failed, if it did (the
/// message and line): BuildKit's check reports a conversion error too.
pub fn answer(call: &Call, text: &str, display: &str, input: &lint::Input, build_error: Option<(String, usize)>) -> Result<i32> {
    let as_error = |(m, l): (String, usize)| lint::CheckError { message: m, ranges: if l > 0 { vec![(l, l)] } else { vec![] } };
    let json = call.format == "json";
    let mut out = std::io::stdout().lock();
    let code = match call.name.as_str() {
        "lint" => {
            let mut report = lint::check(text, input);
            if report.error.is_none() {
                report.error = build_error.clone().map(as_error);
            }
            if report.error.is_none() {
                if let Some(v) = report.violation() {
                    report.error = Some(lint::CheckError { message: v, ranges: vec![] });
                }
            }
            let code = i32::from(!report.warnings.is_empty() || report.error.is_some());
            if json {
                writeln!(out, "{}", print::report_json(&report, &input.file, text))?;
            } else {
                let (body, err) = print::report_text(&report, display, text);
                write!(out, "{body}")?;
                out.flush()?;
                if let Some(e) = err {
                    eprintln!("ERROR: {}", e.trim_end());
                    return Ok(1);
                }
            }
            if json && report.error.is_some() {
                out.flush()?;
                let e = report.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
                eprintln!("ERROR: {e}");
                return Ok(1);
            }
            code
        }
        "outline" => {
            // BuildKit's outline walks the target's stages as a build does:
            // a dispatch error or an `error=true` violation fails it.
            let mut i = input.clone();
            i.reachable_only = true;
            let mut report = lint::check(text, &i);
            if report.error.is_none() {
                report.error = build_error.clone().map(as_error);
            }
            if let Some(e) = &report.error {
                eprintln!("ERROR: {}\n{}", e.message, print::source_lines(display, text, &e.ranges).trim_end());
                return Ok(1);
            }
            if let Some(v) = report.violation() {
                eprint!("{}", print::build_summary(&report.warnings));
                eprintln!("ERROR: {v}");
                return Ok(1);
            }
            let v = frontend::outline::outline(text, input).map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                writeln!(out, "{}", v.render())?;
            } else {
                write!(out, "{}", frontend::outline::outline_text(&v))?;
            }
            0
        }
        "targets" => {
            let v = frontend::outline::targets(text).map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                writeln!(out, "{}", v.render())?;
            } else {
                write!(out, "{}", frontend::outline::targets_text(&v))?;
            }
            0
        }
        _ => {
            if json {
                writeln!(out, "{}", frontend::outline::describe().render())?;
            } else {
                write!(out, "{}", frontend::outline::describe_text())?;
            }
            0
        }
    };
    out.flush()?;
    Ok(if call.ignore_status { 0 } else { code })
}

/// The checks of an ordinary build: runs the rules on the stages the build
/// needs; with `# check=error=true` and a violation, the error to fail with
/// (before anything runs). The returned guard prints the warnings summary
/// on standard error when the build ends, as buildx does.
pub fn build_checks(text: &str, input: &lint::Input, quiet: bool) -> Result<Summary> {
    let mut input = input.clone();
    input.reachable_only = true;
    let report: Report = lint::check(text, &input);
    let summary = Summary { text: if quiet { String::new() } else { print::build_summary(&report.warnings) } };
    if let Some(v) = report.violation() {
        drop(summary);
        let mut msg = v;
        for w in &report.warnings {
            msg.push_str(&format!("\n{}:{}: {}", input.file, w.ranges.first().map(|r| r.0).unwrap_or(0), w.short()));
        }
        if let Some(w) = report.warnings.first() {
            msg.push('\n');
            msg.push_str(print::source_lines(&input.file, text, &w.ranges).trim_end());
        }
        bail!("{msg}");
    }
    if let Some(e) = &report.error {
        // The build reports its own error for this; a bad check config is ours.
        if e.message.starts_with("failed to parse") {
            bail!("{}", e.message);
        }
    }
    Ok(summary)
}

/// Whether the Dockerfile (or `BUILDKIT_DOCKERFILE_CHECK`) asks for
/// `error=true`.
pub fn errors_on_violation(text: &str, build_args: &BTreeMap<String, String>) -> bool {
    let Ok(ast) = frontend::parser::parse(text) else { return false };
    lint::config_for(ast.directives.check.as_deref(), build_args).is_ok_and(|c| c.error)
}

/// Prints the build's warnings summary when dropped (after the build).
pub struct Summary {
    text: String,
}

impl Drop for Summary {
    fn drop(&mut self) {
        if !self.text.is_empty() {
            eprint!("{}", self.text);
        }
    }
}

/// `--build-arg`s as the check sees them.
pub fn lint_input(file: &str, build_args: &BTreeMap<String, String>, target: Option<&str>, platform: Option<&str>, dockerignore: &[String]) -> lint::Input {
    lint::Input {
        file: shown_name(file),
        build_args: build_args.clone(),
        target: target.map(str::to_string),
        platform: platform.map(str::to_string),
        dockerignore: dockerignore.to_vec(),
        ..Default::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn call_values_as_buildx() {
        assert_eq!(requested(None, Some("true")).unwrap().unwrap().name, "lint");
        let c = requested(Some("check,format=json"), None).unwrap().unwrap();
        assert_eq!((c.name.as_str(), c.format.as_str()), ("lint", "json"));
        assert_eq!(requested(Some("build"), None).unwrap(), None);
        assert!(requested(Some("outline,color=red"), None).is_err());
        assert!(requested(Some("frobnicate"), None).is_err());
        assert_eq!(requested(Some("targets"), Some("false")).unwrap().unwrap().name, "targets");
    }
}
