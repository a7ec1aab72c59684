//! Command line.

/// Run the CLI; returns the exit code.
pub fn main() -> i32 {
    0
}
