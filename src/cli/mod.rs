//! Command line: `stromatekt <command>`. `version` and `graph` work; `build`
//! and `setup` are declared so `--help` shows the plan, and fail with a
//! message saying they are not written yet.

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
    /// Build an image from a Dockerfile (not written yet).
    Build,
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
        Command::Build | Command::Setup => {
            eprintln!("stromatekt: this command is not written yet (see README.md, Status)");
            2
        }
    }
}
