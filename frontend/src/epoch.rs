//! `SOURCE_DATE_EPOCH` given by the Dockerfile itself: a global-scope
//! `ARG SOURCE_DATE_EPOCH=<seconds>` (before the first FROM) is the build's
//! epoch when the caller passes none, as BuildKit's Dockerfile frontend does
//! since dockerfile 1.23. A caller's `--build-arg SOURCE_DATE_EPOCH=...` (or
//! the environment variable) always wins; the CLI checks those first.

use std::collections::BTreeMap;

use crate::error::{Error, ErrorKind};
use crate::instructions::Command;
use crate::lexer::Lexer;

/// The name of the build arg.
pub const NAME: &str = "SOURCE_DATE_EPOCH";

/// The epoch (seconds since 1970) a global `ARG SOURCE_DATE_EPOCH` sets,
/// its default expanded with the global args declared above it (a build arg
/// of an earlier global ARG replaces that ARG's default). `None` when the
/// Dockerfile declares no such global ARG, or its value is empty.
pub fn from_global_arg(text: &str, build_args: &BTreeMap<String, String>) -> Result<Option<u64>, Error> {
    let df = crate::parse(text)?;
    let lexer = Lexer::new(df.directives.escape);
    let mut meta: BTreeMap<String, String> = BTreeMap::new();
    let mut found: Option<(String, crate::span::Span)> = None;
    for ins in &df.meta_args {
        let Command::Arg(decls) = &ins.command else { continue };
        for d in decls {
            let value = match (build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => Some(lexer.process_word(def, &meta).map_err(|e| Error::new(ins.span, ErrorKind::Expansion(e.0)))?),
                (None, None) => None,
            };
            if let Some(v) = value {
                if d.name == NAME {
                    found = Some((v.clone(), ins.span));
                }
                meta.insert(d.name.clone(), v);
            }
        }
    }
    match found {
        None => Ok(None),
        Some((v, _)) if v.is_empty() => Ok(None),
        Some((v, span)) => v.trim().parse::<u64>().map(Some).map_err(|_| {
            Error::invalid(span, "ARG", format!("invalid {NAME}: {v:?}: expected seconds since 1970 (an integer)"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(text: &str) -> Result<Option<u64>, Error> {
        from_global_arg(text, &BTreeMap::new())
    }

    #[test]
    fn a_global_default_is_the_epoch() {
        assert_eq!(epoch("ARG SOURCE_DATE_EPOCH=1700000001\nFROM scratch\n").expect("valid"), Some(1_700_000_001));
        assert_eq!(epoch("ARG T=1445412480\nARG SOURCE_DATE_EPOCH=$T\nFROM scratch\n").expect("valid"), Some(1_445_412_480));
        let args = BTreeMap::from([("T".to_string(), "5".to_string())]);
        assert_eq!(from_global_arg("ARG T=1\nARG SOURCE_DATE_EPOCH=$T\nFROM scratch\n", &args).expect("valid"), Some(5));
    }

    #[test]
    fn only_a_global_arg_with_a_value_counts() {
        assert_eq!(epoch("FROM scratch\nARG SOURCE_DATE_EPOCH=1700000001\n").expect("valid"), None);
        assert_eq!(epoch("ARG SOURCE_DATE_EPOCH\nFROM scratch\n").expect("valid"), None);
        assert_eq!(epoch("ARG SOURCE_DATE_EPOCH=\nFROM scratch\n").expect("valid"), None);
        assert_eq!(epoch("FROM scratch\n").expect("valid"), None);
    }

    #[test]
    fn a_bad_value_is_an_error_at_its_line() {
        let e = epoch("# comment\nARG SOURCE_DATE_EPOCH=yesterday\nFROM scratch\n").expect_err("not a number");
        assert_eq!(e.span.line, 2);
        assert!(e.to_string().contains("invalid SOURCE_DATE_EPOCH: \"yesterday\""), "{e}");
    }
}
