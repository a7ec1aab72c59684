//! Lowering one instruction: RUN and COPY/ADD go to their own files; every
//! other instruction edits the image config and writes the history text
//! BuildKit writes.

use super::{expand_err, Lowerer};
use super::copy::lower_copy;
use super::run::lower_run;
use super::scope::Scope;
use crate::error::Error;
use crate::instructions::{Command, Instruction, ShellOrExec};
use crate::ir::{ConfigEdit, NodeId, Op, Origin};

/// Go's `path.Clean` of an absolute path: `.`, `..` and repeated slashes
/// resolved, no trailing slash.
fn clean_path(p: &str) -> String {
    format!("/{}", crate::path::clean_below_root(p))
}

/// The ports of one EXPOSE word as Docker's `nat.ParsePortSpecs`:
/// `80` -> `80/tcp`, `443/UDP` -> `443/udp`, `8000-8001` -> both ports;
/// of `IP:HOST:CONTAINER` only the container port counts.
fn expose_ports(word: &str) -> Result<Vec<String>, String> {
    let word = word.rsplit(':').next().unwrap_or(word);
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let num = |s: &str| s.parse::<u16>().map_err(|_| format!("invalid containerPort: {ports}"));
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(ports)?, num(ports)?),
    };
    if hi < lo {
        return Err(format!("invalid range specified for container port: {ports}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Go's `%q` of a `[]string`: `["a" "b c"]` (BuildKit's CMD/ENTRYPOINT history).
fn go_quoted_list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|a| crate::quote::go_quote(a)).collect::<Vec<_>>().join(" "))
}

pub(super) fn lower_instruction(
    l: &mut Lowerer<'_>,
    index: usize,
    ins: &Instruction,
    o: Origin,
    state: NodeId,
    scope: &mut Scope,
) -> Result<NodeId, Error> {
    let sp = ins.span;
    let lexer = l.a.lexer;
    let x = |word: &str, scope: &Scope| lexer.process_word(word, scope).map_err(expand_err(sp));
    let config = |l: &mut Lowerer<'_>, edit: ConfigEdit, o: Origin, created_by: Option<String>| {
        l.push(Op::Config { base: state, edit }, Some(o), created_by)
    };
    Ok(match &ins.command {
        Command::Run(r) => lower_run(l, r, state, index, o, scope)?,
        Command::Copy(c) | Command::Add(c) => {
            let add = matches!(ins.command, Command::Add(_));
            lower_copy(l, c, add, state, index, o, scope)?
        }
        Command::Env(kvs) => {
            let mut pairs = Vec::new();
            for kv in kvs {
                // Every value of one ENV sees the values from before the instruction.
                pairs.push((x(&kv.key, scope)?, x(&kv.value, scope)?));
            }
            for (k, v) in &pairs {
                scope.env.insert(k.clone(), v.clone());
                scope.vars.insert(k.clone(), v.clone());
            }
            let shown = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
            config(l, ConfigEdit::Env(pairs), o, Some(format!("ENV {shown}")))
        }
        Command::Arg(decls) => {
            // History shows each name with the value in effect: the build
            // arg, else the expanded default, else the global value (`ARG
            // LEVEL=2` for `ARG LEVEL=1` with --build-arg LEVEL=2, `ARG
            // TARGETOS=linux`; compat case `target-and-build-args`); a name
            // without any value alone.
            let mut shown = Vec::new();
            for d in decls {
                let value = match (l.opts.build_args.get(&d.name), &d.default, l.a.meta.get(&d.name)) {
                    (Some(v), _, _) => Some(v.clone()),
                    (None, Some(def), _) => Some(x(def, scope)?),
                    (None, None, Some(m)) => Some(m.clone()),
                    (None, None, None) => None,
                };
                match &value {
                    Some(v) => shown.push(format!("{}={v}", d.name)),
                    None => shown.push(d.name.clone()),
                }
                if let Some(v) = value {
                    scope.vars.insert(d.name.clone(), v);
                }
                if !scope.declared.contains(&d.name) {
                    scope.declared.push(d.name.clone());
                }
            }
            // BuildKit records every ARG in the history (empty layer).
            config(l, ConfigEdit::Nothing, o, Some(format!("ARG {}", shown.join(" "))))
        }
        Command::Label(kvs) => {
            let mut pairs = Vec::new();
            for kv in kvs {
                pairs.push((x(&kv.key, scope)?, x(&kv.value, scope)?));
            }
            let shown = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
            config(l, ConfigEdit::Label(pairs), o, Some(format!("LABEL {shown}")))
        }
        Command::Workdir(w) => {
            // BuildKit 20.10 keeps an absolute path as written and joins a
            // relative one to the current WorkingDir with Go's path.Join
            // (cleaned: `..` resolved); history and config show the result
            // (compat case `workdir-relative`).
            let w = x(w, scope)?;
            let wd = if w.starts_with('/') { w } else { clean_path(&format!("/{}/{w}", scope.workdir)) };
            scope.workdir = wd.clone();
            config(l, ConfigEdit::Workdir(wd.clone()), o, Some(format!("WORKDIR {wd}")))
        }
        Command::User(u) => {
            let u = x(u, scope)?;
            config(l, ConfigEdit::User(u.clone()), o, Some(format!("USER {u}")))
        }
        Command::Cmd(c) | Command::Entrypoint(c) => {
            let is_cmd = matches!(ins.command, Command::Cmd(_));
            let argv: Vec<String> = match c {
                ShellOrExec::Shell(s) => scope.shell.iter().cloned().chain([s.clone()]).collect(),
                ShellOrExec::Exec(v) => v.clone(),
            };
            let shown = format!("{} {}", if is_cmd { "CMD" } else { "ENTRYPOINT" }, go_quoted_list(&argv));
            if is_cmd {
                scope.cmd = Some(argv.clone());
                return Ok(config(l, ConfigEdit::Cmd(argv), o, Some(shown)));
            }
            let node = config(l, ConfigEdit::Entrypoint(argv), o.clone(), Some(shown));
            // The Entrypoint edit resets CMD (right for an inherited one);
            // BuildKit keeps a CMD set earlier in this stage (compat case
            // `cmd-reset`), so set it again, without a history entry.
            match scope.cmd.clone() {
                Some(cmd) => l.push(Op::Config { base: node, edit: ConfigEdit::Cmd(cmd) }, Some(o), None),
                None => node,
            }
        }
        Command::Expose(ports) => {
            // BuildKit sorts the words as written (bytewise, before
            // expansion), expands each into words (an empty expansion,
            // `$UNSET`, gives none; compat case `expose-empty-words`) and
            // prints the ports as a Go list in that order, ranges expanded,
            // duplicates kept (compat cases `expose-order`, `expose-ranges`).
            let mut sorted: Vec<&String> = ports.iter().collect();
            sorted.sort();
            let mut out = Vec::new();
            for p in sorted {
                for w in l.a.lexer.process_words(p, scope).map_err(expand_err(sp))? {
                    out.extend(expose_ports(&w).map_err(|m| Error::invalid(sp, "EXPOSE", m))?);
                }
            }
            let shown = format!("EXPOSE [{}]", out.join(" "));
            config(l, ConfigEdit::Expose(out), o, Some(shown))
        }
        Command::Shell(v) => {
            scope.shell = v.clone();
            config(l, ConfigEdit::Shell(v.clone()), o, Some(format!("SHELL [{}]", v.join(" "))))
        }
        Command::Volume(vs) => {
            let mut out = Vec::new();
            for v in vs {
                let v = x(v, scope)?;
                if v.is_empty() {
                    return Err(Error::invalid(sp, "VOLUME", "VOLUME specified can not be an empty string"));
                }
                out.push(v);
            }
            let shown = format!("VOLUME [{}]", out.join(" "));
            config(l, ConfigEdit::Volume(out), o, Some(shown))
        }
        Command::StopSignal(s) => {
            let s = x(s, scope)?;
            crate::health::check_signal(&s).map_err(|m| Error::invalid(sp, "STOPSIGNAL", m))?;
            config(l, ConfigEdit::StopSignal(s.clone()), o, Some(format!("STOPSIGNAL {s}")))
        }
        Command::Healthcheck(h) => {
            let health = crate::health::health(h).map_err(|m| Error::invalid(sp, "HEALTHCHECK", m))?;
            let shown = crate::health::history(&health);
            config(l, ConfigEdit::Healthcheck(health), o, Some(shown))
        }
        Command::Onbuild(trigger) => {
            scope.onbuild.push((**trigger).clone());
            // The trigger as written after ONBUILD (BuildKit's `Expression`);
            // BuildKit adds no history entry for ONBUILD.
            let text = ins.original.trim_start();
            let expr = text.split_once(char::is_whitespace).map_or("", |(_, r)| r.trim()).to_string();
            config(l, ConfigEdit::Onbuild(expr), o, None)
        }
        Command::Maintainer(m) => config(l, ConfigEdit::Maintainer(m.clone()), o, Some(format!("MAINTAINER {m}"))),
        Command::From(_) => return Err(Error::invalid(sp, "FROM", "unexpected FROM inside a stage")),
    })
}
