use std::process::ExitCode;

use clap::Parser;
use kubevirt_reboot_webhook::cli::{Cli, Command};
use kubevirt_reboot_webhook::{allocator, certs, check, startup};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            // First of all: this may execute the program again.
            allocator::tune_or_reexec();
            match startup::run(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check(args) => check::run(args),
        Command::Certs(args) => {
            let hosts = if args.hosts.is_empty() {
                certs::default_hosts()
            } else {
                args.hosts
            };
            match certs::write(&args.out, &hosts) {
                Ok(()) => {
                    println!(
                        "wrote ca.crt, ca.key, tls.crt, tls.key to {} for {}",
                        args.out.display(),
                        hosts.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
