//! Fuzz target: a bake file (HCL, or JSON when the first byte is `{`)
//! through loading, resolution of the default group and every target, and
//! `--print`'s JSON, which must parse. Errors are expected; panics, stack
//! overflows and hangs are bugs.
#![no_main]

use frontend::bake::{load, resolve, BakeFile};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let name = if text.trim_start().starts_with('{') { "docker-bake.json" } else { "docker-bake.hcl" };
    let env = BTreeMap::from([("TAG".to_string(), "1.0".to_string())]);
    let files = [BakeFile { name: name.into(), text }];
    let Ok(config) = load(&files, &env) else { return };
    for requested in [vec![], vec!["*".to_string()]] {
        if let Ok(r) = resolve(&config, &requested, &[]) {
            let json = r.print_json();
            let _: serde_json::Value = serde_json::from_str(&json).expect("--print writes JSON");
        }
    }
});
