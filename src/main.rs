//! The `imagemeta` command: parse the command line and hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    imagemeta::cli::Cli::parse().run()
}
