//! The `stromatekt` binary: parse arguments, run, print one error, exit.

fn main() {
    std::process::exit(stromatekt::cli::main());
}
