//! Golden tests of the build-oci-rs YAML frontend: each
//! `tests/buildoci/<case>/build.yaml` is parsed and the typed document, as
//! JSON, compared with `doc.json` beside it. `STROMATEKT_BLESS=1` rewrites
//! the expected files that differ and then fails (refused under `CI=true`);
//! review the diff like code. Facts checked by hand against each document
//! are asserted too, so a blessed file cannot hide a wrong parse.

use std::fs;
use std::path::Path;

fn golden(case: &str) -> frontend::buildoci::Document {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/buildoci").join(case);
    let text = fs::read_to_string(dir.join("build.yaml")).expect("golden case");
    let doc = frontend::buildoci::parse("build.yaml", &text).unwrap_or_else(|e| panic!("{case}: {e}"));
    let got = serde_json::to_string_pretty(&doc).expect("document serializes") + "\n";
    let want_path = dir.join("doc.json");
    let want = fs::read_to_string(&want_path).unwrap_or_default();
    if got != want {
        match std::env::var("STROMATEKT_BLESS").as_deref() {
            Ok("1") if std::env::var("CI").as_deref() != Ok("true") => {
                fs::write(&want_path, &got).expect("bless");
                panic!("{case}: blessed {}; review the diff and run again", want_path.display());
            }
            Ok(v) if v != "1" => panic!("STROMATEKT_BLESS={v}: only 1 is understood"),
            _ => panic!("{case}: doc.json differs (STROMATEKT_BLESS=1 rewrites it):\n{got}"),
        }
    }
    doc
}

#[test]
fn multiarch() {
    use frontend::buildoci::Compression;
    let doc = golden("multiarch");
    assert_eq!((doc.compression, doc.compression_level), (Compression::Gzip, 5));
    assert_eq!(doc.annotations["org.opencontainers.image.description"], "My container image");
    assert_eq!(doc.images.len(), 2);
    assert_eq!(doc.images[1].variant.as_deref(), Some("v7"));
    assert_eq!(doc.images[0].index_annotations["org.opencontainers.image.ref.name"], "latest-amd64");
    assert_eq!(doc.images[1].layer.as_ref().map(|l| (l.value.as_str(), l.span.line)), Some(("/build/rootfs-arm", 15)));
}

#[test]
fn parent_config() {
    use frontend::buildoci::Compression;
    let doc = golden("parent-config");
    assert_eq!((doc.compression, doc.compression_level, doc.skip_xattrs), (Compression::Zstd, 19, true));
    let img = &doc.images[0];
    let parent = img.parent.as_ref().expect("parent");
    assert_eq!((parent.image.value.as_str(), parent.index.value), ("../base-oci", 1));
    assert_eq!((img.os_version.as_deref(), img.os_features.clone()), (Some("6.1"), vec!["sse4".to_string()]));
    assert_eq!(img.config["User"], "1000");
    assert_eq!(img.config["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(img.config["Healthcheck"]["Interval"], 30000000000i64);
    assert_eq!((img.author.as_deref(), img.comment.as_deref()), (Some("My Name"), Some("Build info")));
}
