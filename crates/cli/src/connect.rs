//! `duplex connect URL`: a command-line WebSocket client.
//!
//! Without `--echo`, each line of standard input is sent as a text message and
//! each received message is printed on its own line of standard output; the
//! command ends when the server closes (or standard input ends, which closes
//! with 1000). With `--echo`, every received message is sent back as it came.
//! The close code and reason go to standard error; the exit status is 0 for a
//! clean close with 1000 or 1001, 1 otherwise.

use std::process::ExitCode;

use duplex::{ClientRequest, CloseCode, Config, Message};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Options of `duplex connect`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    /// The server's URL, `ws://` or `wss://`.
    url: String,
    /// Echo every received message back to the server.
    #[arg(long)]
    echo: bool,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_compress: bool,
    /// Send `Origin: ORIGIN`.
    #[arg(long)]
    origin: Option<String>,
    /// Offer a subprotocol (repeatable).
    #[arg(long = "subprotocol")]
    subprotocols: Vec<String>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
}

pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let mut request = ClientRequest::new(&args.url);
    if let Some(origin) = &args.origin {
        request = request.origin(origin);
    }
    for protocol in &args.subprotocols {
        request = request.protocol(protocol);
    }
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("header {header:?} is not `Name: value`"))?;
        request = request.header(name.trim(), value.trim())?;
    }
    let mut config = Config::client();
    if args.no_compress {
        config.deflate = None;
    }
    let mut ws = duplex::connect_with(&request, &config).await?;
    if args.echo {
        while let Some(item) = ws.next().await {
            match item {
                Ok(message) => {
                    if ws.feed(message).await.is_err() {
                        break;
                    }
                }
                Err(error) => {
                    eprintln!("duplex: {error}");
                    break;
                }
            }
        }
        let _ = ws.flush().await;
    } else {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut stdout = tokio::io::stdout();
        let mut stdin_open = true;
        loop {
            tokio::select! {
                line = lines.next_line(), if stdin_open => match line? {
                    Some(line) => ws.send(Message::text(line)).await?,
                    None => {
                        stdin_open = false;
                        ws.close(CloseCode::NORMAL, "").await?;
                    }
                },
                item = ws.next() => match item {
                    Some(Ok(Message::Text(text))) => {
                        stdout.write_all(text.as_bytes()).await?;
                        stdout.write_all(b"\n").await?;
                        stdout.flush().await?;
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        stdout.write_all(&bytes).await?;
                        stdout.flush().await?;
                    }
                    Some(Err(error)) => {
                        eprintln!("duplex: {error}");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
    Ok(report_close(&ws))
}

fn report_close<S>(ws: &duplex::WebSocket<S>) -> ExitCode {
    match ws.close_info() {
        Some(info) => {
            eprintln!(
                "closed: code {} reason {:?} clean {}",
                info.code, info.reason, info.was_clean
            );
            if info.was_clean && matches!(info.code.0, 1000 | 1001) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        None => ExitCode::FAILURE,
    }
}
