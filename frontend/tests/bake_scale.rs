//! Bake files of platform teams hold hundreds of targets: reading one stays
//! fast (evaluation work grows with the file, not with its square).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use frontend::bake::{self, BakeFile};

#[test]
fn hundreds_of_targets_with_references_read_quickly() {
    let mut text = String::from("variable \"TAG\" { default = \"v1\" }\n");
    text.push_str("target \"base\" {\n  target = \"final\"\n  args = { A = \"1\" }\n}\n");
    for i in 0..500 {
        text.push_str(&format!(
            "target \"t{i}\" {{\n  inherits = [\"base\"]\n  context = \"svc{i}\"\n  tags = [\"reg/t{i}:${{TAG}}\"]\n  target = target.base.target\n  args = {{ B = target.base.args.A, C = \"${{TAG}}-{i}\" }}\n  labels = {{ x = \"y\" }}\n  platforms = [\"linux/amd64\"]\n}}\n"
        ));
    }
    text.push_str("target \"m\" {\n  name = \"m-${v}\"\n  matrix = { v = range(100) }\n  tags = [\"m:${v}\"]\n}\n");
    let files = [BakeFile {
        name: "docker-bake.hcl".into(),
        text,
    }];
    let start = Instant::now();
    let config = bake::load(&files, &BTreeMap::new()).unwrap();
    let names: Vec<String> = config.targets.iter().map(|t| t.name.clone()).collect();
    let resolved = bake::resolve(&config, &names, &[]).unwrap();
    let took = start.elapsed();
    assert_eq!(resolved.targets.len(), 601);
    assert_eq!(resolved.targets["t499"].target.as_deref(), Some("final"));
    assert!(
        took < Duration::from_secs(15),
        "reading 601 targets took {took:?}: something grew quadratically"
    );
}
