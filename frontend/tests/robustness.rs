//! Robustness: parse + lower never panic, whatever the bytes. Every BuildKit
//! parser testfile Dockerfile (read from `../shared/compat`, never copied)
//! and every golden Dockerfile is mutated deterministically (byte flips,
//! truncations, insertions of Dockerfile-significant snippets, line swaps)
//! and each variant goes through `parse`, `lower`, `base_images` and the
//! word lexer. Errors are fine; panics are not. The cargo-fuzz target in
//! `fuzz/` does the same with coverage guidance.

use std::path::{Path, PathBuf};

/// The `Dockerfile`s one level below each of `dirs` (name, bytes), sorted.
fn dockerfiles_below(dirs: &[PathBuf]) -> Vec<(String, Vec<u8>)> {
    let mut cases: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(d) {
            cases.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    cases.sort();
    cases.iter().filter_map(|d| std::fs::read(d.join("Dockerfile")).ok().map(|b| (d.display().to_string(), b))).collect()
}

/// The BuildKit parser testfiles, then the golden cases.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let testfiles = root.join("../../shared/compat/buildkit/frontend/dockerfile/parser");
    let buildkit = dockerfiles_below(&[testfiles.join("testfiles"), testfiles.join("testfiles-negative")]);
    // The golden cases alone must not make up the count.
    assert!(
        buildkit.len() > 20,
        "expected the BuildKit parser testfiles under {} (the conformance fixtures `make test` checks for); found {}",
        testfiles.display(),
        buildkit.len()
    );
    let golden = dockerfiles_below(&[root.join("tests/golden")]);
    assert!(golden.len() > 10, "expected the golden cases under tests/golden; found {}", golden.len());
    buildkit.into_iter().chain(golden).collect()
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const SNIPPETS: &[&str] = &[
    "\\\n", "\n", "$", "${", "}", "${A:-", "${A#", "\"", "'", "<<EOF\n", "\nEOF\n", "<<-", "[", "]", "\",\"",
    "--mount=type=cache,target=", "--from=", "# stromatekt:parallel\n", "# stromatekt:end\n",
    "# stromatekt:layer x\n", "# stromatekt:remove x\n", "# stromatekt:with 0\n", "# stromatekt:base y\n",
    "FROM scratch AS a\n", "COPY --from=a ", "ARG ", "=", "`", "\t", "\r", "\u{feff}", "é", "\0", "ONBUILD ",
    "HEALTHCHECK --interval=", "# escape=`\n", "RUN <<A <<B\nx\nA\ny\nB\n", "ADD http://x/", "#",
];

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.truncate(i);
            }
            2 => {
                let i = rng.below(b.len() + 1);
                let s = SNIPPETS[rng.below(SNIPPETS.len())].as_bytes();
                b.splice(i..i, s.iter().copied());
            }
            3 if !b.is_empty() => {
                let i = rng.below(b.len());
                let n = rng.below(16).min(b.len() - i);
                b.drain(i..i + n);
            }
            _ => {
                // Swap two lines.
                let text = String::from_utf8_lossy(&b).into_owned();
                let mut lines: Vec<&str> = text.split('\n').collect();
                if lines.len() > 1 {
                    let (x, y) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(x, y);
                }
                b = lines.join("\n").into_bytes();
            }
        }
    }
    b
}

fn exercise(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut opts = frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() };
    match frontend::build_graph(&text, &opts) {
        Ok(g) => {
            // Inputs come before their users.
            for n in &g.nodes {
                for i in n.op.inputs() {
                    assert!(i < n.id, "{} uses later node {}", n.id, i);
                }
            }
            let json = serde_json::to_string(&g).expect("graph serializes");
            let back: frontend::ir::Graph = serde_json::from_str(&json).expect("graph deserializes");
            assert_eq!(back, g);
        }
        Err(e) => {
            let _ = e.render("Dockerfile", &text);
        }
    }
    opts.target = Some("a".into());
    let _ = frontend::base_images(&text, &opts);
    // The same text as a base image's ONBUILD triggers and config values.
    let mut o = frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() };
    o.image_onbuild.insert("img".into(), text.lines().map(String::from).collect());
    o.image_workdir.insert("img".into(), text.lines().next().unwrap_or("").to_string());
    let child = "FROM img\nWORKDIR ../x\nRUN true\nFROM img AS b\nFROM b\n";
    if let Err(e) = frontend::build_graph(child, &o) {
        let _ = e.render("Dockerfile", child);
    }
    let lexer = frontend::lexer::Lexer::new('\\');
    let env = std::collections::BTreeMap::from([("A".to_string(), "x y".to_string())]);
    let _ = lexer.process_word(&text, &env);
    let _ = lexer.process_words(&text, &env);
}

#[test]
fn mutated_testfiles_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let per_seed = (4000 / seeds.len()).max(20);
    let mut cases = 0;
    for (name, seed) in &seeds {
        exercise(seed);
        for _ in 0..per_seed {
            let m = mutate(seed, &mut rng);
            let r = std::panic::catch_unwind(|| exercise(&m));
            if r.is_err() {
                panic!("panic on a mutation of {name}:\n{:?}", String::from_utf8_lossy(&m));
            }
            cases += 1;
        }
    }
    eprintln!("robustness: {cases} mutated Dockerfiles from {} seeds, no panic", seeds.len());
}
