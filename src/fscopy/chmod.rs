//! `--chmod`: octal or symbolic modes (chmod(1) with umask 0), applied to
//! every copied entry.

/// `--chmod`: octal or symbolic as chmod(1) with umask 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    /// `755`.
    Octal(u32),
    /// `u=rwX,go=rX`.
    Symbolic(Vec<(u32, char, Perm)>),
}

/// The right-hand side of one symbolic operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Perm {
    /// `rwxXst` letters.
    Bits(String),
    /// Copy of another class (`g=u`).
    From(char),
}

impl Chmod {
    /// Parse a `--chmod` value.
    pub(crate) fn parse(v: &str) -> Option<Chmod> {
        if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) {
            return u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777).map(Chmod::Octal);
        }
        let mut ops = Vec::new();
        for clause in v.split(',') {
            let mut who = 0u32;
            let mut chars = clause.chars().peekable();
            while let Some(c) = chars.peek().copied() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => break,
                };
                chars.next();
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut any = false;
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return None;
                }
                any = true;
                let perm = match chars.peek().copied() {
                    Some(c @ ('u' | 'g' | 'o')) => {
                        chars.next();
                        Perm::From(c)
                    }
                    _ => {
                        let mut s = String::new();
                        while let Some(c) = chars.peek().copied().filter(|c| "rwxXst".contains(*c)) {
                            s.push(c);
                            chars.next();
                        }
                        Perm::Bits(s)
                    }
                };
                ops.push((who, op, perm));
            }
            if !any {
                return None;
            }
        }
        Some(Chmod::Symbolic(ops))
    }

    /// The new mode of an entry with mode `old`.
    pub(crate) fn apply(&self, old: u32, is_dir: bool) -> u32 {
        let ops = match self {
            // Octal modes set the special bits too (today's BuildKit:
            // `--chmod=4755` gives 4755; docker 20.10's gave 0755; compat
            // case `copy-chmod-dir`).
            Chmod::Octal(m) => return *m & 0o7777,
            Chmod::Symbolic(ops) => ops,
        };
        let mut mode = old & 0o7777;
        for (who, op, perm) in ops {
            let bits = match perm {
                Perm::Bits(s) => {
                    let mut b = 0;
                    for c in s.chars() {
                        b |= match c {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || old & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    b
                }
                Perm::From(c) => {
                    let v = match c {
                        'u' => (mode >> 6) & 7,
                        'g' => (mode >> 3) & 7,
                        _ => mode & 7,
                    };
                    v | (v << 3) | (v << 6)
                }
            };
            let mask = who & bits;
            match op {
                '+' => mode |= mask,
                '-' => mode &= !mask,
                _ => {
                    // `=` clears the class's bits (rwx and its special bit), then sets.
                    mode &= !*who;
                    mode |= mask;
                }
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chmod_symbolic() {
        let m = |s: &str, old: u32, dir: bool| Chmod::parse(s).unwrap().apply(old, dir);
        assert_eq!(m("755", 0o600, false), 0o755);
        assert_eq!(m("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(m("u=rwX,go=rX", 0o700, false), 0o755);
        assert_eq!(m("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(m("+x", 0o640, false), 0o751);
        assert_eq!(m("g-w,o=", 0o777, false), 0o750);
        assert_eq!(m("g=u", 0o640, false), 0o660);
        assert_eq!(m("u+s", 0o755, false), 0o4755);
        assert!(Chmod::parse("rwx").is_none());
        assert!(Chmod::parse("888").is_none());
    }
}
