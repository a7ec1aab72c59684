//! BuildKit's other Dockerfile subrequests, answered from the text alone:
//! `targets` (every stage with its doc comment), `outline` (the build
//! arguments, secrets and SSH sockets the target stage uses, with their
//! values and doc comments) and `subrequests.describe`. Each gives the JSON
//! BuildKit returns and the text buildx prints from it.

use crate::instructions::{Command, Dockerfile};
use crate::lexer::Lexer;
use crate::lint::gojson::J;
use crate::lint::print::{base64, location_json};
use crate::lint::walk::{self, Base, Env};
use crate::lint::Input;
use std::collections::{BTreeMap, BTreeSet};

/// The doc comment of `name`: the first comment line above it that starts
/// with `name ` (BuildKit's `getDocComment`).
fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    comments.iter().find_map(|c| c.strip_prefix(&format!("{name} ")).map(str::to_string)).unwrap_or_default()
}

struct Parsed {
    df: Dockerfile,
    comments: BTreeMap<usize, Vec<String>>,
}

fn parse(text: &str) -> Result<Parsed, String> {
    let ast = crate::parser::parse(text).map_err(|e| e.kind.to_string())?;
    let comments = crate::lint::source::node_infos(&ast).into_iter().map(|i| (i.start, i.comments)).collect();
    let df = crate::instructions::from_ast(&ast).map_err(|e| e.kind.to_string())?;
    Ok(Parsed { df, comments })
}

/// `--call=targets` result (render it for the JSON).
pub fn targets(text: &str) -> Result<J, String> {
    let p = parse(text)?;
    let n = p.df.stages.len();
    let mut targets = Vec::new();
    for (i, st) in p.df.stages.iter().enumerate() {
        let Command::From(f) = &st.from.command else { continue };
        let mut m: Vec<(String, J)> = Vec::new();
        let name = st.name().unwrap_or("");
        if !name.is_empty() {
            m.push(("name".into(), J::s(name)));
        }
        if i == n - 1 {
            m.push(("default".into(), J::Bool(true)));
        }
        let desc = doc_comment(p.comments.get(&st.from.span.line).map(Vec::as_slice).unwrap_or(&[]), name);
        if !desc.is_empty() {
            m.push(("description".into(), J::s(desc)));
        }
        m.push(("base".into(), J::s(&f.image)));
        if let Some(pl) = &f.platform {
            m.push(("platform".into(), J::s(pl)));
        }
        m.push(("location".into(), location_json(&[(st.from.span.line, st.from.end_line)])));
        targets.push(J::Obj(m));
    }
    Ok(J::Obj(vec![("targets".into(), J::Arr(targets)), ("sources".into(), J::Arr(vec![J::s(base64(text.as_bytes()))]))]))
}

/// `--call=targets` text (buildx's `PrintTargets`).
pub fn targets_text(v: &J) -> String {
    let mut rows = vec![vec!["TARGET".to_string(), "DESCRIPTION".to_string()]];
    for t in v.items("targets") {
        let name = t.str_or_empty("name");
        let name = name.as_str();
        let default = t.is_true("default");
        let shown = match (name.is_empty(), default) {
            (true, true) => "(default)".to_string(),
            (false, true) => format!("{name} (default)"),
            _ => name.to_string(),
        };
        rows.push(vec![shown, t.str_or_empty("description")]);
    }
    tabwrite(&rows, 1)
}

/// Go's `text/tabwriter` for rows of equal length: every cell but the last
/// padded to its column's widest cell plus `padding` spaces.
pub fn tabwrite(rows: &[Vec<String>], padding: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + padding));
            }
        }
        out.push('\n');
    }
    out
}

#[derive(Clone)]
struct ArgInfo {
    name: String,
    value: String,
    description: String,
    line: (usize, usize),
    deps: BTreeSet<String>,
}

#[derive(Default, Clone)]
struct StageOutline {
    all: BTreeMap<String, ArgInfo>,
    used: BTreeSet<String>,
    secrets: Vec<(String, bool, (usize, usize))>,
    ssh: Vec<(String, bool, (usize, usize))>,
    deps: Vec<usize>,
    base: Option<usize>,
}

/// `--call=outline` result for `input.target` (default: the last stage).
pub fn outline(text: &str, input: &Input) -> Result<J, String> {
    let p = parse(text)?;
    let df = &p.df;
    let lexer = Lexer::new(df.directives.escape);
    let target = match &input.target {
        Some(t) => {
            let l = t.to_lowercase();
            df.stages.iter().position(|s| s.name() == Some(l.as_str())).ok_or_else(|| format!("target stage {} could not be found", crate::lint::rules::go_quote(t)))?
        }
        None => df.stages.len() - 1,
    };
    let target_name = df.stages[target].name().unwrap_or("").to_string();
    // Global args with their values and dependencies.
    let mut env = walk::default_args(input, &target_name);
    let mut global: BTreeMap<String, ArgInfo> = BTreeMap::new();
    for inst in &df.meta_args {
        let Command::Arg(decls) = &inst.command else { continue };
        let comments = p.comments.get(&inst.span.line).cloned().unwrap_or_default();
        for d in decls {
            let mut deps = BTreeSet::new();
            let value = match input.build_args.get(&d.name) {
                Some(v) => Some(v.clone()),
                None => match &d.default {
                    Some(raw) => {
                        let ex = lexer.process_word_with_matches(raw, &env).map_err(|e| e.0)?;
                        deps = ex.matched.clone();
                        if deps.remove(&d.name) {
                            if let Some(old) = global.get(&d.name) {
                                deps.extend(old.deps.iter().cloned());
                            }
                        }
                        Some(ex.value)
                    }
                    None => None,
                },
            };
            if let Some(v) = &value {
                env.set(&d.name, v);
            }
            global.insert(
                d.name.clone(),
                ArgInfo { name: d.name.clone(), value: value.unwrap_or_default(), description: doc_comment(&comments, &d.name), line: (inst.span.line, inst.end_line), deps },
            );
        }
    }
    let bases = walk::stage_bases(df, &lexer, &env);
    let find = |name: &str| -> Option<usize> {
        if let Ok(i) = name.parse::<usize>() {
            return (i < df.stages.len()).then_some(i);
        }
        let l = name.to_lowercase();
        df.stages.iter().position(|s| s.name() == Some(l.as_str()))
    };
    let mut outlines: Vec<StageOutline> = Vec::new();
    for (i, st) in df.stages.iter().enumerate() {
        let mut o = StageOutline { all: global.clone(), ..Default::default() };
        if let Command::From(f) = &st.from.command {
            for w in std::iter::once(&f.image).chain(f.platform.iter()) {
                if let Ok(ex) = lexer.process_word_with_matches(w, &env) {
                    o.used.extend(ex.matched);
                }
            }
        }
        if let Some(Some(Base::Stage(b))) = bases.get(i) {
            o.base = Some(*b);
        }
        let mut vars = Env::default();
        // The base stage's ONBUILD triggers run first, at this stage's FROM.
        let mut insts: Vec<(&crate::instructions::Instruction, Option<(usize, usize)>)> = Vec::new();
        if let Some(b) = o.base {
            for inst in &df.stages[b].instructions {
                if let Command::Onbuild(t) = &inst.command {
                    insts.push((t.as_ref(), Some((st.from.span.line, st.from.end_line))));
                }
            }
        }
        insts.extend(st.instructions.iter().map(|i| (i, None)));
        for (inst, at) in insts {
            let loc = at.unwrap_or((inst.span.line, inst.end_line));
            match &inst.command {
                Command::Arg(decls) => {
                    let comments = if at.is_some() { Vec::new() } else { p.comments.get(&inst.span.line).cloned().unwrap_or_default() };
                    for d in decls {
                        let given = input.build_args.get(&d.name);
                        let inherited = d.default.is_none() && given.is_none() && env.get(&d.name).is_some();
                        let value = match (given, &d.default) {
                            (Some(v), _) => Some(v.clone()),
                            (None, Some(raw)) => lexer.process_word(raw, &vars).ok(),
                            (None, None) => env.get(&d.name).map(str::to_string),
                        };
                        if let Some(v) = &value {
                            vars.set(&d.name, v);
                        }
                        if !inherited {
                            o.all.insert(
                                d.name.clone(),
                                ArgInfo { name: d.name.clone(), value: value.unwrap_or_default(), description: doc_comment(&comments, &d.name), line: loc, deps: BTreeSet::new() },
                            );
                        }
                        o.used.insert(d.name.clone());
                    }
                }
                Command::Env(kvs) => {
                    for kv in kvs {
                        if let (Ok(k), Ok(v)) = (lexer.process_word(&kv.key, &vars), lexer.process_word(&kv.value, &vars)) {
                            vars.set(&k, &v);
                        }
                    }
                }
                Command::Copy(c) | Command::Add(c) => {
                    if let Some(j) = c.from.as_deref().and_then(find) {
                        o.deps.push(j);
                    }
                }
                Command::Run(r) => {
                    for m in &r.mounts {
                        let Some(spec) = &m.value else { continue };
                        let fields: BTreeMap<String, String> = crate::mounts::csv_fields(spec)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|f| match f.split_once('=') {
                                Some((k, v)) => (k.to_lowercase(), lexer.process_word(v, &vars).unwrap_or_else(|_| v.to_string())),
                                None => (f.to_lowercase(), "true".to_string()),
                            })
                            .collect();
                        if let Some(j) = fields.get("from").and_then(|f| find(f)) {
                            o.deps.push(j);
                        }
                        let required = fields.get("required").is_some_and(|v| v == "true");
                        match fields.get("type").map(String::as_str) {
                            Some("secret") => {
                                let id = fields
                                    .get("source")
                                    .or_else(|| fields.get("src"))
                                    .or_else(|| fields.get("id"))
                                    .cloned()
                                    .or_else(|| fields.get("target").or_else(|| fields.get("dst")).or_else(|| fields.get("destination")).map(|t| t.rsplit('/').next().unwrap_or("").to_string()))
                                    .unwrap_or_default();
                                if !o.secrets.iter().any(|s| s.0 == id) {
                                    o.secrets.push((id, required, loc));
                                }
                            }
                            Some("ssh") => {
                                let id = fields.get("id").cloned().unwrap_or_else(|| "default".into());
                                if !o.ssh.iter().any(|s| s.0 == id) {
                                    o.ssh.push((id, required, loc));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        outlines.push(o);
    }
    // Collect from the target, its base chain and dependencies.
    let mut args: Vec<ArgInfo> = Vec::new();
    let mut secrets = Vec::new();
    let mut ssh = Vec::new();
    let (mut seen_args, mut seen_secrets, mut seen_ssh) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut visited_stages = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !visited_stages.insert(i) {
            continue;
        }
        let o = &outlines[i];
        let mut used = BTreeSet::new();
        let mut stack: Vec<String> = o.used.iter().cloned().collect();
        while let Some(k) = stack.pop() {
            if used.insert(k.clone()) {
                if let Some(a) = o.all.get(&k) {
                    stack.extend(a.deps.iter().cloned());
                }
            }
        }
        for k in &used {
            if let Some(a) = o.all.get(k) {
                if seen_args.insert(k.clone()) {
                    args.push(a.clone());
                }
            }
        }
        for s in &o.secrets {
            if seen_secrets.insert(s.0.clone()) {
                secrets.push(s.clone());
            }
        }
        for s in &o.ssh {
            if seen_ssh.insert(s.0.clone()) {
                ssh.push(s.clone());
            }
        }
        // Depth-first as BuildKit: base first, then dependencies.
        for d in o.deps.iter().rev() {
            todo.push(*d);
        }
        if let Some(b) = o.base {
            todo.push(b);
        }
    }
    args.sort_by_key(|a| a.line.0);
    secrets.sort_by_key(|s| s.2 .0);
    ssh.sort_by_key(|s| s.2 .0);
    let mut m: Vec<(String, J)> = Vec::new();
    let st = &df.stages[target];
    if !target_name.is_empty() {
        m.push(("name".into(), J::s(&target_name)));
    }
    let desc = doc_comment(p.comments.get(&st.from.span.line).map(Vec::as_slice).unwrap_or(&[]), &target_name);
    if !desc.is_empty() {
        m.push(("description".into(), J::s(desc)));
    }
    if !args.is_empty() {
        let list = args
            .iter()
            .map(|a| {
                let mut am = vec![("name".to_string(), J::s(&a.name))];
                if !a.description.is_empty() {
                    am.push(("description".into(), J::s(&a.description)));
                }
                if !a.value.is_empty() {
                    am.push(("value".into(), J::s(&a.value)));
                }
                am.push(("location".into(), location_json(&[a.line])));
                J::Obj(am)
            })
            .collect();
        m.push(("args".into(), J::Arr(list)));
    }
    let named = |list: &[(String, bool, (usize, usize))]| -> J {
        J::Arr(
            list.iter()
                .map(|(name, req, loc)| {
                    let mut sm = vec![("name".to_string(), J::s(name))];
                    if *req {
                        sm.push(("required".into(), J::Bool(true)));
                    }
                    sm.push(("location".into(), location_json(&[*loc])));
                    J::Obj(sm)
                })
                .collect(),
        )
    };
    if !secrets.is_empty() {
        m.push(("secrets".into(), named(&secrets)));
    }
    if !ssh.is_empty() {
        m.push(("ssh".into(), named(&ssh)));
    }
    m.push(("sources".into(), J::Arr(vec![J::s(base64(text.as_bytes()))])));
    Ok(J::Obj(m))
}

/// `--call=outline` text (buildx's `PrintOutline`).
pub fn outline_text(v: &J) -> String {
    let mut out = String::new();
    let (name, desc) = (v.str_or_empty("name"), v.str_or_empty("description"));
    if !name.is_empty() || !desc.is_empty() {
        let mut rows = vec![vec!["TARGET:".to_string(), if name.is_empty() { "(default)".into() } else { name }]];
        if !desc.is_empty() {
            rows.push(vec!["DESCRIPTION:".into(), desc]);
        }
        out.push_str(&tabwrite(&rows, 1));
        out.push('\n');
    }
    let args = v.items("args");
    if !args.is_empty() {
        let mut rows = vec![vec!["BUILD ARG".to_string(), "VALUE".into(), "DESCRIPTION".into()]];
        rows.extend(args.iter().map(|a| vec![a.str_or_empty("name"), a.str_or_empty("value"), a.str_or_empty("description")]));
        out.push_str(&tabwrite(&rows, 3));
        out.push('\n');
    }
    for (key, head) in [("secrets", "SECRET"), ("ssh", "SSH")] {
        let list = v.items(key);
        if !list.is_empty() {
            let mut rows = vec![vec![head.to_string(), "REQUIRED".into()]];
            rows.extend(list.iter().map(|x| vec![x.str_or_empty("name"), if x.is_true("required") { "true".into() } else { String::new() }]));
            out.push_str(&tabwrite(&rows, 3));
            out.push('\n');
        }
    }
    out
}

/// The subrequests the Dockerfile frontend answers, as BuildKit describes them.
const REQUESTS: [(&str, &str, bool); 3] = [
    ("frontend.outline", "List all parameters current build target supports", true),
    ("frontend.targets", "List all targets current build supports", false),
    ("frontend.subrequests.describe", "List available subrequest types", false),
];

/// `--call=subrequests.describe` result.
pub fn describe() -> J {
    let meta = || {
        J::Arr(
            ["result.json", "result.txt"]
                .iter()
                .map(|n| J::Obj(vec![("name".into(), J::s(*n)), ("description".into(), J::s(""))]))
                .collect(),
        )
    };
    J::Arr(
        REQUESTS
            .iter()
            .map(|(name, desc, has_target)| {
                let opts = if *has_target {
                    J::Arr(vec![J::Obj(vec![("name".into(), J::s("target")), ("description".into(), J::s("Target build stage"))])])
                } else if *name == "frontend.targets" {
                    J::Arr(vec![])
                } else {
                    J::Null
                };
                J::Obj(vec![
                    ("name".into(), J::s(*name)),
                    ("version".into(), J::s("1.0.0")),
                    ("type".into(), J::s("rpc")),
                    ("description".into(), J::s(*desc)),
                    ("opts".into(), opts),
                    ("inputs".into(), J::Null),
                    ("metadata".into(), meta()),
                    ("refs".into(), J::Null),
                ])
            })
            .collect(),
    )
}

/// `--call=subrequests.describe` text.
pub fn describe_text() -> String {
    let mut rows = vec![vec!["NAME".to_string(), "VERSION".into(), "DESCRIPTION".into()]];
    rows.extend(REQUESTS.iter().map(|(n, d, _)| vec![n.trim_start_matches("frontend.").to_string(), "1.0.0".into(), d.to_string()]));
    tabwrite(&rows, 1)
}
