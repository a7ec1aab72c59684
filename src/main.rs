//! The `stromatekt` binary: parse arguments, run, print one error, exit.

fn main() {
    // A namespace holder only sleeps: nothing else runs in it.
    if let Some(code) = stromatekt::rootless::holder::run_if_holder() {
        std::process::exit(code);
    }
    // Before any thread: it may set SSL_CERT_FILE.
    stromatekt::registry::oci::trust_system_bundle();
    std::process::exit(stromatekt::cli::main());
}
