//! Dates: `timestamp`, `formatdate` (Terraform's format spec: `YYYY`,
//! `MM`, `DD`, `hh`, `mm`, `ss`, `ZZZ`, `'literal'`, ...),
//! `formattimestamp` (also a unix time, and `X` for one), `timeadd` (Go
//! durations), `unixtimestampparse`.

use chrono::{DateTime, Datelike, FixedOffset, TimeZone as _, Timelike, Utc};
use hcl::eval::FuncArgs;
use hcl::Value;

use super::{s, string, Arity, Entry};

pub(super) const FUNCS: &[Entry] = &[
    ("timestamp", Arity::Fixed(0), timestamp),
    ("formatdate", Arity::Fixed(2), formatdate),
    ("formattimestamp", Arity::Fixed(2), formattimestamp),
    ("timeadd", Arity::Fixed(2), timeadd),
    ("unixtimestampparse", Arity::Fixed(1), unixtimestampparse),
];

fn rfc3339(t: &DateTime<FixedOffset>) -> String {
    if t.offset().local_minus_utc() == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s).map_err(|_| {
        format!("not a valid RFC3339 timestamp: {s:?} (for example 2006-01-02T15:04:05Z)")
    })
}

fn timestamp(_: FuncArgs) -> Result<Value, String> {
    Ok(string(Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// Terraform's date format spec.
fn format_spec(spec: &str, t: &DateTime<FixedOffset>) -> Result<String, String> {
    let chars: Vec<char> = spec.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let end = chars[i + 1..]
                .iter()
                .position(|&c| c == '\'')
                .ok_or("unterminated literal '")?;
            if end == 0 {
                out.push('\'');
            } else {
                out.extend(&chars[i + 1..i + 1 + end]);
            }
            i += end + 2;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = chars[i..].iter().take_while(|&&x| x == c).count();
        let tok: String = chars[i..i + n].iter().collect();
        let off = t.offset().local_minus_utc();
        let piece = match tok.as_str() {
            "YYYY" => format!("{:04}", t.year()),
            "YY" => format!("{:02}", t.year() % 100),
            "MMMM" => t.format("%B").to_string(),
            "MMM" => t.format("%b").to_string(),
            "MM" => format!("{:02}", t.month()),
            "M" => t.month().to_string(),
            "DD" => format!("{:02}", t.day()),
            "D" => t.day().to_string(),
            "EEEE" => t.format("%A").to_string(),
            "EEE" => t.format("%a").to_string(),
            "hh" => format!("{:02}", t.hour()),
            "h" => t.hour().to_string(),
            "HH" => format!("{:02}", (t.hour() + 11) % 12 + 1),
            "H" => ((t.hour() + 11) % 12 + 1).to_string(),
            "AA" => if t.hour() < 12 { "AM" } else { "PM" }.to_string(),
            "aa" => if t.hour() < 12 { "am" } else { "pm" }.to_string(),
            "mm" => format!("{:02}", t.minute()),
            "m" => t.minute().to_string(),
            "ss" => format!("{:02}", t.second()),
            "s" => t.second().to_string(),
            "ZZZZZ" => {
                let sign = if off < 0 { '-' } else { '+' };
                format!("{sign}{:02}:{:02}", off.abs() / 3600, off.abs() % 3600 / 60)
            }
            "ZZZZ" => {
                let sign = if off < 0 { '-' } else { '+' };
                format!("{sign}{:02}{:02}", off.abs() / 3600, off.abs() % 3600 / 60)
            }
            "ZZZ" => {
                if off == 0 {
                    "UTC".into()
                } else {
                    let sign = if off < 0 { '-' } else { '+' };
                    format!("{sign}{:02}{:02}", off.abs() / 3600, off.abs() % 3600 / 60)
                }
            }
            "Z" => {
                if off == 0 {
                    "Z".into()
                } else {
                    let sign = if off < 0 { '-' } else { '+' };
                    format!("{sign}{:02}:{:02}", off.abs() / 3600, off.abs() % 3600 / 60)
                }
            }
            other => return Err(format!("invalid date format verb {other:?}")),
        };
        out.push_str(&piece);
        i += n;
    }
    Ok(out)
}

fn formatdate(a: FuncArgs) -> Result<Value, String> {
    let t = parse_time(&s(&a, 1)?)?;
    format_spec(&s(&a, 0)?, &t).map(string)
}

fn unix(v: Option<&Value>) -> Result<DateTime<FixedOffset>, String> {
    let n = v
        .and_then(Value::as_f64)
        .ok_or("a unix timestamp number is required")?;
    if n.fract() != 0.0 {
        return Err("unix timestamp must be an integer".into());
    }
    Utc.timestamp_opt(n as i64, 0)
        .single()
        .map(|t| t.fixed_offset())
        .ok_or_else(|| "unix timestamp out of range".into())
}

fn formattimestamp(a: FuncArgs) -> Result<Value, String> {
    let spec = s(&a, 0)?;
    let t = match a.get(1) {
        Some(Value::String(ts)) => {
            parse_time(ts).map_err(|_| "timestamp string must be RFC3339".to_string())?
        }
        Some(Value::Number(_)) => unix(a.get(1))?,
        _ => return Err("must be a string timestamp or a unix timestamp number".into()),
    };
    if spec == "X" {
        return Ok(string(t.timestamp().to_string()));
    }
    format_spec(&spec, &t).map(string)
}

fn timeadd(a: FuncArgs) -> Result<Value, String> {
    let t = parse_time(&s(&a, 0)?)?;
    let d = crate::duration::parse_go(&s(&a, 1)?)? as i64;
    let t = t + chrono::Duration::nanoseconds(d);
    Ok(string(rfc3339(&t)))
}

fn unixtimestampparse(a: FuncArgs) -> Result<Value, String> {
    let t = unix(a.first())?;
    let iso = t.iso_week();
    let mut m = hcl::Map::new();
    let n = |v: i64| Value::from(v);
    m.insert("year".into(), n(t.year() as i64));
    m.insert("year_day".into(), n(t.ordinal() as i64));
    m.insert("day".into(), n(t.day() as i64));
    m.insert("month".into(), n(t.month() as i64));
    m.insert("month_name".into(), string(t.format("%B").to_string()));
    m.insert(
        "weekday".into(),
        n(t.weekday().num_days_from_sunday() as i64),
    );
    m.insert("weekday_name".into(), string(t.format("%A").to_string()));
    m.insert("hour".into(), n(t.hour() as i64));
    m.insert("minute".into(), n(t.minute() as i64));
    m.insert("second".into(), n(t.second() as i64));
    m.insert("rfc3339".into(), string(rfc3339(&t)));
    m.insert("iso_year".into(), n(iso.year() as i64));
    m.insert("iso_week".into(), n(iso.week() as i64));
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::j;

    #[test]
    fn dates_as_buildx() {
        assert_eq!(
            j(r#"formatdate("YYYY-MM-DD hh:mm", "2024-03-05T07:08:09Z")"#),
            r#""2024-03-05 07:08""#
        );
        assert_eq!(
            j(r#"formatdate("DD MMM YYYY 'at' h:mm AA ZZZ", "2024-03-05T17:08:09Z")"#),
            r#""05 Mar 2024 at 17:08 PM UTC""#
        );
        assert_eq!(
            j(r#"formatdate("EEEE, MMMM D", "2024-03-05T00:00:00+02:00")"#),
            r#""Tuesday, March 5""#
        );
        assert_eq!(
            j(r#"formatdate("ZZZZZ", "2024-03-05T00:00:00+02:00")"#),
            r#""+02:00""#
        );
        assert_eq!(
            j(r#"formattimestamp("X", "2024-01-01T00:00:00Z")"#),
            r#""1704067168""#.replace("1704067168", "1704067200")
        );
        assert_eq!(j(r#"formattimestamp("YYYY", 0)"#), r#""1970""#);
        assert_eq!(
            j(r#"timeadd("2024-01-01T00:00:00Z", "1h30m")"#),
            r#""2024-01-01T01:30:00Z""#
        );
        assert_eq!(
            j(r#"timeadd("2024-01-01T00:00:00Z", "-24h")"#),
            r#""2023-12-31T00:00:00Z""#
        );
        assert_eq!(j(r#"unixtimestampparse(0).weekday_name"#), r#""Thursday""#);
        assert_eq!(j(r#"unixtimestampparse(1704067200).iso_week"#), "1");
        assert_eq!(j("strlen(timestamp())"), "20");
        assert!(j(r#"formatdate("YYYY", "nope")"#).starts_with("error"));
    }
}
