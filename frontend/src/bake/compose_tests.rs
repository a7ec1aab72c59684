#![allow(clippy::unwrap_used)]
use super::*;

fn read(text: &str, env: &[(&str, &str)]) -> Result<(Group, Vec<Target>), BakeError> {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load(
        &[BakeFile {
            name: "compose.yaml".into(),
            text: text.into(),
        }],
        &env,
    )
}

#[test]
fn services_with_build_become_targets() {
    let (g, t) = read(
        "services:\n  db:\n    image: postgres\n  web.app:\n    build: ./web\n    image: r/web:${TAG:-dev}\n  api:\n    image: r/api\n    build:\n      context: api\n      args:\n        - A=1\n        - FROM_ENV\n        - UNSET\n      tags: [r/api:x]\n",
        &[("FROM_ENV", "e")],
    )
    .unwrap();
    assert_eq!(g.targets, ["web_app", "api"]);
    assert_eq!(t[0].context.as_deref(), Some("./web"));
    assert_eq!(t[0].tags, Some(vec!["r/web:dev".to_string()]));
    assert_eq!(t[1].tags, Some(vec!["r/api:x".to_string()]));
    let args = t[1].args.clone().unwrap();
    assert_eq!(args.get("A").map(String::as_str), Some("1"));
    assert_eq!(args.get("FROM_ENV").map(String::as_str), Some("e"));
    assert!(!args.contains_key("UNSET"));
}

#[test]
fn x_bake_and_sizes() {
    let (_, t) = read(
        "services:\n  a:\n    image: a:1\n    build:\n      shm_size: 128m\n      ulimits:\n        nofile: {soft: 1024, hard: 2048}\n      cache_from: [user/app:cache]\n      x-bake:\n        platforms: linux/amd64 linux/arm64\n        cache-from: type=local,src=c\n        no-cache: true\n",
        &[],
    )
    .unwrap();
    assert_eq!(t[0].shm_size.as_deref(), Some("128MiB"));
    assert_eq!(t[0].ulimits, Some(vec!["nofile=1024:2048".to_string()]));
    assert_eq!(
        t[0].platforms,
        Some(vec!["linux/amd64".to_string(), "linux/arm64".to_string()])
    );
    let refs: Vec<Option<&str>> = t[0]
        .cache_from
        .iter()
        .flatten()
        .map(|e| e.get("ref").or(e.get("src")).and_then(J::as_str))
        .collect();
    assert_eq!(refs, [Some("user/app:cache"), Some("c")]);
    assert_eq!(t[0].no_cache, Some(true));
    assert_eq!(t[0].tags, Some(vec!["a:1".to_string()]));
    assert_eq!(bytes_size(1536 * 1024 * 1024), "1.5GiB");
}

#[test]
fn errors_name_the_place() {
    let e = read(
        "services:\n  a:\n    build:\n      context: .\n      foo: bar\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "compose.yaml:5:7: services.a.build: additional properties 'foo' not allowed"
    );
    let e = read(
        "services:\n  a:\n    build:\n      args:\n        X: ${NEED:?set NEED}\n",
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("compose.yaml:5:12: services.a.build.args.X: required variable NEED"),
        "{e}"
    );
    let e = read("services:\n  a:\n    entrypoint: x\n", &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("neither an image nor a build context"),
        "{e}"
    );
    let e = read(
        "services:\n  a:\n    extends: {service: b}\n    build: .\n",
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("compose.yaml:3:14: a service's `extends` is not supported"),
        "{e}"
    );
    let e = read("", &[]).unwrap_err();
    assert!(e.to_string().contains("empty compose file"), "{e}");
}

#[test]
fn files_merge_in_order() {
    let a = BakeFile { name: "compose.yaml".into(), text: "services:\n  a:\n    build:\n      context: .\n      args: {X: '1', Y: '2'}\n      tags: [t1]\n".into() };
    let b = BakeFile { name: "compose.override.yaml".into(), text: "services:\n  a:\n    build:\n      args: [Y=3]\n      tags: [t2]\n      target: final\n".into() };
    let (_, t) = load(&[a, b], &BTreeMap::new()).unwrap();
    let args = t[0].args.clone().unwrap();
    assert_eq!((args["X"].as_str(), args["Y"].as_str()), ("1", "3"));
    assert_eq!(t[0].tags, Some(vec!["t1".to_string(), "t2".to_string()]));
    assert_eq!(t[0].target.as_deref(), Some("final"));
}

#[test]
fn compose_files_are_told_apart() {
    assert!(is_compose("x.yml", "anything"));
    assert!(!is_compose("docker-bake.json", "{\"services\": {}}"));
    assert!(is_compose("-", "services:\n  a:\n    build: .\n"));
    assert!(!is_compose("-", "{\"target\": {\"a\": {}}}"));
    assert!(!is_compose("-", "target \"a\" {\n}\n"));
}

#[test]
fn ssh_sorted_and_ulimit_numbers_as_buildx() {
    let (_, t) = read(
        "services:\n  a:\n    build:\n      ssh:\n        - key=/path/to/key\n        - default\n      ulimits:\n        nproc: 65535\n      x-bake:\n        ssh: other=p default\n",
        &[],
    )
    .unwrap();
    let ids: Vec<&str> = t[0]
        .ssh
        .iter()
        .flatten()
        .filter_map(|e| e.get("id").and_then(J::as_str))
        .collect();
    assert_eq!(ids, ["default", "key", "other"]);
    assert_eq!(t[0].ulimits, Some(vec!["nproc=0:0".to_string()]));
}

#[test]
fn project_name_from_file_then_env_then_bake() {
    let text =
        "name: shop\nservices:\n  a:\n    build:\n      args: {P: \"${COMPOSE_PROJECT_NAME}\"}\n";
    let arg = |t: &(Group, Vec<Target>)| t.1[0].args.as_ref().map(|a| a["P"].clone());
    assert_eq!(arg(&read(text, &[]).unwrap()).as_deref(), Some("shop"));
    let env = [("COMPOSE_PROJECT_NAME", "env")];
    assert_eq!(arg(&read(text, &env).unwrap()).as_deref(), Some("shop"));
    let unnamed = text.replace("name: shop\n", "");
    assert_eq!(arg(&read(&unnamed, &env).unwrap()).as_deref(), Some("env"));
    assert_eq!(
        arg(&read(&text.replace("name: shop\n", ""), &[]).unwrap()).as_deref(),
        Some("bake")
    );
}
