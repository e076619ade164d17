//! The `duplex` command: one binary that fronts the Duplex stack.
//!
//! - `duplex serve`: the hub (real-time channels, presence, history and
//!   recovery, web chat and dashboard) on 127.0.0.1:8080 by default.
//! - `duplex echo --listen ADDR`: a WebSocket echo server.
//! - `duplex connect URL`: a command-line client; `--echo` echoes what the
//!   server sends (the shape conformance suites drive).
//! - `duplex token --sub alice --channels 'chat:*'`: a development token
//!   signed with the hub's HS256 secret.
//! - `duplex api CALL [JSON]`: one call of a hub's server API.
//! - `duplex bench echo|connect|idle --url URL`: a load generator (messages
//!   per second, latency, connection rate, memory per idle connection).

mod allocator;
mod api;
mod connect;
mod echo;
mod listen;
mod serve;
mod token;

use clap::{Parser, Subcommand};

/// Duplex: a WebSocket stack.
#[derive(Debug, Parser)]
#[command(name = "duplex", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: real-time channels over WebSocket, with its web pages.
    Serve(Box<serve::ServeArgs>),
    /// Run a WebSocket echo server: text stays text, binary stays binary.
    Echo(echo::EchoArgs),
    /// Connect to a WebSocket server.
    Connect(connect::ConnectArgs),
    /// Sign a development token with the hub's HS256 secret.
    Token(token::TokenArgs),
    /// Call a hub's server API (docs/api.md) and print the JSON reply.
    Api(api::ApiArgs),
    /// Measure a WebSocket server end to end: echo, connection rate, idle memory.
    Bench(duplex_bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if matches!(&cli.command, Command::Serve(args) if args.json_logs()) {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("duplex: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Echo(args) => echo::run(args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Token(args) => token::run(args),
            Command::Bench(args) => duplex_bench::run(args).await,
            Command::Api(args) => api::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("duplex: {}", report(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `error` and its causes, each said once: the errors of `duplex` and the hub
/// name their cause in their own message and also return it as their
/// `source`, so a cause whose text the level above already holds is not
/// repeated (anyhow's `{:#}` would print it again at every level).
fn report(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    let mut above = message.clone();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !above.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        above = text;
    }
    message
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn report_says_each_cause_once() {
        // A TLS error as the hub returns it: every level names its cause.
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let tls = duplex::TlsError::KeyFile {
            path: "key.pem".into(),
            source: duplex::tls::rustls::pki_types::pem::Error::Io(io),
        };
        let error = anyhow::Error::new(duplex::Error::from(tls)).context("cannot serve");
        assert_eq!(
            report(&error),
            "cannot serve: TLS: key file key.pem: I/O error: no such file"
        );
        // Causes that do not repeat themselves are all said.
        let plain = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(report(&plain), "outer: middle: inner");
    }
}
