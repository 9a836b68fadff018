use clap::Parser;

/// The daemon allocates and frees many short-lived strings and maps per alert
/// (payload decoding, incident documents); profiling a storm showed glibc's
/// malloc taking about a third of the daemon's CPU. See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    incidentd::cli::execute(incidentd::cli::Cli::parse())
}
