#!/usr/bin/env bash
# Compare `stromatekt bake --print` with the modern Docker's `docker buildx
# bake --print` on bake files we do not own: the docker-bake.hcl/.json files
# of the repositories fetched under the mirror directory, and the bake files
# written inline in buildx's own tests (bake/hcl_test.go, bake/bake_test.go,
# tests/bake.go of
# the buildx checkout in the mirror: each ParseFile/ParseFiles/ReadTargets
# call with literal arguments becomes one comparison, with the t.Setenv
# values set before it).
#
# Nothing is copied into this repository: files are read from the mirror's git
# directories into a scratch directory under /tmp (the modern Docker reads
# files under /tmp only) and removed afterwards.
#
# For each file (or test snippet) both tools list the targets, then print all
# of them and the default group. Outputs are compared byte for byte, after
# masking RFC 3339 times within two minutes of now (`timestamp()` differs
# between two runs). A line per comparison:
#
#   equal      REPO PATH (N targets)
#   different  REPO PATH  + a short diff
#   both-fail  REPO PATH  (both reject the file: compared as equal)
#   ours-fails / theirs-fails REPO PATH + the error
#
# Usage: scripts/bake-compat.sh [--projects|--buildx-tests|--all] [REPO...]
#   STROMATEKT      the binary (default: target/debug/stromatekt)
#   MODERN_DOCKER   the modern Docker CLI (default: ../shared/modern-docker/docker)
#   MIRROR          where fetched repositories are (default: /work/.mirror)
#   BUILDX_REF      the buildx revision whose tests are read (default: v0.29.1)
# Exit status: 0 when every comparison is equal or both-fail, 1 otherwise.

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
STROMATEKT=${STROMATEKT:-$here/target/debug/stromatekt}
MODERN_DOCKER=${MODERN_DOCKER:-$here/../shared/modern-docker/docker}
MIRROR=${MIRROR:-/work/.mirror}
BUILDX_REF=${BUILDX_REF:-v0.29.1}
mode=all
if [[ ${1:-} == --* ]]; then
  case $1 in
    --projects) mode=projects ;;
    --buildx-tests) mode=buildx-tests ;;
    --all) mode=all ;;
    *) echo "usage: $0 [--projects|--buildx-tests|--all] [REPO...]" >&2; exit 2 ;;
  esac
  shift
fi
[[ -x $STROMATEKT ]] || { echo "bake-compat: $STROMATEKT is missing: build it (cargo build --bin stromatekt) or set STROMATEKT" >&2; exit 2; }
[[ -x $MODERN_DOCKER ]] || { echo "bake-compat: $MODERN_DOCKER is missing: start ../shared/modern-docker/up.sh or set MODERN_DOCKER" >&2; exit 2; }
"$MODERN_DOCKER" version >/dev/null 2>&1 || { echo "bake-compat: the modern Docker does not answer (../shared/modern-docker/up.sh)" >&2; exit 2; }
[[ -d $MIRROR ]] || { echo "bake-compat: no mirror directory $MIRROR (fetch repositories first or set MIRROR)" >&2; exit 2; }

scratch=$(mktemp -d /tmp/bake-compat.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

exec python3 - "$mode" "$STROMATEKT" "$MODERN_DOCKER" "$MIRROR" "$BUILDX_REF" "$scratch" "$@" <<'PY'
import datetime, difflib, json, os, re, subprocess, sys

mode, ours, docker, mirror, buildx_ref, scratch, *only = sys.argv[1:]
results = {"equal": 0, "both-fail": 0, "different": 0, "ours-fails": 0, "theirs-fails": 0}
now = datetime.datetime.now(datetime.timezone.utc)
stamp = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")

def mask(text):
    def repl(m):
        try:
            t = datetime.datetime.strptime(m.group(0), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            return m.group(0)
        return "<now>" if abs((t - now).total_seconds()) < 120 else m.group(0)
    return stamp.sub(repl, text)

def run(cmd, cwd, env):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("BUILDX_") or k in ("SOURCE_DATE_EPOCH",):
            del e[k]
    e.update(env)
    p = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr

def git(repo, *args):
    return subprocess.run(["git", "--git-dir", repo, *args], capture_output=True, text=True, check=True).stdout

def compare(label, files, env, runs=None):
    """files: list of (name, text), in -f order; runs: argument lists to
    print with (default: every listed target, then the default group)."""
    d = os.path.join(scratch, f"case{sum(results.values())}")
    os.makedirs(d)
    fargs = []
    for name, text in files:
        with open(os.path.join(d, os.path.basename(name)), "w") as f:
            f.write(text)
        fargs += ["-f", os.path.basename(name)]
    rc, out, _ = run([docker, "buildx", "bake", *fargs, "--list", "type=targets,format=json"], d, env)
    names = []
    if rc == 0:
        try:
            names = [t["name"] for t in (json.loads(out) or [])]
        except ValueError:
            names = []
    outcomes = []
    for targets in runs if runs is not None else ([names] if names else []) + [[]]:
        a = run([ours, "bake", *fargs, "--print", *targets], d, env)
        b = run([docker, "buildx", "bake", *fargs, "--print", *targets], d, env)
        outcomes.append((targets, a, b))
    verdict, detail, compared = "equal", "", 0
    for targets, a, b in outcomes:
        what = " ".join(targets) if runs is not None else "all targets" if targets else "default"
        if a[0] != 0 and b[0] != 0:
            errs = [l for l in b[2].splitlines() if l.startswith("ERROR")]
            detail = f"  buildx: {errs[-1] if errs else ''}\n  stromatekt: {a[2].strip().splitlines()[0] if a[2].strip() else ''}"
            continue
        compared += 1
        detail = ""
        if a[0] != 0:
            verdict, detail = "ours-fails", f"  ({what}) {a[2].strip().splitlines()[0] if a[2].strip() else ''}"
            break
        if b[0] != 0:
            errs = [l for l in b[2].splitlines() if l.startswith("ERROR")]
            verdict, detail = "theirs-fails", f"  ({what}) {errs[-1] if errs else b[2].strip()[-200:]}"
            break
        if mask(a[1]) != mask(b[1]):
            diff = list(difflib.unified_diff(mask(b[1]).splitlines(), mask(a[1]).splitlines(), "buildx", "stromatekt", lineterm="", n=1))
            verdict, detail = "different", "\n".join("    " + l for l in diff[:30])
            break
    if verdict == "equal" and compared == 0:
        verdict = "both-fail"
    results[verdict] += 1
    count = f" ({len(names)} targets)" if names else ""
    print(f"{verdict:<12} {label}{count}")
    if detail:
        print(detail)
    sys.stdout.flush()

def projects():
    for repo in sorted(os.listdir(mirror)):
        gd = os.path.join(mirror, repo, "repo")
        if not os.path.isdir(gd) or (only and repo not in only and repo.replace("+", "/") not in only):
            continue
        try:
            paths = git(gd, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
        except subprocess.CalledProcessError:
            continue
        head = git(gd, "rev-parse", "--short", "HEAD").strip()
        for p in paths:
            base = p.rsplit("/", 1)[-1]
            if p.startswith(("vendor/", "testdata/")) or "/vendor/" in p or "/testdata/" in p:
                continue
            if base not in ("docker-bake.hcl", "docker-bake.json"):
                continue
            text = git(gd, "show", f"HEAD:{p}")
            compare(f"{repo.replace('+', '/')}@{head} {p}", [(base, text)], {})

snippet = re.compile(r"(\w+)\s*:?=\s*\[\]byte\(`(.*?)`\)", re.S)
parse_one = re.compile(r'ParseFile\((\w+),\s*"([^"]+)"\)')
parse_many = re.compile(r"ParseFiles\(\[\]File\{(.*?)\}\s*,", re.S)
member = re.compile(r'\{\s*Data:\s*(\w+),\s*Name:\s*"([^"]+)"\s*\}')
setenv = re.compile(r't\.Setenv\("([^"]+)",\s*"([^"]*)"\)')

file_lit = re.compile(r'(\w+)\s*:?=\s*File\{\s*(?:Name:\s*"([^"]+)",\s*Data:\s*\[\]byte\(`(.*?)`\)|Data:\s*\[\]byte\(`(.*?)`\),\s*Name:\s*"([^"]+)")', re.S)
read_targets = re.compile(r'ReadTargets\([^,]+,\s*\[\]File\{([\w\s,]+)\},\s*(\[\]string\{[^}]*\}|nil),\s*(\[\]string\{[^}]*\}|nil)', re.S)
go_str = re.compile(r'"((?:[^"\\]|\\.)*)"')

def string_list(lit):
    """A Go []string{...} of literals (None when it holds anything else)."""
    if lit == "nil":
        return []
    body = lit[len("[]string{"):-1]
    rest = go_str.sub("", body).replace(",", "").strip()
    if rest:
        return None
    return [json.loads('"' + m + '"') for m in go_str.findall(body)]

def read_targets_cases(src, test_file):
    for func in re.split(r"\nfunc ", src)[1:]:
        name = func.split("(", 1)[0]
        events = []
        for m in file_lit.finditer(func):
            fname, text = (m.group(2), m.group(3)) if m.group(2) else (m.group(5), m.group(4))
            events.append((m.start(), "file", m.group(1), (fname, text)))
        for m in setenv.finditer(func):
            events.append((m.start(), "env", m.group(1), m.group(2)))
        for m in read_targets.finditer(func):
            events.append((m.start(), "read", m.group(1), (m.group(2), m.group(3))))
        events.sort(key=lambda e: e[0])
        files, env, n = {}, {}, 0
        for _, kind, a, b in events:
            if kind == "file":
                files[a] = b
            elif kind == "env":
                env[a] = b
            else:
                names = [v.strip() for v in a.split(",") if v.strip()]
                targets, sets = string_list(b[0]), string_list(b[1])
                if targets is None or sets is None or not all(v in files for v in names):
                    continue
                chosen = [files[v] for v in names]
                if any(f.endswith((".yml", ".yaml")) for f, _ in chosen):
                    continue
                n += 1
                args = [x for s in sets for x in ("--set", s)] + targets
                compare(f"buildx@{buildx_ref} {test_file} {name}#{n}", chosen, dict(env), runs=[args])

def buildx_tests():
    gd = os.path.join(mirror, "docker+buildx", "repo")
    if not os.path.isdir(gd):
        print("skipped: docker/buildx is not in the mirror (fetch github:docker/buildx)")
        return
    read_targets_cases(git(gd, "show", f"{buildx_ref}:bake/bake_test.go"), "bake/bake_test.go")
    for test_file in ("bake/hcl_test.go",):
        src = git(gd, "show", f"{buildx_ref}:{test_file}")
        for func in re.split(r"\nfunc ", src)[1:]:
            name = func.split("(", 1)[0]
            # Events in source order: snippets, env changes, parse calls.
            events = []
            for m in snippet.finditer(func):
                events.append((m.start(), "snippet", m.group(1), m.group(2)))
            for m in setenv.finditer(func):
                events.append((m.start(), "env", m.group(1), m.group(2)))
            for m in parse_one.finditer(func):
                events.append((m.start(), "parse", [(m.group(1), m.group(2))], None))
            for m in parse_many.finditer(func):
                events.append((m.start(), "parse", member.findall(m.group(1)), None))
            events.sort(key=lambda e: e[0])
            vars_, env, n = {}, {}, 0
            for _, kind, a, b in events:
                if kind == "snippet":
                    vars_[a] = b
                elif kind == "env":
                    env[a] = b
                else:
                    files = [(fname, vars_[v]) for v, fname in a if v in vars_]
                    if not files or len(files) != len(a):
                        continue
                    if any(f.endswith((".yml", ".yaml")) for f, _ in files):
                        continue  # compose files: another frontend
                    n += 1
                    compare(f"buildx@{buildx_ref} {test_file} {name}#{n}", files, dict(env))

def buildx_integration_tests():
    """The bake files of buildx's integration tests (tests/bake.go): every
    inline file with a target or group, printed whole."""
    gd = os.path.join(mirror, "docker+buildx", "repo")
    if not os.path.isdir(gd):
        return
    src = git(gd, "show", f"{buildx_ref}:tests/bake.go")
    for func in re.split(r"\nfunc ", src)[1:]:
        name = func.split("(", 1)[0]
        n = 0
        for m in snippet.finditer(func):
            text = m.group(2)
            if not re.search(r'^\s*(target|group)\s+"', text, re.M) and not text.lstrip().startswith("{"):
                continue
            if "services:" in text:
                continue  # a compose file
            n += 1
            fname = "docker-bake.json" if text.lstrip().startswith("{") else "docker-bake.hcl"
            compare(f"buildx@{buildx_ref} tests/bake.go {name}#{n}", [(fname, text)], {})

if mode in ("projects", "all"):
    projects()
if mode in ("buildx-tests", "all"):
    buildx_tests()
    buildx_integration_tests()
total = sum(results.values())
print(f"\n{total} compared: " + ", ".join(f"{v} {k}" for k, v in results.items()))
sys.exit(0 if results["equal"] + results["both-fail"] == total else 1)
PY
