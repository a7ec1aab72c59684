//! Go's `strconv.Quote` and `QuoteRune` (what `%q` prints): the quoting of
//! the texts BuildKit writes with Go's formatting, such as the parser's dump
//! of a node and the history text of a HEALTHCHECK.

/// One character as Go's `strconv.Quote` writes it inside `quote`.
fn go_escape(c: char, quote: char, out: &mut String) {
    match c {
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push(c),
    }
}

/// Go's `strconv.Quote` (`%q` of a string).
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        go_escape(c, '"', &mut out);
    }
    out.push('"');
    out
}

/// Go's `%q` of an integer: the quoted rune (`'\x04'`, `'A'`), `'�'` when
/// it is not a valid code point.
pub fn go_quote_rune(n: u64) -> String {
    let c = u32::try_from(n).ok().and_then(char::from_u32).unwrap_or('\u{fffd}');
    let mut out = String::from("'");
    go_escape(c, '\'', &mut out);
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_as_go_does() {
        assert_eq!(go_quote_rune(39), r"'\''");
        assert_eq!(go_quote_rune(10), r"'\n'");
        assert_eq!(go_quote_rune(0x110000), "'\u{fffd}'");
        assert_eq!(go_quote("tab\there \u{1}"), r#""tab\there \x01""#);
        assert_eq!(go_quote("a\"b\\c\u{7}\u{b}\u{7f}\u{85}é"), r#""a\"b\\c\a\v\x7f\u0085é""#);
    }
}
