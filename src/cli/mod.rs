//! Command line: `stromatekt <command>`. `version` and `graph` work; `build`
//! builds to an OCI layout; `setup` prepares the store and checks runc and
//! binfmt/qemu.

mod assemble;
mod attest;
mod bake;
mod bake_graph;
mod build;
mod build_resources;
mod buildx;
mod call;
mod entitlements;
mod cache;
mod graph;
mod graph_bake;
mod imagetools;
mod named_contexts;
mod plugin;
mod rebase;
mod remote_context;
mod setup;

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
    /// Build an image from a Dockerfile (docker build's flags and outputs).
    Build(Box<build::BuildArgs>),
    /// Build the targets of bake files (docker-bake.hcl/.json), as `docker buildx bake`.
    #[command(alias = "f")]
    Bake(Box<bake::BakeArgs>),
    /// Print the IR graph of a Dockerfile.
    Graph(graph::GraphArgs),
    /// Put an existing image on another base without rebuilding it (like `crane rebase`).
    Rebase(rebase::RebaseArgs),
    /// Write an OCI layout from rootfs directories, as build-oci-rs's YAML describes it.
    Assemble(assemble::AssembleArgs),
    /// Create and verify the store, check runc and binfmt/qemu.
    Setup,
    /// Show the build cache's disk usage.
    Du(cache::DuArgs),
    /// Remove build cache.
    Prune(cache::PruneArgs),
    /// Verify the store: every blob against its digest, every record against its checksum, leftovers of crashed builds.
    Check(cache::CheckArgs),
    /// Install stromatekt as the Docker CLI plugin `docker-buildx`.
    DockerPlugin(plugin::PluginArgs),
    /// buildx's builder commands (`inspect`, `ls`, `use`, `create`, `rm`, `stop`).
    #[command(flatten)]
    Builder(buildx::BuilderCommand),
}

/// A build's error, with what filled up and what to do when it is a full disk.
fn explain_space(e: anyhow::Error) -> anyhow::Error {
    match crate::store::root::store_root() {
        Ok(root) => crate::store::space::explain(e, &root),
        Err(_) => e,
    }
}

/// Run the CLI; returns the exit code.
pub fn main() -> i32 {
    if let Err(e) = crate::store::fault::check_env() {
        eprintln!("stromatekt: {e}");
        return 2;
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let args = match plugin::classify(&argv) {
        plugin::Invocation::Native => Args::parse(),
        plugin::Invocation::Mapped(mapped) => Args::parse_from(mapped),
        plugin::Invocation::Metadata => {
            println!("{}", plugin::metadata());
            return 0;
        }
        plugin::Invocation::Version => {
            plugin::print_version();
            return 0;
        }
        plugin::Invocation::UnknownBuilder(name) => {
            eprintln!("stromatekt: no builder {name:?} found: stromatekt has one builder, \"stromatekt\" (its own driver; builders of buildx's drivers need buildx)");
            return 1;
        }
        plugin::Invocation::Unsupported(cmd) => {
            eprintln!("stromatekt: docker buildx {cmd} is not supported by stromatekt (it has build, bake, du, prune, inspect, ls, use, create, rm, stop, imagetools and version)");
            return 1;
        }
    };
    if !matches!(args.command, Command::Version | Command::Graph(_)) {
        // An ordinary user with everything in place builds inside a user
        // namespace of its own: this process only waits for that one.
        if let Ok(root) = crate::store::root::store_root() {
            let configured = root != std::path::Path::new(crate::store::root::DEFAULT_ROOT);
            if let Some(code) = crate::rootless::enter(&root, configured) {
                return code;
            }
        }
    }
    match args.command {
        Command::Version => {
            println!("{}", buildx::version_text());
            0
        }
        Command::Builder(c) => match buildx::run(&c) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {e:#}");
                1
            }
        },
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
                eprintln!("stromatekt: {:#}", explain_space(e));
                1
            }
        },
        Command::Bake(a) => match bake::run(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {:#}", explain_space(e));
                1
            }
        },
        Command::Rebase(a) => match rebase::run(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {e:#}");
                1
            }
        },
        Command::Assemble(a) => match assemble::run(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {e:#}");
                1
            }
        },
        Command::Du(a) => match cache::du(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {e:#}");
                1
            }
        },
        Command::Check(a) => match cache::run_check(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {e:#}");
                1
            }
        },
        Command::Prune(a) => match cache::run_prune(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {e:#}");
                1
            }
        },
        Command::DockerPlugin(a) => match plugin::run(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {e:#}");
                1
            }
        },
        Command::Setup => match setup::run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stromatekt: {e:#}");
                1
            }
        },
    }
}
