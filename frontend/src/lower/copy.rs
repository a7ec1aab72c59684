//! Lowering COPY and ADD: local, Git and HTTP sources, heredoc files,
//! `--from`, `--chown`/`--chmod` and the history text BuildKit writes.

use super::{expand_err, flag_span, Lowerer};
use super::run::single_heredoc;
use super::scope::Scope;
use crate::error::Error;
use crate::instructions::Copy;
use crate::ir::{CopyOp, InlineFile, NodeId, Op, Origin, RemoteSource};
use crate::lexer::Lexer;

#[allow(clippy::too_many_arguments)]
pub(super) fn lower_copy(l: &mut Lowerer<'_>, c: &Copy, add: bool, base: NodeId, index: usize, o: Origin, scope: &Scope) -> Result<NodeId, Error> {
    let sp = o.span;
    let instr = if add { "ADD" } else { "COPY" };
    let lexer = l.a.lexer;
    let x = |w: &str| lexer.process_word(w, scope).map_err(expand_err(sp));
    if single_heredoc(&c.dest).is_some() {
        return Err(Error::invalid(sp, instr, "a heredoc cannot be the destination"));
    }
    let mut local = Vec::new();
    let mut shown_sources = Vec::new();
    let mut files = Vec::new();
    let mut remote = Vec::new();
    let mut checksum = c.checksum.as_deref().map(x).transpose()?;
    let mut keep_git_dir = c.keep_git_dir;
    for raw in &c.sources {
        if let Some(name) = single_heredoc(raw) {
            let Some(h) = c.heredocs.iter().find(|h| h.name == name) else {
                return Err(Error::invalid(sp, instr, format!("heredoc <<{name} has no body")));
            };
            let content = if h.expand {
                // BuildKit expands COPY heredoc bodies with quotes taken literally.
                Lexer::new('\\').skip_quotes().process_word(&h.content, scope).map_err(expand_err(sp))?
            } else {
                h.content.clone()
            };
            files.push(InlineFile { path: name, content, mode: 0o644 });
            continue;
        }
        let s = x(raw)?;
        // `github.com/x/y` without a scheme is a local path to ADD (BuildKit
        // accepts that form for build contexts only).
        let git = crate::remote::parse_git_ref(&s)
            .map_err(|e| Error::invalid(sp, instr, format!("{s}: {e}")))?
            .filter(|g| !g.indistinguishable_from_local);
        if let Some(g) = git {
            if !add {
                return Err(Error::invalid(sp, instr, format!("source can't be a git ref for COPY: {s} (use ADD)")));
            }
            if let (Some(a), Some(b)) = (c.keep_git_dir.then_some(true), g.keep_git_dir) {
                if a != b {
                    return Err(Error::invalid(sp, instr, "inconsistent keep-git-dir configuration"));
                }
            }
            keep_git_dir = keep_git_dir || g.keep_git_dir.unwrap_or(false);
            match (&checksum, &g.checksum) {
                (Some(a), Some(b)) if a != b => return Err(Error::invalid(sp, instr, format!("checksum mismatch {a:?} != {b:?}"))),
                (None, Some(b)) => checksum = Some(b.clone()),
                _ => {}
            }
            let node = l.push(
                Op::Git {
                    remote: g.remote,
                    reference: g.reference,
                    subdir: g.subdir,
                    keep_git_dir,
                    checksum: checksum.clone(),
                    skip_submodules: g.submodules == Some(false),
                },
                None,
                None,
            );
            remote.push(RemoteSource { source: node, path: "/".into() });
        } else if crate::remote::is_http(&s) {
            if !add {
                return Err(Error::invalid(sp, instr, format!("source can't be a URL for COPY: {s} (use ADD)")));
            }
            if let Some(cs) = &checksum {
                if !cs.contains(':') {
                    return Err(Error::invalid(flag_span(&o, "checksum"), instr, format!("invalid checksum digest format {cs:?} (expected ALGORITHM:HEX)")));
                }
            }
            let filename = crate::remote::http_filename(&s);
            let node = l.push(Op::Http { url: s.clone(), checksum: checksum.clone(), filename: filename.clone() }, None, None);
            remote.push(RemoteSource { source: node, path: filename });
        } else {
            local.push(s.clone());
        }
        shown_sources.push(s);
    }
    if checksum.is_some() && remote.is_empty() {
        return Err(Error::invalid(flag_span(&o, "checksum"), instr, "checksum requires HTTP(S) or Git sources"));
    }
    let dest = x(&c.dest)?;
    let chown = c.chown.as_deref().map(x).transpose()?;
    let chmod = c.chmod.as_deref().map(x).transpose()?;
    if let Some(m) = &chmod {
        if !crate::remote::valid_chmod(m) {
            return Err(Error::invalid(flag_span(&o, "chmod"), instr, format!("invalid --chmod={m}: expected octal (755) or symbolic (u+x, u=rwX,go=rX) permissions")));
        }
    }
    let mut exclude = Vec::new();
    for e in &c.exclude {
        exclude.push(x(e)?);
    }
    let source = match &c.from {
        Some(f) => {
            let f = x(f)?;
            l.resolve(&f, index, sp, &format!("{instr} --from"))?
        }
        None if !local.is_empty() => l.context(),
        None => l.image("scratch", None),
    };
    // BuildKit's history shows --parents, then --chown and --chmod as
    // expanded (compat cases `copy-chown`, `copy-chmod`, `chown-expand`).
    let mut shown = instr.to_string();
    if c.parents {
        shown.push_str(" --parents");
    }
    if let Some(u) = chown.as_deref().filter(|u| !u.is_empty()) {
        shown.push_str(&format!(" --chown={u}"));
    }
    if let Some(m) = chmod.as_deref().filter(|m| !m.is_empty()) {
        shown.push_str(&format!(" --chmod={m}"));
    }
    for s in &shown_sources {
        shown.push_str(&format!(" {s}"));
    }
    for f in &files {
        shown.push_str(&format!(" <<{}", f.path));
    }
    shown.push_str(&format!(" {dest} # buildkit"));
    let op = CopyOp {
        base,
        source,
        sources: local,
        dest,
        chown,
        chmod,
        link: c.link,
        parents: c.parents,
        exclude,
        add,
        checksum,
        keep_git_dir,
        unpack: c.unpack,
        files,
        layer_name: None,
        remote,
    };
    Ok(l.push(Op::Copy(op), Some(o), Some(shown)))
}
