//! Negotiating permessage-deflate (RFC 7692 §5, §7.1).
//!
//! The client offers with [`client_offer`]; the server answers with
//! [`negotiate`] (which picks the first offer it can serve, in order); the
//! client checks the answer with [`client_accept`]. Both ends end up with the
//! same [`DeflateParams`], from which [`DeflateParams::compress_window_bits`]
//! and friends give each role its own side.
//!
//! Invariants:
//! - A server never answers with a parameter value the offer does not allow:
//!   `server_max_window_bits` is at most the offered value,
//!   `client_max_window_bits` appears only when offered and is at most the
//!   offered value, and `server_no_context_takeover` is echoed when offered.
//! - An offer with an unknown, duplicated or malformed parameter is declined
//!   (§7: the connection continues without the extension); a response with
//!   one fails the connection ([`NegotiationError`]).
//! - Window bits are always in `8..=15`. Configuration values outside that
//!   range are clamped into it.
//! - Window bits 8 are accepted in both directions. zlib cannot build a raw
//!   deflate compressor with an 8-bit window, so a compressor limited to 8
//!   bits uses run-length matches only (distance 1), which stay inside any
//!   window; see [`crate::deflate::Compressor`].

use crate::Role;
use crate::extension::ExtensionOffer;

/// The extension token, `permessage-deflate`.
pub const EXTENSION_NAME: &str = "permessage-deflate";

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// The smallest LZ77 window RFC 7692 allows, as base-2 logarithm (256 bytes).
pub const MIN_WINDOW_BITS: u8 = 8;
/// The largest LZ77 window RFC 7692 allows, as base-2 logarithm (32 KiB).
pub const MAX_WINDOW_BITS: u8 = 15;

/// This end's policy for permessage-deflate.
///
/// The same type serves both roles; each field says what it means for each.
/// [`Default`] suits a server on the open internet (12-bit windows, as Python
/// `websockets` uses; 220,736 bytes held per connection with context
/// takeover, 8,192 once released, see the memory table in [`crate::deflate`]);
/// [`DeflateConfig::client`] makes the offer a browser makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Server: the largest window the server compresses with (it answers
    /// `min(offered, this)`). Client: requested from the server as
    /// `server_max_window_bits=N` when below 15. Clamped to `8..=15`.
    pub server_max_window_bits: u8,
    /// Server: the largest window a client may compress with, answered when
    /// the client offers `client_max_window_bits` (a client that does not
    /// offer it may use 15). Client: the largest window this client compresses
    /// with, offered as a value when below 15. Clamped to `8..=15`.
    pub client_max_window_bits: u8,
    /// Server: always answer `server_no_context_takeover` (the server then
    /// keeps no compressor between messages). Client: request it.
    pub server_no_context_takeover: bool,
    /// Server: always answer `client_no_context_takeover` (the server then
    /// keeps no decompressor between messages). Client: offer it (and reset
    /// the compressor after every message whatever the answer).
    pub client_no_context_takeover: bool,
    /// Compression level, 0 (stored, fastest) to 9 (smallest). Clamped to 9.
    /// Default 6, zlib's default.
    pub level: u32,
    /// zlib's `memLevel` (1..=9) for this end's compressor, or `None` to pick
    /// it from the window: `window_bits - 7`, at least 1 (8 for a 15-bit window,
    /// 5 for 12, 3 for 10). Lower saves memory and makes more, smaller deflate
    /// blocks. See the memory table in [`crate::deflate`].
    pub mem_level: Option<u8>,
    /// Messages shorter than this many bytes are sent uncompressed. Default
    /// 128: below that deflate rarely saves enough to pay for its CPU time.
    /// RFC 7692 lets every message choose; this is only our sending policy.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_max_window_bits: 12,
            client_max_window_bits: 12,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            level: 6,
            mem_level: None,
            threshold: 128,
        }
    }
}

impl DeflateConfig {
    /// A client policy that offers exactly what Chromium offers,
    /// `permessage-deflate; client_max_window_bits`, and accepts whatever
    /// windows the server picks.
    pub fn client() -> Self {
        Self {
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
            ..Self::default()
        }
    }

    /// A server policy under which every message the server sends is
    /// compressed alone: it answers every offer with
    /// `server_no_context_takeover` (and `client_no_context_takeover`, which
    /// RFC 7692 §7.1.1.2 lets a server answer unasked), so the server keeps
    /// no compression state between messages in either direction, and a
    /// [`crate::connection::PreparedMessage`] sent to many such connections
    /// is compressed once per window size and its frame shared. Windows,
    /// level and threshold are the defaults'.
    pub fn shared() -> Self {
        Self {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..Self::default()
        }
    }

    /// Whether a message of `len` bytes should be compressed under this policy.
    pub fn should_compress(&self, len: usize) -> bool {
        len >= self.threshold
    }

    fn server_bits(&self) -> u8 {
        self.server_max_window_bits
            .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
    }

    fn client_bits(&self) -> u8 {
        self.client_max_window_bits
            .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
    }
}

/// The negotiated parameters, as they apply to this connection.
///
/// A window of `None` is the parameter's absence: a 15-bit window. On the
/// server these are exactly the parameters of the answer
/// ([`DeflateParams::response_header`]). On the client they also carry the
/// client's own stricter choices (its configured window cap and
/// `client_no_context_takeover`), since a compressor may always use less
/// than it is allowed.
///
/// [`Default`] is a bare `permessage-deflate`: 15-bit windows and context
/// takeover both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The largest window the server compresses with.
    pub server_max_window_bits: Option<u8>,
    /// The largest window the client compresses with.
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The window bits `role` compresses its messages with.
    pub fn compress_window_bits(&self, role: Role) -> u8 {
        match role {
            Role::Server => self.server_max_window_bits,
            Role::Client => self.client_max_window_bits,
        }
        .unwrap_or(MAX_WINDOW_BITS)
    }

    /// Whether `role` resets its compressor after every message.
    pub fn compress_no_context_takeover(&self, role: Role) -> bool {
        match role {
            Role::Server => self.server_no_context_takeover,
            Role::Client => self.client_no_context_takeover,
        }
    }

    /// The window bits `role` decompresses the peer's messages with.
    pub fn decompress_window_bits(&self, role: Role) -> u8 {
        self.compress_window_bits(peer(role))
    }

    /// Whether `role` resets its decompressor after every message.
    pub fn decompress_no_context_takeover(&self, role: Role) -> bool {
        self.compress_no_context_takeover(peer(role))
    }

    /// The server's answer as one extension element.
    pub fn response_offer(&self) -> ExtensionOffer {
        let mut offer = ExtensionOffer::new(EXTENSION_NAME);
        if self.server_no_context_takeover {
            offer = offer.param(SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        if self.client_no_context_takeover {
            offer = offer.param(CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        if let Some(bits) = self.server_max_window_bits {
            offer = offer.param(SERVER_MAX_WINDOW_BITS, Some(bits.to_string()));
        }
        if let Some(bits) = self.client_max_window_bits {
            offer = offer.param(CLIENT_MAX_WINDOW_BITS, Some(bits.to_string()));
        }
        offer
    }

    /// The server's `Sec-WebSocket-Extensions` answer, such as
    /// `permessage-deflate; server_max_window_bits=12; client_max_window_bits=12`.
    pub fn response_header(&self) -> String {
        self.response_offer().to_string()
    }
}

fn peer(role: Role) -> Role {
    match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    }
}

/// Why an offer was declined or a response fails the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// The element is another extension.
    #[error("not permessage-deflate: {0:?}")]
    OtherExtension(String),
    /// A parameter RFC 7692 does not define.
    #[error("unknown permessage-deflate parameter {0:?}")]
    UnknownParameter(String),
    /// A parameter given twice.
    #[error("duplicate permessage-deflate parameter {0:?}")]
    DuplicateParameter(String),
    /// A value where none is allowed, none where one is required, or a value
    /// that is not a decimal 8..=15 without leading zeros.
    #[error("invalid value {value:?} for permessage-deflate parameter {name:?}")]
    InvalidValue {
        /// The parameter.
        name: String,
        /// The value given, if any.
        value: Option<String>,
    },
    /// The response has a parameter the offer did not allow.
    #[error("permessage-deflate response has {0} which the offer did not allow")]
    Unrequested(&'static str),
    /// The response lacks a parameter the offer required it to echo.
    #[error("permessage-deflate response lacks the offered {0}")]
    Missing(&'static str),
    /// The response's window is larger than the offer allowed.
    #[error("permessage-deflate response has {name}={answered}, more than the offered {offered}")]
    WindowTooLarge {
        /// The parameter.
        name: &'static str,
        /// The value offered.
        offered: u8,
        /// The larger value answered.
        answered: u8,
    },
}

/// The parameters of one element, checked for RFC 7692's grammar.
#[derive(Debug, Default)]
struct Parsed {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// Outer `Some`: present; inner: its value.
    client_max_window_bits: Option<Option<u8>>,
}

/// `8..=15` written in decimal without leading zeros (RFC 7692 §7.1.2).
fn window_bits_value(name: &str, value: Option<&String>) -> Result<u8, NegotiationError> {
    let invalid = || NegotiationError::InvalidValue {
        name: name.to_owned(),
        value: value.cloned(),
    };
    let text = value.ok_or_else(invalid)?;
    if !(1..=2).contains(&text.len())
        || text.starts_with('0')
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let bits: u8 = text.parse().map_err(|_| invalid())?;
    if (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits) {
        Ok(bits)
    } else {
        Err(invalid())
    }
}

fn parse(element: &ExtensionOffer) -> Result<Parsed, NegotiationError> {
    if element.name != EXTENSION_NAME {
        return Err(NegotiationError::OtherExtension(element.name.clone()));
    }
    let mut parsed = Parsed::default();
    let mut seen = [false; 4];
    for (name, value) in &element.params {
        let index = match name.as_str() {
            SERVER_NO_CONTEXT_TAKEOVER => 0,
            CLIENT_NO_CONTEXT_TAKEOVER => 1,
            SERVER_MAX_WINDOW_BITS => 2,
            CLIENT_MAX_WINDOW_BITS => 3,
            _ => return Err(NegotiationError::UnknownParameter(name.clone())),
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(NegotiationError::DuplicateParameter(name.clone()));
        }
        let no_value = || {
            if value.is_some() {
                Err(NegotiationError::InvalidValue {
                    name: name.clone(),
                    value: value.clone(),
                })
            } else {
                Ok(true)
            }
        };
        match index {
            0 => parsed.server_no_context_takeover = no_value()?,
            1 => parsed.client_no_context_takeover = no_value()?,
            2 => parsed.server_max_window_bits = Some(window_bits_value(name, value.as_ref())?),
            _ => {
                parsed.client_max_window_bits = Some(match value {
                    None => None,
                    Some(_) => Some(window_bits_value(name, value.as_ref())?),
                });
            }
        }
    }
    Ok(parsed)
}

/// Server side: the parameters to answer one offer with, or why it is declined.
///
/// [`negotiate`] applies this to each offer in turn; it is public so a server
/// can log why it declined.
pub fn negotiate_offer(
    offer: &ExtensionOffer,
    config: &DeflateConfig,
) -> Result<DeflateParams, NegotiationError> {
    let parsed = parse(offer)?;
    let server_bits = config.server_bits();
    // The server answers server_max_window_bits when the offer asks for a
    // limit (§7.1.2.1: it must then answer) or when it wants a smaller window
    // than the default 15 itself.
    let server_max_window_bits = match parsed.server_max_window_bits {
        Some(offered) => Some(offered.min(server_bits)),
        None if server_bits < MAX_WINDOW_BITS => Some(server_bits),
        None => None,
    };
    // client_max_window_bits may be answered only if offered (§7.1.2.2).
    let client_max_window_bits = parsed
        .client_max_window_bits
        .map(|offered| offered.unwrap_or(MAX_WINDOW_BITS).min(config.client_bits()));
    Ok(DeflateParams {
        server_no_context_takeover: parsed.server_no_context_takeover
            || config.server_no_context_takeover,
        client_no_context_takeover: parsed.client_no_context_takeover
            || config.client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    })
}

/// Server side: the parameters for the first `permessage-deflate` offer in
/// `offers` that can be accepted, or `None` to answer without the extension.
///
/// Other extensions in `offers` are skipped. Answer with
/// [`DeflateParams::response_header`].
pub fn negotiate(offers: &[ExtensionOffer], config: &DeflateConfig) -> Option<DeflateParams> {
    offers
        .iter()
        .filter(|offer| offer.name == EXTENSION_NAME)
        .find_map(|offer| negotiate_offer(offer, config).ok())
}

/// Client side: the offer to send in `Sec-WebSocket-Extensions`.
///
/// `client_max_window_bits` is always offered (bare when the configured cap
/// is 15), so the server may pick the client's window, as browsers allow.
pub fn client_offer(config: &DeflateConfig) -> ExtensionOffer {
    let mut offer = ExtensionOffer::new(EXTENSION_NAME);
    if config.server_no_context_takeover {
        offer = offer.param(SERVER_NO_CONTEXT_TAKEOVER, None);
    }
    if config.client_no_context_takeover {
        offer = offer.param(CLIENT_NO_CONTEXT_TAKEOVER, None);
    }
    let server_bits = config.server_bits();
    if server_bits < MAX_WINDOW_BITS {
        offer = offer.param(SERVER_MAX_WINDOW_BITS, Some(server_bits.to_string()));
    }
    let client_bits = config.client_bits();
    offer = offer.param(
        CLIENT_MAX_WINDOW_BITS,
        (client_bits < MAX_WINDOW_BITS).then(|| client_bits.to_string()),
    );
    offer
}

/// Client side: checks the server's answer against [`client_offer`]`(config)`.
///
/// An error fails the WebSocket connection (RFC 7692 §5.1).
pub fn client_accept(
    response: &ExtensionOffer,
    config: &DeflateConfig,
) -> Result<DeflateParams, NegotiationError> {
    accept_response(response, &client_offer(config))
}

/// Client side: checks the server's answer against the offer the client sent.
///
/// The rules (RFC 7692 §7.1): every parameter must be known, given once and
/// well formed; `server_no_context_takeover` and `server_max_window_bits`
/// must be echoed when offered, the latter no larger than offered;
/// `client_max_window_bits` may appear only when offered, with a value, no
/// larger than any offered value. The result folds in the client's own
/// offered limits: a client that offered `client_no_context_takeover` or
/// `client_max_window_bits=N` holds to them whatever the answer says.
pub fn accept_response(
    response: &ExtensionOffer,
    offered: &ExtensionOffer,
) -> Result<DeflateParams, NegotiationError> {
    let answer = parse(response)?;
    let offer = parse(offered)?;

    if offer.server_no_context_takeover && !answer.server_no_context_takeover {
        return Err(NegotiationError::Missing(SERVER_NO_CONTEXT_TAKEOVER));
    }
    match (offer.server_max_window_bits, answer.server_max_window_bits) {
        (Some(_), None) => return Err(NegotiationError::Missing(SERVER_MAX_WINDOW_BITS)),
        (Some(offered), Some(answered)) if answered > offered => {
            return Err(NegotiationError::WindowTooLarge {
                name: SERVER_MAX_WINDOW_BITS,
                offered,
                answered,
            });
        }
        _ => {}
    }
    let client_max_window_bits = match (offer.client_max_window_bits, answer.client_max_window_bits)
    {
        (None, Some(_)) => return Err(NegotiationError::Unrequested(CLIENT_MAX_WINDOW_BITS)),
        (_, Some(None)) => {
            return Err(NegotiationError::InvalidValue {
                name: CLIENT_MAX_WINDOW_BITS.to_owned(),
                value: None,
            });
        }
        (Some(Some(offered)), Some(Some(answered))) if answered > offered => {
            return Err(NegotiationError::WindowTooLarge {
                name: CLIENT_MAX_WINDOW_BITS,
                offered,
                answered,
            });
        }
        (_, Some(Some(answered))) => Some(answered),
        (Some(Some(offered)), None) => Some(offered),
        (_, None) => None,
    };
    Ok(DeflateParams {
        server_no_context_takeover: answer.server_no_context_takeover,
        client_no_context_takeover: answer.client_no_context_takeover
            || offer.client_no_context_takeover,
        server_max_window_bits: answer.server_max_window_bits,
        client_max_window_bits,
    })
}
