//! The `modelgate` command: a thin CLI over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use modelgate::config::Config;
use modelgate::recorder::cli as recorder;

#[derive(Parser)]
#[command(
    name = "modelgate",
    version,
    about = "Identity-aware streaming gateway for self-hosted model servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Config file (TOML).
        #[arg(short, long, default_value = "/etc/modelgate/modelgate.toml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 if valid, 1 with file:line:column, key and fix if not.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Run the gateway in front of a built-in demo model server that streams SSE.
    Demo {
        /// Address for the gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Read recorded sessions: list, show, replay, export, reindex.
    Sessions {
        #[command(subcommand)]
        command: recorder::SessionsCommand,
    },
    /// Check a recording directory's chains and signatures: exit 0 intact, 1 broken.
    Verify(recorder::VerifyArgs),
    /// Recording helpers: `recorder keygen FILE` makes a seal-signing key pair.
    Recorder {
        #[command(subcommand)]
        command: recorder::RecorderCommand,
    },
    /// Identity assertion keys.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Write a new P-256 signing key (PKCS#8 PEM, mode 0600) for `upstream_assertion.key_file`.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo { listen } => match modelgate::demo::run(listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Sessions { command } => recorder::sessions(command),
        Command::Verify(args) => recorder::verify(args),
        Command::Recorder { command } => recorder::recorder(command),
        Command::Identity {
            command: IdentityCommand::Keygen { out },
        } => keygen(&out),
    }
}

fn keygen(out: &std::path::Path) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let written = modelgate::identity::assertion::generate_pem().and_then(|pem| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .and_then(|mut f| f.write_all(pem.as_bytes()))
            .map_err(|e| format!("{}: {e}", out.display()))
    });
    match written {
        Ok(()) => {
            println!("wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    modelgate::log::init(&config.log);
    match modelgate::runtime::run(config, |_| {}) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            ExitCode::FAILURE
        }
    }
}
