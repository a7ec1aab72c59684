//! Lowering RUN: `--network`, `--security`, `--mount`s (their targets
//! resolved against the WORKDIR), heredocs, the step's environment and the
//! history text (BuildKit's `runCommandString`).

use super::{flag_span, Lowerer};
use super::scope::{PROXY_ARGS, Scope};
use crate::error::Error;
use crate::instructions::{Heredoc, Run, ShellOrExec};
use crate::ir::{Exec, InlineFile, Mount, MountKind, Network, NodeId, Op, Origin};
use std::collections::BTreeMap;

pub(super) fn lower_run(l: &mut Lowerer<'_>, r: &Run, base: NodeId, index: usize, o: Origin, scope: &Scope) -> Result<NodeId, Error> {
    let network = match r.network.as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(other) => return Err(Error::invalid(flag_span(&o, "network"), "RUN", format!("unknown --network={other} (expected default, none or host)"))),
    };
    let insecure = match r.security.as_deref() {
        None | Some("sandbox") => false,
        Some("insecure") => true,
        Some(other) => return Err(Error::invalid(flag_span(&o, "security"), "RUN", format!("unknown --security={other} (expected sandbox or insecure)"))),
    };
    let lexer = l.a.lexer;
    let mut mounts = Vec::new();
    for f in &r.mounts {
        let raw = f.value.as_deref().unwrap_or("");
        let expand = |v: &str| lexer.process_word(v, scope).map_err(|e| e.0);
        let spec = crate::mounts::parse(raw, &expand).map_err(|m| Error::invalid(f.span, "RUN --mount", m))?;
        let from = match (&spec.from, spec.kind) {
            (Some(fr), MountKind::Bind | MountKind::Cache) => Some(l.resolve(fr, index, f.span, "--mount from")?),
            (Some(_), _) => return Err(Error::invalid(f.span, "RUN --mount", "from= is only allowed for bind and cache mounts")),
            (None, MountKind::Bind) => Some(l.context()),
            (None, _) => None,
        };
        // llb's default agent socket: /run/buildkit/ssh_agent.N, N counting
        // the ssh mounts of this RUN.
        let target = match spec.kind {
            MountKind::Ssh if spec.target.is_empty() => {
                format!("/run/buildkit/ssh_agent.{}", mounts.iter().filter(|m: &&Mount| m.kind == MountKind::Ssh).count())
            }
            // BuildKit joins a relative target (none: `.`) to the WORKDIR;
            // the result may not be `/`.
            MountKind::Bind | MountKind::Cache | MountKind::Tmpfs => {
                let target = if spec.target.starts_with('/') {
                    spec.target
                } else {
                    crate::mounts::clean_path(&format!("/{}/{}", scope.workdir, spec.target))
                };
                if crate::mounts::clean_path(&target) == "/" {
                    return Err(Error::invalid(f.span, "RUN --mount", format!("invalid mount target {:?}", crate::mounts::clean_path(&target))));
                }
                target
            }
            _ => spec.target,
        };
        mounts.push(Mount {
            kind: spec.kind,
            target,
            from,
            source: spec.source,
            options: BTreeMap::new(),
            readonly: spec.readonly,
            id: spec.id,
            sharing: spec.sharing,
            size: spec.size,
            mode: spec.mode,
            uid: spec.uid,
            gid: spec.gid,
            required: spec.required,
            env: spec.env,
        });
    }
    let mut files = Vec::new();
    let argv: Vec<String> = match &r.cmd {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => {
            let cmd = if r.heredocs.is_empty() {
                s.clone()
            } else {
                heredoc_command(s, &r.heredocs, &mut files)
            };
            scope.shell.iter().cloned().chain([cmd]).collect()
        }
    };
    // The step's environment beyond the image config's Env: the state's
    // variables (ARG values) that the config does not hold with that value.
    let step_env: Vec<String> =
        scope.vars.iter().filter(|(k, v)| scope.env.get(*k) != Some(*v)).map(|(k, v)| format!("{k}={v}")).collect();
    let proxy_env: Vec<String> = PROXY_ARGS
        .iter()
        .filter(|k| !scope.vars.contains_key(**k))
        .filter_map(|k| l.opts.build_args.get(*k).map(|v| format!("{k}={v}")))
        .collect();
    // BuildKit's `runCommandString`: the ARGs declared in this stage with
    // their value in the state's environment (empty if none), then the argv
    // joined by spaces.
    let shown_args: Vec<String> =
        scope.declared.iter().map(|k| format!("{k}={}", scope.vars.get(k).map(String::as_str).unwrap_or(""))).collect();
    let prefix = if shown_args.is_empty() { String::new() } else { format!("|{} {} ", shown_args.len(), shown_args.join(" ")) };
    let shown = argv.join(" ");
    let exec = Exec { base, args: argv, env: step_env, mounts, network, insecure, files, with: vec![], layer_name: None, proxy_env, cwd: None };
    Ok(l.push(Op::Exec(exec), Some(o), Some(format!("RUN {prefix}{shown} # buildkit"))))
}

/// The shell command of a RUN with heredocs, as BuildKit's `dispatchRun`:
/// a command that is only `<<EOF` runs the body (a body starting with `#!`
/// is written to `/dev/pipes/EOF`, mode 0755, and that file is run); any
/// other command gets the bodies and delimiters appended so the shell reads
/// them as heredocs.
fn heredoc_command(cmd: &str, heredocs: &[Heredoc], files: &mut Vec<InlineFile>) -> String {
    if let (Some(_), Some(h)) = (single_heredoc(cmd), heredocs.first()) {
        if h.content.starts_with("#!") {
            let path = format!("/dev/pipes/{}", h.name);
            files.push(InlineFile { path: path.clone(), content: h.content.clone(), mode: 0o755 });
            return path;
        }
        return h.content.clone();
    }
    let mut full = cmd.to_string();
    for h in heredocs {
        // The body as written: the shell does the `<<-` tab stripping.
        full.push('\n');
        full.push_str(&h.raw);
        full.push_str(&h.name);
    }
    full
}

/// `<<EOF`-only command word (BuildKit's `reHeredoc` `^(\d*)<<(-?)\s*([^<]*)$`
/// with a single-word name).
pub(super) fn single_heredoc(word: &str) -> Option<String> {
    let w = word.trim();
    let digits = w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len());
    let rest = w[digits..].strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest).trim_start();
    if rest.is_empty() || rest.contains('<') || rest.contains(char::is_whitespace) {
        return None;
    }
    Some(rest.chars().filter(|c| *c != '"' && *c != '\'').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_heredoc_words() {
        assert_eq!(single_heredoc("<<EOF").as_deref(), Some("EOF"));
        assert_eq!(single_heredoc("<<-'EOT'").as_deref(), Some("EOT"));
        assert_eq!(single_heredoc("3<<X").as_deref(), Some("X"));
        assert_eq!(single_heredoc("cat <<EOF"), None);
        assert_eq!(single_heredoc("<<A <<B"), None);
        assert_eq!(single_heredoc("file"), None);
    }
}
