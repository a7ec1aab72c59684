//! List, map and set functions: `length`, `concat`, `flatten`, `distinct`,
//! `element`, `slice`, `sort`, `range`, `lookup`, `merge`, `zipmap`,
//! `chunklist`, the `set*` family (results ordered as cty orders sets:
//! strings lexically, numbers numerically), ...

use hcl::eval::FuncArgs;
use hcl::Value;

use super::{arity, int, list, map, num, number, s, text, Arity, Entry};

pub(super) const FUNCS: &[Entry] = &[
    ("length", Arity::Fixed(1), length),
    ("concat", Arity::AtLeast(0), concat),
    ("coalesce", Arity::AtLeast(0), coalesce),
    ("coalescelist", Arity::AtLeast(0), coalescelist),
    ("compact", Arity::Fixed(1), compact),
    ("contains", Arity::Fixed(2), contains),
    ("distinct", Arity::Fixed(1), distinct),
    ("flatten", Arity::Fixed(1), flatten),
    ("keys", Arity::Fixed(1), keys),
    ("values", Arity::Fixed(1), values),
    ("merge", Arity::AtLeast(0), merge),
    ("element", Arity::Fixed(2), element),
    ("slice", Arity::Fixed(3), slice),
    ("sort", Arity::Fixed(1), sort),
    ("reverselist", Arity::Fixed(1), reverselist),
    ("lookup", Arity::AtLeast(2), lookup),
    ("index", Arity::Fixed(2), index),
    ("hasindex", Arity::Fixed(2), hasindex),
    ("indexof", Arity::Fixed(2), indexof),
    ("chunklist", Arity::Fixed(2), chunklist),
    ("zipmap", Arity::Fixed(2), zipmap),
    ("range", Arity::AtLeast(1), range),
    ("setproduct", Arity::AtLeast(0), setproduct),
    ("sethaselement", Arity::Fixed(2), sethaselement),
    ("setintersection", Arity::AtLeast(1), setintersection),
    ("setsubtract", Arity::Fixed(2), setsubtract),
    (
        "setsymmetricdifference",
        Arity::AtLeast(1),
        setsymmetricdifference,
    ),
    ("setunion", Arity::AtLeast(1), setunion),
];

fn length(a: FuncArgs) -> Result<Value, String> {
    let n = match a.first() {
        Some(Value::Array(v)) => v.len(),
        Some(Value::Object(o)) => o.len(),
        Some(Value::Null) => return Err("argument must not be null".into()),
        _ => return Err("collection must be a list, a map or a tuple".into()),
    };
    Ok(Value::from(n as u64))
}
fn concat(a: FuncArgs) -> Result<Value, String> {
    let mut out = Vec::new();
    for i in 0..a.len() {
        out.extend(list(&a, i)?);
    }
    Ok(Value::Array(out))
}
/// The first non-null argument (an empty string counts, as in cty).
fn coalesce(a: FuncArgs) -> Result<Value, String> {
    a.iter()
        .find(|v| !v.is_null())
        .cloned()
        .ok_or_else(|| "no non-null arguments".to_string())
}
fn coalescelist(a: FuncArgs) -> Result<Value, String> {
    if a.is_empty() {
        return Err("at least one argument is required".into());
    }
    for v in a.iter() {
        match v {
            Value::Array(items) if !items.is_empty() => return Ok(v.clone()),
            Value::Array(_) | Value::Null => {}
            _ => return Err("coalescelist: lists are required".into()),
        }
    }
    Err("no non-null arguments".into())
}
fn compact(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Array(
        list(&a, 0)?
            .into_iter()
            .filter(|v| !v.is_null() && *v != Value::String(String::new()))
            .collect(),
    ))
}
fn contains(a: FuncArgs) -> Result<Value, String> {
    let items = list(&a, 0)?;
    Ok(Value::Bool(a.get(1).is_some_and(|v| items.contains(v))))
}
fn distinct(a: FuncArgs) -> Result<Value, String> {
    let mut out: Vec<Value> = Vec::new();
    for v in list(&a, 0)? {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(Value::Array(out))
}
fn flatten(a: FuncArgs) -> Result<Value, String> {
    fn flat(v: Value, out: &mut Vec<Value>) {
        match v {
            Value::Array(items) => items.into_iter().for_each(|i| flat(i, out)),
            other => out.push(other),
        }
    }
    let mut out = Vec::new();
    list(&a, 0)?.into_iter().for_each(|i| flat(i, &mut out));
    Ok(Value::Array(out))
}
fn keys(a: FuncArgs) -> Result<Value, String> {
    let mut k: Vec<String> = map(&a, 0)?.keys().cloned().collect();
    k.sort();
    Ok(Value::Array(k.into_iter().map(Value::String).collect()))
}
fn values(a: FuncArgs) -> Result<Value, String> {
    let m = map(&a, 0)?;
    let mut kv: Vec<(String, Value)> = m.into_iter().collect();
    kv.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(Value::Array(kv.into_iter().map(|(_, v)| v).collect()))
}
fn merge(a: FuncArgs) -> Result<Value, String> {
    let mut out = hcl::Map::new();
    for v in a.iter() {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    out.insert(k.clone(), v.clone());
                }
            }
            Value::Null => {}
            _ => return Err("merge: maps or objects are required".into()),
        }
    }
    Ok(Value::Object(out))
}
fn element(a: FuncArgs) -> Result<Value, String> {
    let items = list(&a, 0)?;
    let i = int(&a, 1)?;
    if items.is_empty() {
        return Err("cannot use element function with an empty list".into());
    }
    if i < 0 {
        return Err("cannot use element function with a negative index".into());
    }
    Ok(items[i as usize % items.len()].clone())
}
fn slice(a: FuncArgs) -> Result<Value, String> {
    let items = list(&a, 0)?;
    let (start, end) = (int(&a, 1)?, int(&a, 2)?);
    if start < 0 {
        return Err("the start index must not be less than zero".into());
    }
    if end as usize > items.len() || end < 0 {
        return Err("the end index must not be greater than the length of the list".into());
    }
    if start > end {
        return Err("the start index must not be greater than the end index".into());
    }
    Ok(Value::Array(items[start as usize..end as usize].to_vec()))
}
fn sort(a: FuncArgs) -> Result<Value, String> {
    let mut items = list(&a, 0)?
        .iter()
        .map(|v| text(Some(v), "sort: element"))
        .collect::<Result<Vec<_>, _>>()?;
    items.sort();
    Ok(Value::Array(items.into_iter().map(Value::String).collect()))
}
fn reverselist(a: FuncArgs) -> Result<Value, String> {
    let mut items = list(&a, 0)?;
    items.reverse();
    Ok(Value::Array(items))
}
fn lookup(a: FuncArgs) -> Result<Value, String> {
    arity(&a, "lookup", 2, 3)?;
    let m = map(&a, 0)?;
    let k = s(&a, 1)?;
    match (m.get(&k), a.get(2)) {
        (Some(v), _) => Ok(v.clone()),
        (None, Some(d)) => Ok(d.clone()),
        (None, None) => Err(format!("the given key {k:?} does not exist in the map")),
    }
}
fn index(a: FuncArgs) -> Result<Value, String> {
    match a.first() {
        Some(Value::Array(items)) => {
            let i = int(&a, 1)?;
            items
                .get(usize::try_from(i).map_err(|_| "invalid index")?)
                .cloned()
                .ok_or_else(|| {
                    "the given index is greater than or equal to the length of the collection"
                        .into()
                })
        }
        Some(Value::Object(o)) => {
            let k = s(&a, 1)?;
            o.get(&k)
                .cloned()
                .ok_or_else(|| format!("the given key {k:?} does not exist"))
        }
        _ => Err("index: a list or map is required".into()),
    }
}
fn hasindex(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(match a.first() {
        Some(Value::Array(items)) => {
            num(&a, 1).is_ok_and(|i| i >= 0.0 && i.fract() == 0.0 && (i as usize) < items.len())
        }
        Some(Value::Object(o)) => s(&a, 1).is_ok_and(|k| o.contains_key(&k)),
        _ => return Err("hasindex: a list or map is required".into()),
    }))
}
fn indexof(a: FuncArgs) -> Result<Value, String> {
    let items = match a.first() {
        Some(Value::Array(items)) => items,
        _ => return Err("argument must be a list or tuple".into()),
    };
    if items.is_empty() {
        return Err("cannot search an empty list".into());
    }
    items
        .iter()
        .position(|v| Some(v) == a.get(1))
        .map(|i| Value::from(i as u64))
        .ok_or_else(|| "item not found".into())
}
fn chunklist(a: FuncArgs) -> Result<Value, String> {
    let items = list(&a, 0)?;
    let size = int(&a, 1)?;
    if size < 0 {
        return Err("the size argument must be positive".into());
    }
    if size == 0 {
        return Ok(Value::Array(vec![Value::Array(items)]));
    }
    Ok(Value::Array(
        items
            .chunks(size as usize)
            .map(|c| Value::Array(c.to_vec()))
            .collect(),
    ))
}
fn zipmap(a: FuncArgs) -> Result<Value, String> {
    let (k, v) = (list(&a, 0)?, list(&a, 1)?);
    if k.len() != v.len() {
        return Err(format!(
            "number of keys ({}) does not match number of values ({})",
            k.len(),
            v.len()
        ));
    }
    let mut m = hcl::Map::new();
    for (k, v) in k.iter().zip(v) {
        m.insert(text(Some(k), "zipmap: key")?, v);
    }
    Ok(Value::Object(m))
}
fn range(a: FuncArgs) -> Result<Value, String> {
    arity(&a, "range", 1, 3)?;
    let (start, end, step) = match a.len() {
        1 => (0.0, num(&a, 0)?, 1.0),
        2 => {
            let (s, e) = (num(&a, 0)?, num(&a, 1)?);
            (s, e, if s > e { -1.0 } else { 1.0 })
        }
        _ => (num(&a, 0)?, num(&a, 1)?, num(&a, 2)?),
    };
    if step == 0.0 {
        return Err("step must not be zero".into());
    }
    if (step > 0.0 && start > end) || (step < 0.0 && start < end) {
        return Err(if step > 0.0 {
            "step must be negative when start is greater than end".into()
        } else {
            "step must be positive when start is less than end".into()
        });
    }
    let mut out = Vec::new();
    let mut v = start;
    while (step > 0.0 && v < end) || (step < 0.0 && v > end) {
        if out.len() >= 1024 {
            return Err("more than 1024 values were generated".into());
        }
        out.push(number(v));
        v += step;
    }
    Ok(Value::Array(out))
}

/// A set's elements in cty's order, duplicates removed.
fn ordered(mut items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for v in items.drain(..) {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if out.iter().all(Value::is_string) {
        out.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    } else if out.iter().all(Value::is_number) {
        out.sort_by(|a, b| {
            a.as_f64()
                .partial_cmp(&b.as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    out
}
fn sets(a: &FuncArgs) -> Result<Vec<Vec<Value>>, String> {
    (0..a.len()).map(|i| list(a, i).map(ordered)).collect()
}
fn sethaselement(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(
        a.get(1)
            .is_some_and(|v| list(&a, 0).is_ok_and(|l| l.contains(v))),
    ))
}
fn setunion(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Array(ordered(sets(&a)?.concat())))
}
fn setintersection(a: FuncArgs) -> Result<Value, String> {
    let all = sets(&a)?;
    let first = all.first().cloned().unwrap_or_default();
    Ok(Value::Array(ordered(
        first
            .into_iter()
            .filter(|v| all.iter().all(|s| s.contains(v)))
            .collect(),
    )))
}
fn setsubtract(a: FuncArgs) -> Result<Value, String> {
    let all = sets(&a)?;
    Ok(Value::Array(ordered(
        all[0]
            .iter()
            .filter(|v| !all[1].contains(v))
            .cloned()
            .collect(),
    )))
}
fn setsymmetricdifference(a: FuncArgs) -> Result<Value, String> {
    let all = sets(&a)?;
    let mut out = Vec::new();
    for v in all.concat() {
        if all.iter().filter(|s| s.contains(&v)).count() % 2 == 1 {
            out.push(v);
        }
    }
    Ok(Value::Array(ordered(out)))
}
fn setproduct(a: FuncArgs) -> Result<Value, String> {
    if a.len() < 2 {
        return Err("at least two arguments are required".into());
    }
    let mut out: Vec<Vec<Value>> = vec![Vec::new()];
    for i in 0..a.len() {
        let items = list(&a, i)?;
        let mut next = Vec::new();
        for prefix in &out {
            for v in &items {
                let mut p = prefix.clone();
                p.push(v.clone());
                next.push(p);
            }
        }
        out = next;
    }
    Ok(Value::Array(out.into_iter().map(Value::Array).collect()))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::j;

    #[test]
    fn lists_as_buildx() {
        assert_eq!(j("element([\"a\", \"b\"], 3)"), r#""b""#);
        assert!(j("element([\"a\"], -1)").starts_with("error"));
        assert_eq!(j("slice([1, 2, 3, 4], 1, 3)"), "[2,3]");
        assert_eq!(j("sort([\"b\", \"a\", \"c\"])"), r#"["a","b","c"]"#);
        assert_eq!(j("reverselist([1, 2])"), "[2,1]");
        assert_eq!(j("range(3)"), "[0,1,2]");
        assert_eq!(j("range(1, 4)"), "[1,2,3]");
        assert_eq!(j("range(4, 1)"), "[4,3,2]");
        assert_eq!(j("range(0, 1, 0.5)"), "[0,0.5]");
        assert_eq!(j("chunklist([1, 2, 3], 2)"), "[[1,2],[3]]");
        assert_eq!(j("zipmap([\"a\", \"b\"], [1, 2])"), r#"{"a":1,"b":2}"#);
        assert_eq!(j("compact([\"a\", \"\", \"b\"])"), r#"["a","b"]"#);
        assert_eq!(j("coalescelist([], [1])"), "[1]");
        assert_eq!(j(r#"coalesce(null, "", "x")"#), "\"\"");
        assert_eq!(j("indexof([\"a\", \"b\"], \"b\")"), "1");
        assert_eq!(j("lookup({a = 1}, \"b\", 2)"), "2");
        assert!(j("lookup({a = 1}, \"b\")").starts_with("error"));
        assert_eq!(j("index({a = 1}, \"a\")"), "1");
        assert_eq!(j("hasindex([1], 1)"), "false");
        assert!(j("length(\"héllo\")").starts_with("error"));
    }

    #[test]
    fn sets_as_buildx() {
        assert_eq!(j("setunion([\"b\"], [\"a\", \"b\"])"), r#"["a","b"]"#);
        assert_eq!(
            j("setintersection([\"a\", \"b\"], [\"b\", \"c\"])"),
            r#"["b"]"#
        );
        assert_eq!(j("setsubtract([\"a\", \"b\"], [\"a\"])"), r#"["b"]"#);
        assert_eq!(j("setsymmetricdifference([1, 2], [2, 3])"), "[1,3]");
        assert_eq!(j("setproduct([\"a\", \"b\"], [1])"), r#"[["a",1],["b",1]]"#);
        assert_eq!(j("sethaselement([\"a\"], \"a\")"), "true");
    }
}
