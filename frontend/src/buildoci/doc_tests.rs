//! Every error the typing step gives, asserted word for word, and the
//! defaults of a minimal document.

use super::*;

fn err(text: &str) -> String {
    match parse("build.yaml", text) {
        Ok(doc) => panic!("expected an error, got {doc:?}"),
        Err(e) => e.to_string(),
    }
}

const MIN: &str = "images:\n  - architecture: amd64\n    os: linux\n";

#[test]
fn a_minimal_document_takes_build_oci_rs_defaults() {
    let doc = parse("build.yaml", MIN).expect("valid document");
    assert_eq!(doc.compression, Compression::Zstd);
    assert_eq!(doc.compression_level, 3);
    assert!(!doc.skip_xattrs);
    assert_eq!(doc.images.len(), 1);
    assert_eq!((doc.images[0].architecture.as_str(), doc.images[0].os.as_str()), ("amd64", "linux"));
    assert!(doc.images[0].layer.is_none() && doc.images[0].parent.is_none());
    let gz = parse("build.yaml", &format!("compression: gzip\n{MIN}")).expect("valid document");
    assert_eq!((gz.compression, gz.compression_level), (Compression::Gzip, 5));
    let none = parse("build.yaml", &format!("compression: none\ncompression-level: 9\n{MIN}")).expect("valid document");
    assert_eq!(none.compression, Compression::Disabled);
}

#[test]
fn parent_index_defaults_to_zero_and_keeps_its_place() {
    let doc = parse("b.yaml", "images:\n  - architecture: arm64\n    os: linux\n    parent:\n      image: base\n").expect("valid document");
    let p = doc.images[0].parent.as_ref().expect("parent");
    assert_eq!(p.index.value, 0);
    assert_eq!((p.image.value.as_str(), p.image.path.as_str(), p.image.span.line, p.image.span.col), ("base", "images[0].parent.image", 5, 14));
    let e = DocError::at("b.yaml", &p.image, "no OCI layout here");
    assert_eq!(e.to_string(), "b.yaml:5:14: images[0].parent.image: no OCI layout here");
}

#[test]
fn config_is_normalized_to_the_image_spec_shape() {
    let doc = parse(
        "build.yaml",
        "images:\n  - architecture: amd64\n    os: linux\n    config:\n      Cmd: [sleep, 10]\n      ExposedPorts: [80/tcp]\n      Volumes: {/data: {}}\n      Labels: {version: 2}\n      ArgsEscaped: true\n",
    )
    .expect("valid document");
    let c = serde_json::to_value(&doc.images[0].config).expect("json");
    assert_eq!(c, serde_json::json!({"ArgsEscaped": true, "Cmd": ["sleep", "10"], "ExposedPorts": {"80/tcp": {}}, "Labels": {"version": "2"}, "Volumes": {"/data": {}}}));
}

#[test]
fn errors_name_file_position_key_path_and_what_was_expected() {
    let cases: &[(&str, &str)] = &[
        ("", "build.yaml:1:1: the document is empty: expected a mapping with an \"images\" list"),
        ("- a\n", "build.yaml:1:1: expected a mapping, found a list"),
        ("images: [\n", "build.yaml:2:1: not valid YAML: while parsing a node, did not find expected node content"),
        ("compresion: gzip\n", "build.yaml:1:1: unknown key \"compresion\", expected one of: compression, compression-level, skip-xattrs, prefetch-limit-mb, annotations, images"),
        ("compression_level: 3\n", "build.yaml:1:1: unknown key \"compression_level\" (did you mean \"compression-level\"?), expected one of: compression, compression-level, skip-xattrs, prefetch-limit-mb, annotations, images"),
        ("compression: lz4\n", "build.yaml:1:14: compression: expected gzip, zstd or disabled (also: none), found \"lz4\""),
        ("compression: gzip\ncompression-level: 12\n", "build.yaml:2:20: compression-level: 12 is out of range for gzip: expected 1 to 9"),
        ("compression-level: fast\n", "build.yaml:1:20: compression-level: expected a non-negative integer, found the string \"fast\""),
        ("skip-xattrs: 1\n", "build.yaml:1:14: skip-xattrs: expected true or false, found the integer 1"),
        ("annotations: [a]\n", "build.yaml:1:14: annotations: expected a mapping, found a list"),
        ("compression: gzip\n", "build.yaml:1:1: missing key \"images\": expected a list of images"),
        ("images: {}\n", "build.yaml:1:9: images: expected a list, found a mapping"),
        ("images: []\n", "build.yaml:1:9: images: expected at least one image"),
        ("images:\n  - os: linux\n", "build.yaml:2:5: images[0]: missing key \"architecture\" (amd64, arm64, ...)"),
        ("images:\n  - architecture: amd64\n", "build.yaml:2:5: images[0]: missing key \"os\" (linux, ...)"),
        ("images:\n  - architecture: 64\n    os: linux\n", "build.yaml:2:19: images[0].architecture: expected a string, found the integer 64"),
        ("images:\n  - architecture: amd64\n    os: linux\n    arch: x\n", "build.yaml:4:5: images[0]: unknown key \"arch\", expected one of: architecture, os, variant, os.version, os.features, author, comment, layer, parent, config, annotations, index-annotations"),
        ("images:\n  - architecture: amd64\n    os: linux\n    os: linux\n", "build.yaml:4:5: images[0]: key \"os\" given twice"),
        ("images:\n  - architecture: amd64\n    os: linux\n    layer: ''\n", "build.yaml:4:12: images[0].layer: expected a non-empty string"),
        ("images:\n  - architecture: amd64\n    os: linux\n    layer: [a]\n", "build.yaml:4:12: images[0].layer: expected a string, found a list"),
        ("images:\n  - architecture: amd64\n    os: linux\n    parent: base\n", "build.yaml:4:13: images[0].parent: expected a mapping, found the string \"base\""),
        ("images:\n  - architecture: amd64\n    os: linux\n    parent: {index: 1}\n", "build.yaml:4:13: images[0].parent: missing key \"image\": expected the path of the parent's OCI layout"),
        ("images:\n  - architecture: amd64\n    os: linux\n    parent:\n      image: base\n      index: first\n", "build.yaml:6:14: images[0].parent.index: expected a non-negative integer, found the string \"first\""),
        ("images:\n  - architecture: amd64\n    os: linux\n    parent: {image: base, tag: x}\n", "build.yaml:4:27: images[0].parent: unknown key \"tag\", expected one of: image, index"),
        ("images:\n  - architecture: amd64\n    os: linux\n    config:\n      Cmd: /bin/sh\n", "build.yaml:5:12: images[0].config.Cmd: expected a list, found the string \"/bin/sh\""),
        ("images:\n  - architecture: amd64\n    os: linux\n    config:\n      env: []\n", "build.yaml:5:7: images[0].config: unknown key \"env\" (did you mean \"Env\"?), expected one of: User, ExposedPorts, Env, Entrypoint, Cmd, Volumes, WorkingDir, Labels, StopSignal, ArgsEscaped, Healthcheck, OnBuild, Shell"),
        ("images:\n  - architecture: amd64\n    os: linux\n    config:\n      Env: [A=1, {B: 2}]\n", "build.yaml:5:18: images[0].config.Env[1]: expected a string, found a mapping"),
        ("images:\n  - architecture: amd64\n    os: linux\n    config:\n      ExposedPorts: {80/tcp: 1}\n", "build.yaml:5:30: images[0].config.ExposedPorts.80/tcp: expected an empty mapping ({}), found the integer 1"),
        ("images:\n  - architecture: amd64\n    os: linux\n    index-annotations: {a: [1]}\n", "build.yaml:4:28: images[0].index-annotations.a: expected a string, found a list"),
        ("images:\n  - architecture: amd64\n    os: linux\n    os.features: x\n", "build.yaml:4:18: images[0].os.features: expected a list, found the string \"x\""),
        ("a: *nope\n", "build.yaml:1:4: not valid YAML: while parsing node, found unknown anchor"),
    ];
    let wrong: Vec<String> = cases.iter().filter(|(text, want)| err(text) != *want).map(|(text, want)| format!("{text:?}\n  got:  {}\n  want: {want}", err(text))).collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
