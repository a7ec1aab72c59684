//! IP network functions: `cidrhost`, `cidrnetmask`, `cidrsubnet`,
//! `cidrsubnets`, for IPv4 and IPv6 prefixes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hcl::eval::FuncArgs;
use hcl::Value;

use super::{int, s, string, Arity, Entry};

pub(super) const FUNCS: &[Entry] = &[
    ("cidrhost", Arity::Fixed(2), cidrhost),
    ("cidrnetmask", Arity::Fixed(1), cidrnetmask),
    ("cidrsubnet", Arity::Fixed(3), cidrsubnet),
    ("cidrsubnets", Arity::AtLeast(1), cidrsubnets),
];

/// A prefix: its network address (as a number), its length and the address size.
#[derive(Clone, Copy)]
struct Net {
    addr: u128,
    len: u32,
    bits: u32,
}

fn parse(p: &str) -> Result<Net, String> {
    let (ip, len) = p
        .split_once('/')
        .ok_or_else(|| format!("invalid CIDR expression: {p}"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("invalid CIDR expression: {p}"))?;
    let len: u32 = len
        .parse()
        .map_err(|_| format!("invalid CIDR expression: {p}"))?;
    let (addr, bits) = match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    if len > bits {
        return Err(format!("invalid CIDR expression: {p}"));
    }
    Ok(Net {
        addr: addr & mask(len, bits),
        len,
        bits,
    })
}

fn mask(len: u32, bits: u32) -> u128 {
    let all: u128 = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    if len == 0 {
        0
    } else {
        all & !((1u128 << (bits - len)) - 1).min(all)
    }
}

fn addr_text(a: u128, bits: u32) -> String {
    if bits == 32 {
        Ipv4Addr::from(a as u32).to_string()
    } else {
        Ipv6Addr::from(a).to_string()
    }
}

fn host_count(n: &Net) -> u128 {
    let host_bits = n.bits - n.len;
    if host_bits >= 128 {
        u128::MAX
    } else {
        1u128 << host_bits
    }
}

fn cidrhost(a: FuncArgs) -> Result<Value, String> {
    let n = parse(&s(&a, 0)?)?;
    let num = int(&a, 1)?;
    let count = host_count(&n);
    let off: u128 = if num < 0 {
        count
            .checked_sub(num.unsigned_abs() as u128)
            .ok_or_else(|| {
                format!(
                    "prefix of {} does not accommodate a host numbered {num}",
                    n.len
                )
            })?
    } else {
        num as u128
    };
    if off >= count {
        return Err(format!(
            "prefix of {} does not accommodate a host numbered {num}",
            n.len
        ));
    }
    Ok(string(addr_text(n.addr + off, n.bits)))
}

fn cidrnetmask(a: FuncArgs) -> Result<Value, String> {
    let n = parse(&s(&a, 0)?)?;
    if n.bits != 32 {
        return Err("only IPv4 networks are supported".into());
    }
    Ok(string(addr_text(mask(n.len, 32), 32)))
}

fn subnet(n: &Net, newbits: i64, num: i64) -> Result<Net, String> {
    if newbits < 0 || n.len + newbits as u32 > n.bits {
        return Err(format!(
            "insufficient address space to extend prefix of {} by {newbits}",
            n.len
        ));
    }
    let len = n.len + newbits as u32;
    if num < 0 || (newbits < 127 && num as u128 >= 1u128 << newbits) {
        return Err(format!(
            "prefix extension of {newbits} does not accommodate a subnet numbered {num}"
        ));
    }
    let shifted = (num as u128).checked_shl(n.bits - len).unwrap_or(0);
    Ok(Net {
        addr: n.addr | shifted,
        len,
        bits: n.bits,
    })
}

fn text(n: &Net) -> String {
    format!("{}/{}", addr_text(n.addr, n.bits), n.len)
}

fn cidrsubnet(a: FuncArgs) -> Result<Value, String> {
    let n = parse(&s(&a, 0)?)?;
    Ok(string(text(&subnet(&n, int(&a, 1)?, int(&a, 2)?)?)))
}

fn last(n: &Net) -> u128 {
    n.addr
        | !mask(n.len, n.bits)
            & if n.bits == 128 {
                u128::MAX
            } else {
                (1u128 << n.bits) - 1
            }
}

fn cidrsubnets(a: FuncArgs) -> Result<Value, String> {
    let base = parse(&s(&a, 0)?)?;
    if a.len() < 2 {
        return Ok(Value::Array(Vec::new()));
    }
    let mut out = Vec::new();
    let mut current = subnet(&base, int(&a, 1)?, 0)?;
    out.push(string(text(&current)));
    for i in 2..a.len() {
        let nb = int(&a, i)?;
        if nb < 1 || base.len + nb as u32 > base.bits {
            return Err(format!(
                "would extend prefix to {} bits, which is too long for an address",
                base.len as i64 + nb
            ));
        }
        let len = base.len + nb as u32;
        let m = mask(len, base.bits);
        let containing = Net {
            addr: last(&current) & m,
            len,
            bits: base.bits,
        };
        let next = last(&containing)
            .checked_add(1)
            .ok_or("not enough remaining address space")?
            & m;
        current = Net {
            addr: next,
            len,
            bits: base.bits,
        };
        if last(&current) > last(&base) || current.addr < base.addr {
            return Err(format!("not enough remaining address space for a subnet with a prefix of {len} bits after {}", text(&containing)));
        }
        out.push(string(text(&current)));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::j;

    #[test]
    fn networks_as_buildx() {
        assert_eq!(j(r#"cidrhost("10.12.112.0/20", 16)"#), r#""10.12.112.16""#);
        assert_eq!(j(r#"cidrhost("10.12.112.0/20", -1)"#), r#""10.12.127.255""#);
        assert_eq!(j(r#"cidrnetmask("172.16.0.0/12")"#), r#""255.240.0.0""#);
        assert_eq!(
            j(r#"cidrsubnet("172.16.0.0/12", 4, 2)"#),
            r#""172.18.0.0/16""#
        );
        assert_eq!(
            j(r#"cidrsubnet("fd00:fd12:3456:7890::/56", 16, 162)"#),
            r#""fd00:fd12:3456:7800:a200::/72""#
        );
        assert_eq!(
            j(r#"cidrsubnets("10.1.0.0/16", 4, 4, 8, 4)"#),
            r#"["10.1.0.0/20","10.1.16.0/20","10.1.32.0/24","10.1.48.0/20"]"#
        );
        assert!(j(r#"cidrsubnet("10.0.0.0/30", 4, 0)"#).starts_with("error"));
    }
}
