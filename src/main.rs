use clap::Parser;

fn main() -> std::process::ExitCode {
    match leakhound::cli::Cli::try_parse() {
        Ok(cli) => leakhound::cli::run(cli),
        Err(err) => leakhound::cli::usage_error(err),
    }
}
