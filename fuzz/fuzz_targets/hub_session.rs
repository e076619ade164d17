//! A connection's rules (`duplex_hub_proto::session`) driven as the hub's
//! session drives them, by any sequence of commands, broker answers,
//! refreshes and timer firings: no panic, and the invariants hold after
//! every step:
//!
//! - nothing but `connect` passes before `connect`, and `connect` passes once;
//! - the channels subscribed are each held once, never more than the limit,
//!   and none before `connect`;
//! - `unsubscribe` succeeds exactly for a channel subscribed;
//! - a `$` channel never takes a publish, whatever the grant;
//! - after a refresh, every channel still subscribed is allowed by the new
//!   grants; every one revoked is refused by them;
//! - a fired timer ends the connection with 4001 before `connect`, 4002
//!   after; nothing runs after the end.
//!
//! Input layout: lines (split at `\n`). A line's first byte picks the step:
//! `T` the phase's timer fires; `R` a refresh whose grants are the rest of
//! the line's bytes (bit patterns over the channels seen); `!` the broker
//! refuses the next subscribe; anything else is a command frame (the whole
//! line, as text) for the hub's decoder. The first byte of the input sets the
//! subscription limit (1 to 8) and the namespace's access rules.
#![no_main]

use duplex_hub_proto::session::{
    Access, Action, Close, Permission, Phase, Refusal, SessionState, may,
};
use duplex_hub_proto::{Command, Frame, decode_command};
use libfuzzer_sys::fuzz_target;

/// Whether a grant given by `bits` covers `channel` (a stand-in for a
/// token's patterns: any deterministic function of the name will do).
fn granted(bits: &[u8], channel: &str) -> bool {
    let h = channel.bytes().fold(0u8, |h, b| h.rotate_left(3) ^ b);
    bits.iter().any(|&b| b == h)
}

fn permission(bits: u8) -> Permission {
    match bits % 3 {
        0 => Permission::Any,
        1 => Permission::Granted,
        _ => Permission::None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&setup, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(setup % 8) + 1;
    let access = Access {
        subscribe: permission(setup >> 3),
        publish: permission(setup >> 5),
        presence: setup & 0x80 != 0,
        anonymous: setup & 0x40 != 0,
    };
    let mut state: SessionState<String> = SessionState::new();
    let mut grants: Vec<u8> = Vec::new();
    let mut anonymous = true;
    let mut broker_refuses = false;
    for line in rest.split(|&b| b == b'\n') {
        let Some((&kind, tail)) = line.split_first() else {
            continue;
        };
        let allowed = |anonymous: bool, grants: &[u8], channel: &str| {
            may(
                Action::Subscribe,
                channel,
                &access,
                anonymous,
                granted(grants, channel),
            )
        };
        match kind {
            b'T' => {
                let close = state.deadline();
                let expected = match state.phase() {
                    Phase::Connecting => Close::NO_CONNECT,
                    Phase::Connected => Close::TOKEN_EXPIRED,
                };
                assert_eq!(close, expected);
                // The connection ends: it leaves every channel, and nothing
                // more runs.
                let left = state.take_all();
                assert!(left.len() <= max);
                return;
            }
            b'R' if state.phase() == Phase::Connected => {
                anonymous = false;
                grants = tail.to_vec();
                let before = state.subscriptions();
                let revoked = state.revoke(|channel| allowed(anonymous, &grants, channel));
                assert_eq!(before, state.subscriptions() + revoked.len());
                for (channel, refusal) in &revoked {
                    assert!(!state.is_subscribed(channel));
                    assert_eq!(
                        allowed(anonymous, &grants, channel).err().as_ref(),
                        Some(refusal)
                    );
                }
            }
            b'!' => broker_refuses = true,
            _ => {
                let Ok(text) = std::str::from_utf8(line) else {
                    continue;
                };
                let Ok(request) = decode_command(Frame::Text(text)) else {
                    continue;
                };
                let phase = state.phase();
                let is_connect = matches!(request.command, Command::Connect { .. });
                match state.gate(&request.command) {
                    Err(Refusal::NotConnected) => {
                        assert!(phase == Phase::Connecting && !is_connect)
                    }
                    Err(Refusal::AlreadyConnected) => {
                        assert!(phase == Phase::Connected && is_connect)
                    }
                    Err(other) => panic!("the gate refused with {other:?}"),
                    Ok(()) => {
                        assert_eq!(is_connect, phase == Phase::Connecting);
                        match request.command {
                            Command::Connect { .. } => state.connected(),
                            Command::Subscribe { channel, .. } => {
                                let checked = state.check_subscribe(&channel, max);
                                if state.is_subscribed(&channel) {
                                    assert_eq!(checked, Err(Refusal::AlreadySubscribed));
                                } else if state.subscriptions() >= max {
                                    assert_eq!(checked, Err(Refusal::TooManyChannels));
                                }
                                let ok = checked.is_ok()
                                    && allowed(anonymous, &grants, &channel).is_ok()
                                    && !std::mem::take(&mut broker_refuses);
                                if ok {
                                    state.subscribed(channel);
                                }
                            }
                            Command::Unsubscribe { channel } => {
                                let was = state.is_subscribed(&channel);
                                assert_eq!(state.unsubscribe(&channel).is_ok(), was);
                                assert!(!state.is_subscribed(&channel));
                            }
                            Command::Publish { channel, .. } | Command::Signal { channel, .. } => {
                                let verdict = may(
                                    Action::Publish,
                                    &channel,
                                    &access,
                                    anonymous,
                                    granted(&grants, &channel),
                                );
                                if channel.starts_with('$') {
                                    assert!(matches!(verdict, Err(Refusal::HubChannel { .. })));
                                }
                            }
                            Command::Presence { channel } => {
                                let verdict = may(
                                    Action::Presence,
                                    &channel,
                                    &access,
                                    anonymous,
                                    granted(&grants, &channel),
                                );
                                if !access.presence {
                                    assert!(verdict.is_err());
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        // After every step.
        assert!(state.subscriptions() <= max);
        if state.phase() == Phase::Connecting {
            assert_eq!(state.subscriptions(), 0);
        }
    }
});
