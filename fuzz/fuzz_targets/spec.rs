//! Fuzz target: a stromatekt task spec (JSON) through reading and lowering.
//! Errors are expected (they name a JSON path); panics and hangs are bugs. A
//! produced graph lists inputs before their users and survives a JSON round
//! trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match frontend::spec::build_graph("spec.json", &text, None) {
        Ok(l) => {
            for n in &l.graph.nodes {
                for i in n.op.inputs() {
                    assert!(i < n.id, "{} uses later node {}", n.id, i);
                }
            }
            let json = serde_json::to_string(&l.graph).expect("graph serializes");
            let back: frontend::ir::Graph = serde_json::from_str(&json).expect("graph deserializes");
            assert_eq!(back, l.graph);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
