//! End-to-end tests of instruction typing: text through `parse` to typed values.

use frontend::instructions::{Command, Healthcheck, ShellOrExec};
use frontend::{parse, ErrorKind};

fn err(text: &str) -> String {
    match parse(text) {
        Ok(df) => panic!("expected an error, got {df:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn multi_stage() {
    let df = parse(
        "ARG BASE=alpine\nARG V\nFROM $BASE AS Build\nRUN make\nFROM --platform=linux/amd64 scratch\nCOPY --from=build /out /out\n",
    )
    .expect("parses");
    assert_eq!(df.meta_args.len(), 2);
    match &df.meta_args[0].command {
        Command::Arg(a) => {
            assert_eq!(a[0].name, "BASE");
            assert_eq!(a[0].default.as_deref(), Some("alpine"));
        }
        c => panic!("{c:?}"),
    }
    assert_eq!(df.stages.len(), 2);
    assert_eq!(df.stages[0].name(), Some("build"));
    assert_eq!(df.stages[0].instructions.len(), 1);
    assert_eq!(df.stages[0].from.span.line, 3);
    match &df.stages[1].from.command {
        Command::From(f) => {
            assert_eq!(f.image, "scratch");
            assert_eq!(f.platform.as_deref(), Some("linux/amd64"));
            assert_eq!(f.stage_name, None);
        }
        c => panic!("{c:?}"),
    }
    match &df.stages[1].instructions[0].command {
        Command::Copy(c) => {
            assert_eq!(c.from.as_deref(), Some("build"));
            assert_eq!(c.sources, vec!["/out".to_string()]);
            assert_eq!(c.dest, "/out");
        }
        c => panic!("{c:?}"),
    }
}

#[test]
fn each_instruction_kind() {
    let text = r#"FROM alpine
RUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --network=none echo hi
RUN ["echo", "hi"]
COPY --chown=1:1 --chmod=644 --link --parents=false --exclude=*.md --exclude=x a b /dst/
ADD --checksum=sha256:abc --keep-git-dir --unpack=false http://x/y.tar /y
ENV A=1 B="two words"
ENV LEGACY some value
ARG X Y=2
LABEL a=b
WORKDIR /w
USER nobody
CMD ["sh"]
ENTRYPOINT echo hi
EXPOSE 80 443/udp
VOLUME ["/v1", "/v2"]
SHELL ["/bin/bash", "-c"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --retries=3 CMD curl -f http://localhost/
HEALTHCHECK NONE
ONBUILD RUN echo later
MAINTAINER someone
"#;
    let df = parse(text).expect("parses");
    let ins: Vec<&Command> = df.stages[0].instructions.iter().map(|i| &i.command).collect();
    let kws: Vec<&str> = ins.iter().map(|c| c.keyword()).collect();
    assert_eq!(
        kws,
        vec![
            "RUN", "RUN", "COPY", "ADD", "ENV", "ENV", "ARG", "LABEL", "WORKDIR", "USER", "CMD", "ENTRYPOINT",
            "EXPOSE", "VOLUME", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "HEALTHCHECK", "ONBUILD", "MAINTAINER"
        ]
    );
    match ins[0] {
        Command::Run(r) => {
            assert_eq!(r.mounts.len(), 2);
            assert_eq!(r.mounts[0].value.as_deref(), Some("type=cache,target=/c"));
            assert_eq!(r.mounts[0].span.col, 5);
            assert_eq!(r.network.as_deref(), Some("none"));
            assert_eq!(r.cmd, ShellOrExec::Shell("echo hi".into()));
        }
        c => panic!("{c:?}"),
    }
    assert!(matches!(ins[1], Command::Run(r) if r.cmd == ShellOrExec::Exec(vec!["echo".into(), "hi".into()])));
    match ins[2] {
        Command::Copy(c) => {
            assert_eq!(c.chown.as_deref(), Some("1:1"));
            assert_eq!(c.chmod.as_deref(), Some("644"));
            assert!(c.link);
            assert!(!c.parents);
            assert_eq!(c.exclude, vec!["*.md".to_string(), "x".to_string()]);
            assert_eq!(c.sources, vec!["a".to_string(), "b".to_string()]);
            assert_eq!(c.dest, "/dst/");
        }
        c => panic!("{c:?}"),
    }
    match ins[3] {
        Command::Add(c) => {
            assert_eq!(c.checksum.as_deref(), Some("sha256:abc"));
            assert!(c.keep_git_dir);
            assert_eq!(c.unpack, Some(false));
        }
        c => panic!("{c:?}"),
    }
    match ins[4] {
        Command::Env(kv) => {
            assert_eq!(kv.len(), 2);
            assert_eq!(kv[0].key, "A");
            assert_eq!(kv[0].value, "1");
            assert_eq!(kv[1].key, "B");
        }
        c => panic!("{c:?}"),
    }
    match ins[5] {
        Command::Env(kv) => {
            assert_eq!(kv[0].key, "LEGACY");
            assert_eq!(kv[0].value, "some value");
        }
        c => panic!("{c:?}"),
    }
    assert!(matches!(ins[6], Command::Arg(a) if a.len() == 2 && a[1].default.as_deref() == Some("2")));
    assert!(matches!(ins[8], Command::Workdir(w) if w == "/w"));
    assert!(matches!(ins[9], Command::User(u) if u == "nobody"));
    assert!(matches!(ins[10], Command::Cmd(ShellOrExec::Exec(v)) if v == &vec!["sh".to_string()]));
    assert!(matches!(ins[11], Command::Entrypoint(ShellOrExec::Shell(s)) if s == "echo hi"));
    assert!(matches!(ins[12], Command::Expose(p) if p.len() == 2));
    assert!(matches!(ins[13], Command::Volume(v) if v.len() == 2));
    assert!(matches!(ins[14], Command::Shell(v) if v.len() == 2));
    assert!(matches!(ins[15], Command::StopSignal(s) if s == "SIGTERM"));
    match ins[16] {
        Command::Healthcheck(Healthcheck::Cmd { test, interval, retries, .. }) => {
            assert_eq!(test, &ShellOrExec::Shell("curl -f http://localhost/".into()));
            assert_eq!(interval.as_deref(), Some("5s"));
            assert_eq!(retries.as_deref(), Some("3"));
        }
        c => panic!("{c:?}"),
    }
    assert!(matches!(ins[17], Command::Healthcheck(Healthcheck::None)));
    match ins[18] {
        Command::Onbuild(i) => assert!(matches!(&i.command, Command::Run(r) if r.cmd == ShellOrExec::Shell("echo later".into()))),
        c => panic!("{c:?}"),
    }
}

#[test]
fn unknown_flag_suggests() {
    let e = parse("FROM a\nCOPY --chwon=1 a b\n").expect_err("unknown flag");
    assert!(matches!(&e.kind, ErrorKind::UnknownFlag { flag, .. } if flag == "chwon"));
    assert_eq!((e.span.line, e.span.col), (2, 6));
    assert!(e.to_string().contains("did you mean --chown?"), "{e}");
    assert!(err("FROM a\nWORKDIR --foo=1 /x\n").contains("unknown flag --foo"));
}

#[test]
fn unknown_instruction_suggests() {
    let e = parse("FROM a\nCOPPY a b\n").expect_err("unknown instruction");
    assert!(matches!(&e.kind, ErrorKind::UnknownInstruction { suggestion: Some(s), .. } if s == "COPY"), "{e}");
}

#[test]
fn instruction_before_from() {
    let e = err("ARG A\nRUN echo\nFROM a\n");
    assert!(e.contains("before the first FROM"), "{e}");
}

#[test]
fn bad_arguments() {
    assert!(err("FROM a AS\n").contains("one or three"));
    assert!(err("FROM a\nCOPY onlyone\n").contains("at least two arguments"));
    assert!(err("FROM a\nSHELL /bin/sh -c\n").contains("JSON"));
    assert!(err("FROM a\nCOPY --link=maybe a b\n").contains("boolean"));
    assert!(err("FROM a\nCOPY --from=a --from=b a b\n").contains("duplicate"));
    assert!(err("FROM a\nONBUILD FROM b\n").contains("isn't allowed"));
    assert!(err("FROM a\nONBUILD ONBUILD RUN x\n").contains("Chaining"));
    assert!(err("FROM a\nHEALTHCHECK FOO x\n").contains("try CMD"));
    assert!(err("FROM a AS 1x\n").contains("invalid name"));
    let df = parse("FROM a\nCOPY --link=false a b\n").expect("parses");
    assert!(matches!(&df.stages[0].instructions[0].command, Command::Copy(c) if !c.link));
}

#[test]
fn heredocs_attach() {
    let df = parse("FROM a\nRUN <<EOF\necho hi\nEOF\nCOPY <<X /x\nbody\nX\n").expect("parses");
    let ins = &df.stages[0].instructions;
    assert!(matches!(&ins[0].command, Command::Run(r) if r.heredocs.len() == 1 && r.heredocs[0].name == "EOF"));
    assert!(matches!(&ins[1].command, Command::Copy(c) if c.heredocs.len() == 1 && c.dest == "/x"));
    assert_eq!(ins[0].end_line, 4);
}
