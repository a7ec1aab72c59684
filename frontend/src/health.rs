//! HEALTHCHECK and STOPSIGNAL values: Go duration parsing and printing (the
//! history text BuildKit writes is Go's `%+v` of the healthcheck config),
//! the 1ms minimum interval, retries, and signal name checks
//! (`instructions/parse.go` `parseHealthcheck`, `moby/sys/signal`).

use crate::instructions::{Healthcheck, ShellOrExec};
use crate::quote::{go_quote, go_quote_rune};
use crate::ir::Health;

/// Parse a Go duration (`1h2m3.5s`, `300ms`, `0`) into nanoseconds; a
/// HEALTHCHECK duration cannot be negative.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let total = crate::duration::parse_go(s)?;
    if total < 0.0 {
        return Err(format!("duration {s:?} cannot be negative"));
    }
    Ok(total.round() as u64)
}

/// Go's `time.Duration.String()`.
pub fn format_duration(ns: u64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let frac = |v: u64, unit: u64| -> String {
        let whole = v / unit;
        let rem = v % unit;
        if rem == 0 {
            return whole.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let s = format!("{rem:0digits$}");
        format!("{whole}.{}", s.trim_end_matches('0'))
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let h = ns / 3_600_000_000_000;
    let m = (ns / 60_000_000_000) % 60;
    let s = ns % 60_000_000_000;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", frac(s, 1_000_000_000)));
    out
}

fn interval(name: &str, v: &Option<String>) -> Result<u64, String> {
    let Some(v) = v.as_deref().filter(|v| !v.is_empty()) else { return Ok(0) };
    let d = parse_duration(v)?;
    if d != 0 && d < 1_000_000 {
        return Err(format!("Interval {name:?} cannot be less than 1ms"));
    }
    Ok(d)
}

/// The image-config healthcheck for a HEALTHCHECK instruction (BuildKit
/// defaults: unset durations and retries are 0, meaning "inherit/default").
pub fn health(h: &Healthcheck) -> Result<Health, String> {
    match h {
        Healthcheck::None => Ok(Health {
            test: vec!["NONE".into()],
            interval: 0,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 0,
        }),
        Healthcheck::Cmd { test, interval: iv, timeout, start_period, start_interval, retries } => {
            let test = match test {
                ShellOrExec::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                ShellOrExec::Exec(v) => std::iter::once("CMD".to_string()).chain(v.iter().cloned()).collect(),
            };
            let retries = match retries.as_deref().filter(|r| !r.is_empty()) {
                None => 0,
                Some(r) => {
                    let n: i64 = r.parse().map_err(|_| format!("strconv.ParseInt: parsing {r:?}: invalid syntax"))?;
                    if n < 0 {
                        return Err(format!("--retries cannot be negative ({n})"));
                    }
                    u64::try_from(n).unwrap_or(0)
                }
            };
            Ok(Health {
                test,
                interval: interval("interval", iv)?,
                timeout: interval("timeout", timeout)?,
                start_period: interval("start-period", start_period)?,
                start_interval: interval("start-interval", start_interval)?,
                retries,
            })
        }
    }
}

/// BuildKit's history text: Go's `%q` of the
/// `*HealthConfig` (`Test`, `Interval`, `Timeout`, `StartPeriod`,
/// `StartInterval`, `Retries`), so durations are quoted strings and retries a quoted
/// rune: `HEALTHCHECK &{["CMD-SHELL" "curl x"] "5s" "2s" "0s" "0s" '\x04'}`
/// (compat cases `healthcheck`, `healthcheck-start-interval`).
pub fn history(h: &Health) -> String {
    let durations = [h.interval, h.timeout, h.start_period, h.start_interval];
    format!(
        "HEALTHCHECK &{{[{}] {} {}}}",
        h.test.iter().map(|t| go_quote(t)).collect::<Vec<_>>().join(" "),
        durations.iter().map(|d| go_quote(&format_duration(*d))).collect::<Vec<_>>().join(" "),
        go_quote_rune(h.retries)
    )
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
    "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG",
    "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
];

/// Check a STOPSIGNAL value as `signal.ParseSignal`: a number, or a name
/// with or without `SIG` (also `RTMIN+n`, `RTMAX-n`).
pub fn check_signal(s: &str) -> Result<(), String> {
    if let Ok(n) = s.parse::<u32>() {
        return if n == 0 { Err(format!("invalid signal: {s}")) } else { Ok(()) };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let base = name.split(['+', '-']).next().unwrap_or("");
    let ok = SIGNALS.contains(&name)
        || ((base == "RTMIN" || base == "RTMAX") && name.get(base.len() + 1..).is_some_and(|n| n.parse::<u32>().is_ok()));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid signal: {s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_go_format() {
        assert_eq!(parse_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(90_000_000_000), "1m30s");
        assert_eq!(format_duration(5_000_000_000), "5s");
        assert_eq!(format_duration(1_500_000_000), "1.5s");
        assert_eq!(format_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(format_duration(300_000_000), "300ms");
        assert_eq!(format_duration(0), "0s");
    }

    /// Strings seen in Docker 20.10's history (compat case `healthcheck`
    /// and hand-run builds).
    #[test]
    fn history_is_gos_percent_q_of_the_struct() {
        let h = Health {
            test: vec!["CMD".into(), "/bin/true".into(), "a\"b".into()],
            interval: 90_000_000_000,
            timeout: 500_000_000,
            start_period: 3_600_000_000_000,
            start_interval: 0,
            retries: 65,
        };
        assert_eq!(history(&h), r#"HEALTHCHECK &{["CMD" "/bin/true" "a\"b"] "1m30s" "500ms" "1h0m0s" "0s" 'A'}"#);
        let none = Health { test: vec!["NONE".into()], interval: 0, timeout: 0, start_period: 0, start_interval: 0, retries: 0 };
        assert_eq!(history(&none), r#"HEALTHCHECK &{["NONE"] "0s" "0s" "0s" "0s" '\x00'}"#);
        let with_start_interval = Health { start_interval: 2_000_000_000, retries: 2, ..h.clone() };
        assert_eq!(history(&with_start_interval), r#"HEALTHCHECK &{["CMD" "/bin/true" "a\"b"] "1m30s" "500ms" "1h0m0s" "2s" '\x02'}"#);
    }

    #[test]
    fn healthcheck_and_signals() {
        let h = health(&Healthcheck::Cmd {
            test: ShellOrExec::Shell("curl -f http://localhost/".into()),
            interval: Some("5s".into()),
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: Some("3".into()),
        })
        .expect("valid");
        assert_eq!(
            history(&h),
            "HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f http://localhost/\"] \"5s\" \"0s\" \"0s\" \"0s\" '\\x03'}"
        );
        let bad = Healthcheck::Cmd {
            test: ShellOrExec::Exec(vec!["true".into()]),
            interval: Some("1us".into()),
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        };
        assert!(health(&bad).is_err());
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3"] {
            assert!(check_signal(ok).is_ok(), "{ok}");
        }
        for bad in ["SIGFOO", "0", "", "RTMIN+"] {
            assert!(check_signal(bad).is_err(), "{bad}");
        }
    }
}
