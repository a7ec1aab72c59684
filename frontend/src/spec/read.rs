//! Reading a spec's JSON into [`Spec`], and the one error type of the spec
//! frontend: every message names the file, the JSON path of the value it is
//! about (`tasks[1].steps[0].stepType`), the line and column when the JSON
//! reader knows them, and what was expected.

use super::format::{Spec, BUILT_STEPS, PATH_MARK};

/// A spec that cannot be read or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SpecError {
    /// The spec file as the user named it.
    pub file: String,
    /// JSON path of the value (`tasks[1].steps[0]`), empty for the whole file.
    pub path: String,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl SpecError {
    /// An error about the value at `path`.
    pub fn at(file: &str, path: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError { file: file.to_string(), path: path.into(), position: None, message: message.into() }
    }

    /// `file[:line:col]: path: message`.
    pub fn render(&self) -> String {
        let place = match self.position {
            Some((l, c)) => format!("{}:{l}:{c}", self.file),
            None => self.file.clone(),
        };
        if self.path.is_empty() {
            format!("{place}: {}", self.message)
        } else {
            format!("{place}: {}: {}", self.path, self.message)
        }
    }
}

/// Parse `text` (the contents of `file`) as a spec.
pub fn read(file: &str, text: &str) -> Result<Spec, SpecError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let spec: Spec = serde_path_to_error::deserialize(&mut de).map_err(|e| from_serde(file, e))?;
    de.end().map_err(|e| SpecError {
        file: file.to_string(),
        path: String::new(),
        position: Some((e.line(), e.column())),
        message: "unexpected text after the spec's closing `}`".into(),
    })?;
    Ok(spec)
}

fn from_serde(file: &str, e: serde_path_to_error::Error<serde_json::Error>) -> SpecError {
    let mut path = e.path().to_string();
    if path == "." {
        path.clear();
    }
    let inner = e.inner();
    let position = (inner.line() > 0).then(|| (inner.line(), inner.column()));
    // serde's message, without its own " at line N column M" (we put the position first).
    let mut message = inner.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    // An error inside a step: its path within the step is in the message.
    let marked: Vec<&str> = message.split(PATH_MARK).collect();
    if let [before, inner, rest] = marked[..] {
        if !inner.is_empty() {
            if !inner.starts_with('[') {
                path.push('.');
            }
            path.push_str(inner);
        }
        message = format!("{before}{rest}");
    }
    if let Some(name) = unknown_variant(&message).filter(|_| is_step(&path)) {
        path.push_str(".stepType");
        message = format!(
            "unknown step type `{name}`; expected one of: {} (0.0's copy-changeset, copy-layer-stack and dump-objects are recognised but not built)",
            BUILT_STEPS.join(", ")
        );
    } else if is_step(&path) && message.contains("missing field `stepType`") {
        message = format!("a step needs `stepType`, one of: {}", BUILT_STEPS.join(", "));
    }
    if message.starts_with("EOF while parsing") {
        message = format!("{message}: the JSON ends too early (an unclosed `{{` or `[`?)");
    }
    SpecError { file: file.to_string(), path, position, message }
}

/// Whether `path` is a step (`tasks[i].steps[j]` or `timelines[i].steps[j]`).
fn is_step(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("tasks[").or_else(|| path.strip_prefix("timelines[")) else { return false };
    let Some((_, after)) = rest.split_once("].steps[") else { return false };
    after.ends_with(']') && after[..after.len() - 1].chars().all(|c| c.is_ascii_digit())
}

/// The name in serde's "unknown variant `x`, expected ...".
fn unknown_variant(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown variant `")?;
    Some(&rest[..rest.find('`')?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_paths() {
        assert!(is_step("tasks[1].steps[0]"));
        assert!(is_step("timelines[10].steps[22]"));
        assert!(!is_step("tasks[1].steps[0].spec"));
        assert!(!is_step("images[0]"));
    }

    #[test]
    fn render_with_and_without_position() {
        let mut e = SpecError::at("s.json", "tasks[0]", "bad");
        assert_eq!(e.render(), "s.json: tasks[0]: bad");
        e.position = Some((3, 7));
        assert_eq!(e.render(), "s.json:3:7: tasks[0]: bad");
    }
}
