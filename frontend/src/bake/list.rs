//! `--list targets|variables` (and `--list type=...,format=table|json`):
//! what buildx 0.29 prints, a table aligned with tabs as Go's tabwriter
//! aligns it (cell width rounded up to a tab stop of 8) or an indented JSON
//! array.

use serde::Serialize;

use super::target::csv_fields;
use super::{BakeError, Config};

/// What `--list` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// `targets` or `variables`.
    pub kind: String,
    /// `table` or `json`.
    pub format: String,
}

/// Read the `--list` value: `targets`, `variables`, or `type=...,format=...`.
pub fn parse_request(input: &str) -> Result<ListRequest, BakeError> {
    let fields = csv_fields(input).map_err(BakeError::msg)?;
    let mut kind = String::new();
    let mut format = String::new();
    if fields.len() == 1 && fields[0] == input && !input.starts_with("type=") {
        kind = input.to_string();
    } else {
        for f in &fields {
            let Some((k, v)) = f.split_once('=') else {
                return Err(BakeError::msg(format!("invalid value {f}")));
            };
            match k.trim().to_lowercase().as_str() {
                "type" => kind = v.to_string(),
                "format" => format = v.to_string(),
                other => return Err(BakeError::msg(format!("unexpected key '{other}' in '{f}'"))),
            }
        }
    }
    if format.is_empty() {
        format = "table".into();
    }
    if kind != "targets" && kind != "variables" {
        return Err(BakeError::msg(format!(
            "invalid list type {kind:?} (targets or variables)"
        )));
    }
    if format != "table" && format != "json" {
        return Err(BakeError::msg(format!(
            "invalid list format {format:?} (table or json)"
        )));
    }
    Ok(ListRequest { kind, format })
}

/// Rows aligned as Go's `tabwriter.NewWriter(w, 1, 8, 1, '\t', 0)` aligns them.
pub fn tab_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (j, cell) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[j] = widths[j].max(cell.chars().count() + 1);
        }
    }
    let mut out = String::new();
    for r in rows {
        for (j, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if j + 1 < r.len() {
                let cellw = widths[j].max(1).div_ceil(8) * 8;
                let n = cellw - cell.chars().count();
                out.push_str(&"\t".repeat(n.div_ceil(8)));
            }
        }
        out.push('\n');
    }
    out
}

/// JSON as Go's encoder writes it: two-space indent, `<`, `>`, `&` escaped, a newline.
pub fn go_json<T: Serialize>(v: &T) -> String {
    let s = serde_json::to_string_pretty(v).unwrap_or_default();
    let mut out = go_escape(&s);
    out.push('\n');
    out
}

/// Go's JSON HTML escaping (`<`, `>`, `&` only appear inside strings).
pub fn go_escape(s: &str) -> String {
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[derive(Serialize)]
struct TargetRow {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    group: bool,
}

/// `--list targets`: targets and groups by name, `_private` ones left out;
/// a group's description lists its targets.
pub fn targets(config: &Config, format: &str) -> String {
    let mut rows: Vec<TargetRow> = Vec::new();
    for t in &config.targets {
        rows.push(TargetRow {
            name: t.name.clone(),
            description: t.description.clone().unwrap_or_default(),
            group: false,
        });
    }
    for g in &config.groups {
        let mut names = g.targets.clone();
        names.sort();
        let mut descr = g.description.clone().unwrap_or_default();
        if !names.is_empty() {
            let names = names.join(", ");
            descr = if descr.is_empty() {
                names
            } else {
                format!("{descr} ({names})")
            };
        }
        rows.push(TargetRow {
            name: g.name.clone(),
            description: descr,
            group: true,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows.retain(|r| !r.name.starts_with('_'));
    if format == "json" {
        if rows.is_empty() {
            return "null\n".into();
        }
        return go_json(&rows);
    }
    let mut table = vec![vec!["TARGET".to_string(), "DESCRIPTION".to_string()]];
    table.extend(rows.into_iter().map(|r| vec![r.name, r.description]));
    tab_table(&table)
}

/// `--list variables`: each `variable` block with its type, value and description.
pub fn variables(config: &Config, format: &str) -> String {
    let mut vars = config.variables.clone();
    vars.sort_by(|a, b| a.name.cmp(&b.name));
    if format == "json" {
        return go_json(&vars);
    }
    let mut table = vec![vec![
        "VARIABLE".to_string(),
        "TYPE".to_string(),
        "VALUE".to_string(),
        "DESCRIPTION".to_string(),
    ]];
    for v in vars {
        table.push(vec![
            v.name,
            v.type_name,
            v.value.unwrap_or_else(|| "<null>".into()),
            v.description,
        ]);
    }
    tab_table(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_like_go_tabwriter() {
        let rows = vec![
            vec![
                "VARIABLE".to_string(),
                "TYPE".into(),
                "VALUE".into(),
                "DESCRIPTION".into(),
            ],
            vec![
                "FOO".to_string(),
                "string".into(),
                "x".into(),
                "foo var".into(),
            ],
            vec![
                "TL".to_string(),
                "list of string".into(),
                "<null>".into(),
                "".into(),
            ],
        ];
        assert_eq!(
            tab_table(&rows),
            "VARIABLE\tTYPE\t\tVALUE\tDESCRIPTION\nFOO\t\tstring\t\tx\tfoo var\nTL\t\tlist of string\t<null>\t\n"
        );
    }

    #[test]
    fn list_requests() {
        assert_eq!(parse_request("targets").expect("ok").format, "table");
        let r = parse_request("type=variables,format=json").expect("ok");
        assert_eq!((r.kind.as_str(), r.format.as_str()), ("variables", "json"));
        assert!(parse_request("nope").is_err());
        assert!(parse_request("type=targets,format=yaml").is_err());
    }
}
