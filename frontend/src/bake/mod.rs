//! The bake frontend: bake files (HCL, JSON) in, resolved targets out, as
//! `docker buildx bake` (0.29) reads them. Pure: the caller reads the files
//! and passes the environment; nothing here touches the disk.
//!
//! Steps, as buildx: [`parse`] reads each file into raw blocks and merges
//! the files; [`eval`] evaluates variables (defaults overridden by the
//! environment) and then every group and target; [`resolve`] expands the
//! requested names through groups, merges `inherits` (cycles are errors),
//! applies `--set` overrides and normalises. [`Resolved::print_json`] is what
//! `--print` writes.
//!
//! ```
//! use std::collections::BTreeMap;
//! let file = frontend::bake::BakeFile {
//!     name: "docker-bake.hcl".into(),
//!     text: "variable \"TAG\" { default = \"dev\" }\ntarget \"app\" { tags = [\"app:${TAG}\"] }\n".into(),
//! };
//! let env = BTreeMap::from([("TAG".to_string(), "v1".to_string())]);
//! let config = frontend::bake::load(&[file], &env).expect("valid bake file");
//! let resolved = frontend::bake::resolve(&config, &["app".to_string()], &[]).expect("known target");
//! assert_eq!(resolved.targets["app"].tags, Some(vec!["app:v1".to_string()]));
//! ```

pub mod compose;
pub mod compose_env;
mod compose_yaml;
pub mod eval;
pub mod expand;
pub mod funcs;
pub mod list;
pub mod nesting;
pub mod parse;
pub mod target;
pub mod userfunc;
pub mod vars;
pub mod vartype;

use std::collections::BTreeMap;

use serde::Serialize;

pub use parse::Pos;
pub use target::{Entry, Override, Target};

/// An error in a bake file or in what was asked of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", pos.as_ref().map(|p| format!("{p}: ")).unwrap_or_default())]
pub struct BakeError {
    /// Where, when it is about a place in a file.
    pub pos: Option<Pos>,
    /// What went wrong.
    pub message: String,
}

impl BakeError {
    /// An error at a place in a file (a place without a file is dropped).
    pub fn at(pos: Pos, message: String) -> Self {
        let pos = if pos.file.is_empty() { None } else { Some(pos) };
        // hcl-rs appends the whole expression; the position and the line shown say where.
        let message = match message.find(" in expression `") {
            Some(i) if pos.is_some() => message[..i].to_string(),
            _ => message,
        };
        // The helpers the evaluation is rewritten with are not the user's functions.
        let message = message
            .replace("error calling function `__number`: ", "arithmetic: ")
            .replace("error calling function `__arith`: ", "arithmetic: ")
            .replace("error calling function `__template`: ", "");
        BakeError { pos, message }
    }
    /// The error with the line it points at, from the file it names:
    /// `NN | text` and a caret under the column.
    pub fn with_source(mut self, files: &[BakeFile]) -> Self {
        let Some(pos) = &self.pos else {
            return self;
        };
        let Some(f) = files.iter().find(|f| f.name == pos.file) else {
            return self;
        };
        if pos.line == 0 || self.message.contains('\n') {
            return self;
        }
        if let Some(line) = f.text.lines().nth(pos.line - 1) {
            let num = pos.line.to_string();
            let pad = " ".repeat(num.len());
            let caret: String = line
                .chars()
                .take(pos.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            self.message = format!("{}\n {num} | {line}\n {pad} | {caret}^", self.message);
        }
        self
    }
    /// An error not tied to a file.
    pub fn msg(message: impl Into<String>) -> Self {
        BakeError {
            pos: None,
            message: message.into(),
        }
    }
}

/// A bake file's name (as the user gave it) and text.
#[derive(Debug, Clone)]
pub struct BakeFile {
    /// The name errors show.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// The default files, in the order buildx looks for them (compose files first).
pub const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
    "docker-bake.json",
    "docker-bake.hcl",
    "docker-bake.override.json",
    "docker-bake.override.hcl",
];

/// A group of targets.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Group {
    /// Its name (the key when printed).
    #[serde(skip)]
    pub name: String,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Target or group names.
    pub targets: Vec<String>,
}

/// Every group and target of the files, evaluated, in file order.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Groups.
    pub groups: Vec<Group>,
    /// Targets (before `inherits`).
    pub targets: Vec<Target>,
    /// The environment the files were read with (`--set T.args.NAME`
    /// without a value takes NAME from it).
    pub env: BTreeMap<String, String>,
    /// The `variable` blocks with their values (`--list variables`).
    pub variables: Vec<vars::VariableInfo>,
}

/// Read and evaluate bake files (in the order given; later files override).
pub fn load(files: &[BakeFile], env: &BTreeMap<String, String>) -> Result<Config, BakeError> {
    load_with_dotenv(files, env, None)
}

/// [`load`], with the text of the `.env` file of the current directory,
/// which compose files are interpolated with (as buildx). Compose files
/// ([`compose::is_compose`]) are read together first; the bake files' targets
/// and groups are then laid over theirs.
pub fn load_with_dotenv(
    files: &[BakeFile],
    env: &BTreeMap<String, String>,
    dotenv: Option<&str>,
) -> Result<Config, BakeError> {
    let mut config = Config {
        env: env.clone(),
        ..Config::default()
    };
    let (compose_files, files): (Vec<BakeFile>, Vec<BakeFile>) = files
        .iter()
        .cloned()
        .partition(|f| compose::is_compose(&f.name, &f.text));
    if !compose_files.is_empty() {
        let cenv = compose_env::compose_env(env, dotenv).map_err(BakeError::msg)?;
        let (group, targets) = compose::load(&compose_files, &cenv)?;
        config.groups.push(group);
        config.targets = targets;
    }
    let mut parsed = Vec::new();
    for f in &files {
        parsed.push(parse::parse_file(&f.name, &f.text).map_err(|e| e.with_source(&files))?);
    }
    let blocks = parse::merge_blocks(parsed);
    expand::config(&blocks, env, config).map_err(|e| e.with_source(&files))
}

/// The targets and groups a bake run acts on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resolved {
    /// The groups involved, plus `default` listing what was asked for.
    #[serde(rename = "group", skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Group>,
    /// Every target to build, fully merged.
    #[serde(rename = "target")]
    pub targets: BTreeMap<String, Target>,
}

impl Resolved {
    /// The JSON `docker buildx bake --print` writes. As buildx, values that
    /// may hold text meant for the Dockerfile (annotations, the inline
    /// Dockerfile, labels, args, extra hosts) are written with `${` and `%{`
    /// escaped (`$${`, `%%{`), so the output reads back as a bake file.
    pub fn print_json(&self) -> String {
        fn esc(s: &mut String) {
            *s = s.replace("${", "$${").replace("%{", "%%{");
        }
        let mut shown = self.clone();
        for t in shown.targets.values_mut() {
            t.annotations.iter_mut().flatten().for_each(esc);
            t.dockerfile_inline.iter_mut().for_each(esc);
            for m in [&mut t.labels, &mut t.args, &mut t.extra_hosts] {
                m.iter_mut().flatten().for_each(|(_, v)| esc(v));
            }
        }
        // Go's encoder escapes `<`, `>` and `&` (`\u003c`, ...).
        list::go_json(&shown)
    }
}

/// Go's `path.Match` for `*`, `?` and literal characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => {
                (0..=n.len()).any(|i| !n[..i].contains(&'/') && rec(rest, &n[i..]))
            }
            Some(('?', rest)) => n.first().is_some_and(|c| *c != '/') && rec(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && rec(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    rec(&p, &n)
}

/// Go's `path.Clean`.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn is_remote(s: &str) -> bool {
    s.contains("://") && !s.starts_with("cwd://") || s.starts_with("git@")
}

impl Config {
    fn find_target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    fn find_group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Names matching a pattern (a name without glob characters is itself).
    fn match_names(&self, pattern: &str) -> Result<Vec<String>, BakeError> {
        if !pattern.contains(['*', '?', '[', ']']) {
            return Ok(vec![pattern.to_string()]);
        }
        let names: Vec<String> = self
            .groups
            .iter()
            .map(|g| &g.name)
            .chain(self.targets.iter().map(|t| &t.name))
            .filter(|n| glob_match(pattern, n))
            .cloned()
            .collect();
        if names.is_empty() {
            return Err(BakeError::msg(format!(
                "could not find any target matching {pattern:?}"
            )));
        }
        Ok(names)
    }

    /// Targets and groups reached from `name` (a name that is not a group
    /// is a target), as buildx's `Config.group`: a group met again while it
    /// is being expanded counts as a target of that name (a group and a
    /// target may share a name).
    fn expand(
        &self,
        name: &str,
        visited: &mut BTreeMap<String, (Vec<String>, Vec<String>)>,
    ) -> (Vec<String>, Vec<String>) {
        if let Some(v) = visited.get(name) {
            return v.clone();
        }
        let Some(g) = self.find_group(name) else {
            return (vec![name.to_string()], Vec::new());
        };
        visited.insert(name.to_string(), (Vec::new(), Vec::new()));
        let (mut targets, mut groups) = (Vec::new(), vec![name.to_string()]);
        for t in &g.targets {
            let (tt, tg) = self.expand(t, visited);
            if tt.is_empty() {
                targets.push(t.clone());
            } else {
                targets.extend(tt);
            }
            groups.extend(tg);
        }
        visited.insert(name.to_string(), (targets.clone(), groups.clone()));
        (targets, groups)
    }

    /// `--set PATTERN.KEY=VALUE` values, per target.
    fn overrides(
        &self,
        sets: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, Override>>, BakeError> {
        let mut m: BTreeMap<String, BTreeMap<String, Override>> = BTreeMap::new();
        for set in sets {
            let (lhs, value) = match set.split_once('=') {
                Some((l, v)) => (l, Some(v)),
                None => (set.as_str(), None),
            };
            let append = lhs.ends_with('+');
            let skey = lhs.trim_end_matches('+');
            let keys: Vec<&str> = skey.splitn(3, '.').collect();
            if keys.len() < 2 {
                return Err(BakeError::msg(format!(
                    "invalid override key {skey}, expected target.name"
                )));
            }
            if value.is_none() && keys[1] != "args" {
                return Err(BakeError::msg(format!(
                    "invalid override {set}, expected target.name=value"
                )));
            }
            let pattern = keys[0];
            let names: Vec<String> = if self.find_target(pattern).is_some() {
                vec![pattern.to_string()]
            } else {
                let n: Vec<String> = self
                    .targets
                    .iter()
                    .filter(|t| glob_match(pattern, &t.name))
                    .map(|t| t.name.clone())
                    .collect();
                if n.is_empty() {
                    return Err(BakeError::msg(format!(
                        "could not find any target matching '{pattern}'"
                    )));
                }
                n
            };
            let okey = keys[1..].join(".");
            if matches!(keys[1], "args" | "contexts") && keys.len() != 3 {
                return Err(BakeError::msg(format!(
                    "invalid key {lhs}, {} requires name",
                    keys[1]
                )));
            }
            // `--set T.args.NAME` alone: NAME's value from the environment, or nothing.
            let value = match (value, keys[1]) {
                (None, "args") => match self.env.get(keys[2]) {
                    Some(v) => Some(v.as_str()),
                    None => continue,
                },
                (v, _) => v,
            };
            for name in names {
                let o = m.entry(name).or_default().entry(okey.clone()).or_default();
                match keys[1] {
                    "output" | "cache-to" | "cache-from" | "tags" | "platform" | "secrets"
                    | "ssh" | "attest" | "entitlements" | "network" | "annotations" => {
                        if let Some(v) = value {
                            o.append = append;
                            o.values.push(v.to_string());
                        }
                    }
                    _ => {
                        if let Some(v) = value {
                            o.value = v.to_string();
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    fn merged(
        &self,
        name: &str,
        stack: &mut Vec<String>,
        overrides: &BTreeMap<String, BTreeMap<String, Override>>,
    ) -> Result<Target, BakeError> {
        if stack.iter().any(|s| s == name) {
            stack.push(name.to_string());
            return Err(BakeError::msg(format!(
                "cyclic inherits: {}",
                stack.join(" -> ")
            )));
        }
        let Some(t) = self.find_target(name) else {
            return Err(BakeError::msg(format!("failed to find target {name}")));
        };
        stack.push(name.to_string());
        let mut base = Target::default();
        for parent in &t.inherits {
            let p = self.merged(parent, stack, overrides)?;
            base.merge(&p);
        }
        stack.pop();
        base.merge(t);
        if let Some(o) = overrides.get(name) {
            base.apply_overrides(o)
                .map_err(|e| BakeError::msg(format!("target {name:?}: {e}")))?;
        }
        base.normalize();
        base.name = name.to_string();
        Ok(base)
    }
}

impl Config {
    /// One target, merged, overridden and with buildx's defaults for
    /// `context` (cleaned) and `dockerfile`.
    fn resolve_target(
        &self,
        name: &str,
        overrides: &BTreeMap<String, BTreeMap<String, Override>>,
    ) -> Result<Target, BakeError> {
        let mut resolved = self.merged(name, &mut Vec::new(), overrides)?;
        resolved.inherits.clear();
        let ctx = resolved.context.take().unwrap_or_else(|| ".".into());
        let ctx = match ctx.strip_prefix("cwd://") {
            Some(rest) => clean_path(rest),
            None if is_remote(&ctx) => ctx,
            None => clean_path(&ctx),
        };
        resolved.context = Some(ctx);
        if resolved.dockerfile.as_deref().is_none_or(str::is_empty) {
            resolved.dockerfile = Some("Dockerfile".into());
        }
        Ok(resolved)
    }

    /// Named contexts `target:OTHER` (buildx's `loadLinks`): OTHER joins the
    /// targets (with a `cacheonly` output when it was not asked for), its
    /// entitlements pass to the target using it; linking to itself or in a
    /// circle is an error.
    fn load_links(
        &self,
        name: &str,
        targets: &mut BTreeMap<String, Target>,
        overrides: &BTreeMap<String, BTreeMap<String, Override>>,
        visited: &mut Vec<String>,
    ) -> Result<(), BakeError> {
        visited.push(name.to_string());
        let links: Vec<String> = targets
            .get(name)
            .and_then(|t| t.contexts.as_ref())
            .map(|c| {
                c.values()
                    .filter_map(|v| v.strip_prefix("target:"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for link in links {
            if link == name {
                return Err(BakeError::msg(format!(
                    "target {link} cannot link to itself"
                )));
            }
            if visited.contains(&link) {
                return Err(BakeError::msg(format!(
                    "infinite loop from {name} to {link}"
                )));
            }
            if !targets.contains_key(&link) {
                let mut t = self.resolve_target(&link, overrides)?;
                let mut cacheonly = Entry::new();
                cacheonly.insert("type".into(), serde_json::Value::String("cacheonly".into()));
                t.outputs = Some(vec![cacheonly]);
                targets.insert(link.clone(), t);
            }
            self.load_links(&link, targets, overrides, &mut visited.clone())?;
            let inherited = targets
                .get(&link)
                .and_then(|t| t.entitlements.clone())
                .unwrap_or_default();
            let (this_platforms, link_platforms) = (
                targets.get(name).and_then(|t| t.platforms.clone()),
                targets.get(&link).and_then(|t| t.platforms.clone()),
            );
            if let Some(t) = targets.get_mut(name) {
                for e in inherited {
                    let list = t.entitlements.get_or_insert_with(Vec::new);
                    if !list.contains(&e) {
                        list.push(e);
                    }
                }
            }
            if let (Some(a), Some(b)) = (this_platforms, link_platforms) {
                if a.len() > 1 && b.len() > 1 && !a.iter().all(|p| b.contains(p)) {
                    return Err(BakeError::msg(format!(
                        "target {link} can't be used by {name} because its platforms {b:?} are not a subset of {a:?}"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// Resolve the requested names (`default` when none) with `--set` overrides.
pub fn resolve(
    config: &Config,
    requested: &[String],
    sets: &[String],
) -> Result<Resolved, BakeError> {
    let requested: Vec<String> = if requested.is_empty() {
        vec!["default".to_string()]
    } else {
        requested.iter().map(|t| t.replace('.', "_")).collect()
    };
    let mut names = Vec::new();
    for r in &requested {
        for n in config.match_names(r)? {
            push_unique(&mut names, &n);
        }
    }
    let overrides = config.overrides(sets)?;
    let mut out = Resolved::default();
    for name in &names {
        let (targets, groups) = config.expand(name, &mut BTreeMap::new());
        for t in targets {
            let resolved = config.resolve_target(&t, &overrides)?;
            out.targets.insert(t, resolved);
        }
        for g in groups {
            if let Some(group) = config.find_group(&g) {
                out.groups.insert(g, group.clone());
            }
        }
    }
    // As buildx: `default` is left out once a `default` group exists, which
    // an earlier name of the list may have just created.
    for n in &names {
        if out.groups.contains_key("default") && n == "default" {
            continue;
        }
        out.groups
            .entry("default".into())
            .or_insert_with(|| Group {
                name: "default".into(),
                ..Group::default()
            })
            .targets
            .push(n.clone());
    }
    let default = out.groups.entry("default".into()).or_insert_with(|| Group {
        name: "default".into(),
        ..Group::default()
    });
    let mut seen = std::collections::BTreeSet::new();
    default.targets.retain(|t| seen.insert(t.clone()));
    default.targets.sort();
    let names: Vec<String> = out.targets.keys().cloned().collect();
    for name in names {
        config.load_links(&name, &mut out.targets, &overrides, &mut Vec::new())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_one(text: &str, env: &[(&str, &str)]) -> Result<Config, BakeError> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(
            &[BakeFile {
                name: "docker-bake.hcl".into(),
                text: text.into(),
            }],
            &env,
        )
    }

    #[test]
    fn cyclic_inherits_is_an_error() {
        let c = load_one(
            "target \"a\" { inherits = [\"b\"] }\ntarget \"b\" { inherits = [\"a\"] }\n",
            &[],
        )
        .expect("parses");
        let err = resolve(&c, &["a".into()], &[]).expect_err("cycle");
        assert_eq!(err.to_string(), "cyclic inherits: a -> b -> a");
    }

    #[test]
    fn unknown_target_is_an_error() {
        let c = load_one("target \"a\" {}\n", &[]).expect("parses");
        let err = resolve(&c, &["nope".into()], &[]).expect_err("unknown");
        assert_eq!(err.to_string(), "failed to find target nope");
    }

    #[test]
    fn env_overrides_typed_defaults() {
        let text = "variable \"N\" { default = 1 }\nvariable \"B\" { default = false }\n\
                    target \"a\" {\n  tags = [\"x${N + 1}\"]\n  no-cache = B\n}\n";
        let c = load_one(text, &[("N", "4"), ("B", "true")]).expect("parses");
        let r = resolve(&c, &["a".into()], &[]).expect("resolves");
        assert_eq!(r.targets["a"].tags, Some(vec!["x5".to_string()]));
        assert_eq!(r.targets["a"].no_cache, Some(true));
    }

    #[test]
    fn set_with_glob_and_append() {
        let c = load_one(
            "target \"app\" { tags = [\"a\"] }\ntarget \"api\" {}\ntarget \"db\" {}\n",
            &[],
        )
        .expect("parses");
        let r = resolve(
            &c,
            &["app".into(), "api".into(), "db".into()],
            &["a*.tags+=b".into(), "*.args.X=1".into()],
        )
        .expect("resolves");
        assert_eq!(
            r.targets["app"].tags,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(r.targets["api"].tags, Some(vec!["b".to_string()]));
        assert_eq!(r.targets["db"].tags, None);
        assert_eq!(
            r.targets["db"].args.as_ref().map(|a| a["X"].clone()),
            Some("1".to_string())
        );
    }

    #[test]
    fn eval_error_names_the_attribute_position() {
        let err =
            load_one("target \"a\" {\n  tags = [UNDEFINED]\n}\n", &[]).expect_err("undefined");
        assert!(
            err.to_string().starts_with("docker-bake.hcl:2:3: tags:"),
            "{err}"
        );
    }

    #[test]
    fn paths_clean_like_go() {
        assert_eq!(clean_path("./app/"), "app");
        assert_eq!(clean_path("a/../../b"), "../b");
        assert_eq!(clean_path(""), ".");
        assert_eq!(clean_path("/x/./y"), "/x/y");
    }
}
