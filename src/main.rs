//! The `mreg` binary: parses the command line, loads the configuration and starts the
//! chosen command. The only place that reads the process environment.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod serve;

fn main() {
    // First, before any thread or large buffer exists.
    mreg::memory::configure();
    std::process::exit(cli::main());
}
