//! Fuzz target: arbitrary bytes through the parser, the word lexer and
//! lowering (plain, with a `--target`, and `base_images`). Errors are
//! expected; panics, overflows and hangs are bugs. A produced graph must
//! list inputs before their users and survive a JSON round trip.
//!
//! Run: see `fuzz/README.md`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut opts = frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() };
    opts.build_args.insert("A".into(), "x y".into());
    match frontend::build_graph(&text, &opts) {
        Ok(g) => {
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
    let env = BTreeMap::from([("A".to_string(), "x y".to_string())]);
    let lexer = frontend::lexer::Lexer::new('\\');
    let _ = lexer.process_word(&text, &env);
    let _ = lexer.process_words(&text, &env);
});
