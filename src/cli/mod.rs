//! Command line: `stromatekt <command>`. `version` and `graph` work; `build`
//! builds to an OCI layout; `setup` is declared so `--help` shows the plan,
//! and fails with a message saying it is not written yet.

mod build;
mod graph;

use clap::{Parser, Subcommand};

/// A container image builder: Dockerfile -> IR graph -> btrfs + runc -> OCI image.
#[derive(Debug, Parser)]
#[command(name = "stromatekt", version)]
pub struct Args {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version.
    Version,
    /// Build an image from a Dockerfile into an OCI layout.
    Build(build::BuildArgs),
    /// Print the IR graph of a Dockerfile.
    Graph(graph::GraphArgs),
    /// Create and verify the store, check runc and binfmt (not written yet).
    Setup,
}

/// Run the CLI; returns the exit code.
pub fn main() -> i32 {
    let args = Args::parse();
    match args.command {
        Command::Version => {
            println!("stromatekt {} (IR version {})", env!("CARGO_PKG_VERSION"), frontend::ir::IR_VERSION);
            0
        }
        Command::Graph(a) => match graph::run(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {e}");
                1
            }
        },
        Command::Build(a) => match build::run(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {e:#}");
                1
            }
        },
        Command::Setup => {
            eprintln!("stromatekt: this command is not written yet (see README.md, Status)");
            2
        }
    }
}
