//! The `imagemeta` command: parse the command line and hand over to the library.

/// mimalloc: a request allocates and frees dozens of small objects, often on different
/// threads (the writer thread frees what a worker allocated); glibc's malloc spent a fifth of
/// the workers' time on writes (arena locks, fastbin consolidation).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    imagemeta::cli::Cli::load().run()
}
