//! The `stromatekt` binary: parse arguments, run, print one error, exit.

fn main() {
    // Before any thread: it may set SSL_CERT_FILE.
    stromatekt::registry::oci::trust_system_bundle();
    std::process::exit(stromatekt::cli::main());
}
