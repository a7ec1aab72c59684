#!/usr/bin/env python3
"""Turn BuildKit's lint integration tests into case directories for
tests/lint_modern.rs (LINT_MODERN_EXTRA=DIR).

Usage: scripts/buildkit-lint-cases.py dockerfile_lint_test.go OUT_DIR

Reads BuildKit's frontend/dockerfile/dockerfile_lint_test.go (of a BuildKit
checkout: `git show v0.25.0:frontend/dockerfile/dockerfile_lint_test.go`;
nothing of it is kept in this repository) and writes, for each
checkLinterWarnings call, OUT_DIR/<test>-<n>/ with the Dockerfile, the
.dockerignore and a `flags` file of its build args. Go format verbs (`%s`)
get the Linux values of the test (busybox, alpine -> busybox, linux, env).
"""
import os
import re
import shutil
import sys


def go_string(expr):
    """The Linux value of a Go string expression of the tests."""
    m = re.match(r'\s*integration\.UnixOrWindows\(\s*"([^"]*)"', expr)
    if m:
        return m.group(1)
    m = re.match(r'\s*"([^"]*)"', expr)
    return m.group(1) if m else None


def call_args(text, start):
    """The rest of a call's argument list, from `start` to its closing parenthesis."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return text[start:]


def main():
    src, out = sys.argv[1], sys.argv[2]
    text = open(src).read()
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    count = 0
    for func in re.split(r"\nfunc ", text):
        name = func.split("(")[0]
        if not name.startswith("test"):
            continue
        dockerfile, ignore, n = None, None, 0
        variables = {v: go_string(e) for v, e in re.findall(r'(\w+)\s*:=\s*(integration\.UnixOrWindows\([^)]*\))', func)}
        pos = 0
        tokens = re.compile(
            r"(?P<df>dockerfile\s*:?=\s*(?:\[\]byte\(|fmt\.Appendf\(nil,\s*))`(?P<dfb>.*?)`"
            r"|(?P<ig>dockerignore\s*:?=\s*\[\]byte\()`(?P<igb>.*?)`"
            r"|(?P<call>checkLinterWarnings\(t, sb, &lintTestParams\{)",
            re.S)
        for m in tokens.finditer(func, pos):
            if m.group("df"):
                body = m.group("dfb")
                if "%s" in body:
                    found = re.findall(r'(integration\.UnixOrWindows\([^)]*\)|"[^"]*"|\w+)\s*[,)]', call_args(func, m.end()))
                    args = [go_string(a) if go_string(a) is not None else variables.get(a) for a in found]
                    vals = [a if a else "busybox" for a in args] or ["busybox"]
                    vals = ["busybox" if v == "alpine" else v for v in vals]
                    parts = body.split("%s")
                    body = parts[0] + "".join((vals[i] if i < len(vals) else "busybox") + p for i, p in enumerate(parts[1:]))
                dockerfile = body
            elif m.group("ig"):
                ignore = m.group("igb")
            elif m.group("call") and dockerfile is not None:
                end = func.find("\n\t})", m.end())
                block = func[m.end(): end if end >= 0 else None]
                n += 1
                count += 1
                d = os.path.join(out, f"{name}-{n:02d}")
                os.makedirs(d)
                with open(os.path.join(d, "Dockerfile"), "w") as f:
                    f.write(dockerfile)
                if "DockerIgnore:" in block and ignore is not None:
                    with open(os.path.join(d, ".dockerignore"), "w") as f:
                        f.write(ignore)
                flags = []
                for k, v in re.findall(r'"build-arg:([^"]+)":\s*([^\n]+)', block):
                    val = go_string(v)
                    if val is not None:
                        flags.append(f"--build-arg={k}={val}")
                for v in re.findall(r'"target":\s*"([^"]*)"', block):
                    flags.append(f"--target={v}")
                if flags:
                    with open(os.path.join(d, "flags"), "w") as f:
                        f.write("\n".join(flags) + "\n")
    print(f"{count} cases in {out}")


if __name__ == "__main__":
    main()
