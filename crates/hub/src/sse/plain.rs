//! `GET /sse?channel=a&channel=b`: a read-only stream of channels for the
//! simplest consumers (`curl -N`, a browser's `EventSource`).
//!
//! It runs a hub session like any other (over the in-memory pipe, see the
//! parent module): `connect` with the request's token (`Authorization:
//! Bearer` or `?token=`), then `subscribe` to each channel, so the
//! namespace's subscribe permissions, the limits and history recovery are
//! the session's. Each `message` push is one event, its JSON as `data` and,
//! as `id`, where every channel of the request stands (a
//! [`Positions`] token): a client that reconnects with it as
//! `Last-Event-ID` (an `EventSource` does so by itself) resubscribes with
//! `since` and gets what it missed, or a `gap` event when that is no longer
//! kept. Other pushes are events named by their `op`. The session's close
//! is a final `close` event.
//!
//! Invariants:
//! - Nothing is streamed before every subscription is answered: a refused
//!   one (permissions, a bad name, too many channels) is answered with an
//!   HTTP error (403, 400) and its message, and the session ends.
//! - What arrives before that is held up to `[limits] max_outbound_bytes`
//!   (beyond it: 503), within the connect timeout (504).
//! - The client's stream ending ends the session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use duplex::server::Incoming;
use duplex::{Message, WebSocket};
use duplex_hub_proto::sse::{
    EVENT_BINARY, EVENT_CLOSE, Positions, close_data, write_comment, write_event,
};
use duplex_hub_proto::{
    Command, ErrorCode, Frame, Request, ServerMessage, decode_server, encode_command,
};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::io::{AsyncReadExt, DuplexStream};

use super::wire::{BoxIo, Out, query_value, query_values};
use super::{pipe, start_session};
use crate::frame::to_message;
use crate::hub::Hub;
use crate::server::{Gate, admit_http, plain, respond};
use crate::session::Handshake;

/// The request id of `connect`; subscribe `i` is `FIRST_SUBSCRIBE + i`.
const CONNECT_ID: u64 = 1;
const FIRST_SUBSCRIBE: u64 = 2;

/// Serves `GET /sse` (see the module docs).
pub(super) async fn serve(
    hub: Arc<Hub>,
    gate: &Gate,
    mut io: BoxIo,
    incoming: &Incoming,
    client: SocketAddr,
) {
    let request = &incoming.request;
    let channels = query_values(request.uri().query(), "channel");
    if channels.is_empty() {
        let response = plain(
            StatusCode::BAD_REQUEST,
            "name one or more channels: /sse?channel=a&channel=b",
        );
        return respond(&mut io, response).await;
    }
    let limit = hub.config.limits.max_subscriptions;
    if channels.len() > limit {
        let message = format!(
            "{} channels; a connection may subscribe to at most {limit}",
            channels.len()
        );
        return respond(&mut io, plain(StatusCode::BAD_REQUEST, &message)).await;
    }
    let last = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_value(request.uri().query(), "lastEventId"));
    let mut positions = last
        .and_then(|last| Positions::parse(&last, channels.len()))
        .unwrap_or_else(|| Positions::new(channels.len()));
    let Some((ticket, identity)) = admit_http(&hub, gate, &mut io, request, client).await else {
        return;
    };
    let (server, mut ws) = pipe(&hub);
    let forwarded = crate::server::forwarded_headers(&hub, request.headers());
    start_session(
        &hub,
        server,
        Handshake {
            identity,
            ticket,
            forwarded,
        },
    );
    let index: HashMap<String, usize> = channels
        .iter()
        .enumerate()
        .map(|(i, channel)| (channel.clone(), i))
        .collect();
    let mut commands = vec![Request {
        id: Some(CONNECT_ID),
        command: Command::Connect {
            token: None,
            name: Some("sse".to_owned()),
        },
    }];
    for (i, channel) in channels.iter().enumerate() {
        commands.push(Request {
            id: Some(FIRST_SUBSCRIBE + i as u64),
            command: Command::Subscribe {
                channel: channel.clone(),
                since: positions.get(i).cloned(),
                recent: 0,
                token: None,
            },
        });
    }
    for command in &commands {
        if ws.feed(to_message(encode_command(command))).await.is_err() {
            return;
        }
    }
    if ws.flush().await.is_err() {
        return;
    }
    let setup = tokio::time::timeout(
        hub.config.limits.connect_timeout,
        subscribe_all(&hub, &mut ws, &index, &mut positions),
    )
    .await;
    let held = match setup {
        Ok(Ok(held)) => held,
        Ok(Err((status, message))) => return respond(&mut io, plain(status, &message)).await,
        Err(_) => {
            let response = plain(
                StatusCode::GATEWAY_TIMEOUT,
                "the subscriptions took too long",
            );
            return respond(&mut io, response).await;
        }
    };
    let mut out = Out::new(io, request);
    let mut first = Vec::new();
    for message in &held {
        event_of(message, &index, &mut positions, &mut first);
    }
    if out.start(&first).await.is_err() {
        return;
    }
    stream(&hub, ws, out, index, positions).await;
}

/// Reads the replies to `connect` and every `subscribe`; returns the pushes
/// that came meanwhile, or the HTTP status and message of a refusal.
async fn subscribe_all(
    hub: &Hub,
    ws: &mut WebSocket<DuplexStream>,
    index: &HashMap<String, usize>,
    positions: &mut Positions,
) -> Result<Vec<Message>, (StatusCode, String)> {
    let mut left = index.len() + 1;
    let mut held = Vec::new();
    let mut bytes = 0;
    while left > 0 {
        let Some(Ok(message)) = ws.next().await else {
            let reason = ws
                .close_info()
                .map_or_else(String::new, |info| info.reason.clone());
            return Err((
                StatusCode::UNAUTHORIZED,
                format!("the session ended: {reason}"),
            ));
        };
        let decoded = match &message {
            Message::Text(text) => decode_server(Frame::Text(text.as_str())),
            Message::Binary(bytes) => decode_server(Frame::Binary(bytes)),
        };
        match decoded {
            Ok(ServerMessage::Connected {
                id: Some(CONNECT_ID),
                ..
            }) => left -= 1,
            Ok(ServerMessage::Subscribed {
                id: Some(id),
                channel,
                epoch,
                offset,
                recovered,
                gap,
            }) if id >= FIRST_SUBSCRIBE => {
                left -= 1;
                let i = index.get(&channel).copied().unwrap_or(0);
                // Recovered: the missed messages follow and move it on.
                let at = match positions.get(i) {
                    Some(since) if recovered && since.epoch == epoch => since.offset,
                    _ => offset,
                };
                positions.set(i, &epoch, at);
                // A gap (what was missed is no longer kept) is an event.
                if gap {
                    held.push(message);
                }
            }
            Ok(ServerMessage::Error {
                id: Some(_),
                code,
                message,
            }) => {
                let status = match code {
                    ErrorCode::Forbidden | ErrorCode::Unauthorized => StatusCode::FORBIDDEN,
                    ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_REQUEST,
                };
                return Err((status, message));
            }
            _ => {
                bytes += message.payload().len();
                if bytes > hub.config.limits.max_outbound_bytes {
                    return Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too much arrived before the subscriptions were answered".to_owned(),
                    ));
                }
                held.push(message);
            }
        }
    }
    Ok(held)
}

/// Appends the event of one message from the session to `out`.
fn event_of(
    message: &Message,
    index: &HashMap<String, usize>,
    positions: &mut Positions,
    out: &mut Vec<u8>,
) {
    let decoded = match message {
        Message::Text(text) => decode_server(Frame::Text(text.as_str())),
        Message::Binary(bytes) => decode_server(Frame::Binary(bytes)),
    };
    let Ok(decoded) = decoded else {
        return;
    };
    let name = match &decoded {
        ServerMessage::Message(publication) => {
            if let Some(&i) = index.get(&publication.channel) {
                positions.advance(i, publication.offset);
            }
            None
        }
        ServerMessage::Subscribed {
            id: Some(_), gap, ..
        } => {
            if !gap {
                return;
            }
            Some("gap")
        }
        ServerMessage::Gap {
            channel,
            epoch,
            offset,
        } => {
            if let Some(&i) = index.get(channel) {
                positions.set(i, epoch, *offset);
            }
            Some("gap")
        }
        other => Some(other.op()),
    };
    let id = positions.token();
    let _ = match message {
        Message::Text(text) => write_event(out, Some(&id), name, text.as_str()),
        Message::Binary(bytes) => {
            let data = base64::engine::general_purpose::STANDARD.encode(bytes);
            write_event(out, Some(&id), Some(name.unwrap_or(EVENT_BINARY)), &data)
        }
    };
}

/// Streams the session's pushes until it ends or the client goes.
async fn stream(
    hub: &Hub,
    mut ws: WebSocket<DuplexStream>,
    mut out: Out,
    index: HashMap<String, usize>,
    mut positions: Positions,
) {
    let interval = hub.config.http.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut scratch = [0u8; 64];
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(message)) => {
                    event_of(&message, &index, &mut positions, &mut batch);
                }
                _ => {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ws.flush()).await;
                    let (code, reason) = ws.close_info().map_or((1006, String::new()), |info| {
                        (u16::from(info.code), info.reason.clone())
                    });
                    let _ = write_event(&mut batch, None, Some(EVENT_CLOSE), &close_data(code, &reason));
                    if out.write(&batch).await.is_ok() {
                        out.finish().await;
                    }
                    return;
                }
            },
            _ = ping.tick() => write_comment(&mut batch, "ping"),
            read = out.io.read(&mut scratch) => {
                if matches!(read, Ok(0) | Err(_)) {
                    // The client went: the session ends with the pipe.
                    return;
                }
            }
        }
        let written = tokio::time::timeout(super::link::WRITE_TIMEOUT, out.write(&batch)).await;
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
    }
}
