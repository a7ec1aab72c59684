//! Go's `time.ParseDuration` (`1h30m`, `-2.5s`, `300ms`, `0`): the durations
//! of HEALTHCHECK flags and of bake's `timeadd`.

/// A Go duration in nanoseconds (negative for a leading `-`), with Go's
/// error messages.
pub fn parse_go(s: &str) -> Result<f64, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if n == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            other => return Err(format!("time: unknown unit {other:?} in duration {s:?}")),
        };
        rest = &rest[u..];
        total += value * unit;
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go("1h30m"), Ok(5_400e9));
        assert_eq!(parse_go("-2.5s"), Ok(-2.5e9));
        assert_eq!(parse_go("300ms"), Ok(300e6));
        assert_eq!(parse_go("1us"), Ok(1e3));
        assert_eq!(parse_go("0"), Ok(0.0));
        assert_eq!(parse_go("5"), Err("time: missing unit in duration \"5\"".into()));
        assert_eq!(parse_go("5x"), Err("time: unknown unit \"x\" in duration \"5x\"".into()));
        assert_eq!(parse_go(""), Err("time: invalid duration \"\"".into()));
        assert_eq!(parse_go("h"), Err("time: invalid duration \"h\"".into()));
    }
}
