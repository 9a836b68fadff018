use clap::Parser;

fn main() -> std::process::ExitCode {
    incidentd::cli::execute(incidentd::cli::Cli::parse())
}
