use clap::Parser;

fn main() -> std::process::ExitCode {
    leakhound::cli::run(leakhound::cli::Cli::parse())
}
