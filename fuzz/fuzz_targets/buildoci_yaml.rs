//! Fuzz target: a build-oci-rs YAML document through our YAML reader and
//! the document model. Errors are expected (they name a line); panics and
//! hangs are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = frontend::buildoci::doc::parse("build.yaml", &text) {
        let _ = e.to_string();
    }
});
