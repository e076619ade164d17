//! Runs the shared test vectors of `tests/vectors/` (their format is in
//! `tests/vectors/README.md`) through [`Subscriptions`], the codec and the
//! request signature (`duplex_hub_proto::signature`).
//!
//! The same files are run against the TypeScript SDK (`clients/js`, the
//! client of the hub's web pages too) by its `test/vectors.test.mjs`, so both
//! clients are held to one contract.
//!
//! Invariants of this runner: every file of the folder is either a vector file
//! (`*.json`) or the known companion `README.md`; every key
//! of a file, a case and a step is one the format defines; every case of every
//! file is run (the count is checked against the files); a case fails on the
//! first expectation that does not hold, and on anything sent or produced that
//! no expectation checked by the end of the case.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use duplex_hub_proto::{
    Encoded, Event, Frame, Request, ServerMessage, Since, SubscribeOptions, Subscriptions, binary,
    decode_command, decode_server, encode_command, encode_server,
};
use serde_json::{Map, Value, json};

/// The folder of the vectors.
fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Files of the folder that are not vector files.
const COMPANIONS: [&str; 1] = ["README.md"];

/// The vector files of the folder, in name order; an unknown file is an error.
fn vector_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder()).expect("tests/vectors is readable") {
        let path = entry.expect("a folder entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if COMPANIONS.contains(&name.as_str()) {
            continue;
        }
        assert!(
            name.ends_with(".json") && path.is_file(),
            "tests/vectors/{name}: not a vector file (*.json) nor one of {COMPANIONS:?}: \
             the runners would not run it"
        );
        files.push(path);
    }
    files.sort();
    files
}

/// What running the folder gave.
#[derive(Debug, Default)]
struct Outcome {
    /// Cases in the files.
    total: usize,
    /// Cases run to the end with every expectation met.
    passed: usize,
    /// `file: case: why`, one per failed case.
    failures: Vec<String>,
}

#[test]
fn every_vector_of_every_file_holds() {
    let files = vector_files();
    assert!(!files.is_empty(), "no vector file in {:?}", folder());
    let mut outcome = Outcome::default();
    let mut kinds = BTreeMap::<String, usize>::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).expect("a vector file is readable");
        let file: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("tests/vectors/{name} is not JSON: {e}"));
        let kind = file["kind"].as_str().unwrap_or_default().to_owned();
        let before = outcome.total;
        run_file(&name, &file, &mut outcome);
        *kinds.entry(kind).or_default() += outcome.total - before;
    }
    assert!(
        outcome.failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        outcome.failures.len(),
        outcome.total,
        outcome.failures.join("\n")
    );
    // Every case was run, none skipped.
    assert_eq!(outcome.passed, outcome.total);
    assert_eq!(
        outcome.total,
        count_cases(&files),
        "cases run ≠ cases in the files"
    );
    // The kinds the folder is meant to cover are there.
    assert!(
        kinds.get("subscriptions").is_some_and(|&n| n >= 40),
        "{kinds:?}"
    );
    assert!(kinds.get("codec").is_some_and(|&n| n >= 20), "{kinds:?}");
    assert!(kinds.get("binary").is_some_and(|&n| n >= 40), "{kinds:?}");
    assert!(kinds.get("signature").is_some_and(|&n| n >= 5), "{kinds:?}");
}

/// Counts the cases of `files` independently of the runner.
fn count_cases(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|path| {
            let file: Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            file["cases"].as_array().map_or(0, Vec::len)
        })
        .sum()
}

/// The runner itself can fail: a wrong expectation, an unknown step, an
/// unchecked event and an unknown kind are each reported.
#[test]
fn the_runner_rejects_what_does_not_hold_or_it_does_not_know() {
    let subscribe_at_7 = json!([
        {"do": "subscribe", "channel": "a"}, {"do": "connected"},
        {"expect_sent": [{"op": "subscribe", "id": "$s", "channel": "a"}]},
        {"receive": {"op": "subscribed", "id": "$s", "channel": "a", "epoch": "e", "offset": 7}},
    ]);
    let with = |extra: Value| {
        let mut steps = subscribe_at_7.as_array().unwrap().clone();
        steps.extend(extra.as_array().unwrap().iter().cloned());
        json!({"kind": "subscriptions", "description": "", "cases": [
            {"name": "x", "description": "", "steps": steps}
        ]})
    };
    let fails = |file: Value| {
        let mut outcome = Outcome::default();
        run_file("test.json", &file, &mut outcome);
        assert_eq!(outcome.total, 1);
        outcome.failures.len() == 1 && outcome.passed == 0
    };
    let good =
        with(json!([{"expect_events": [{"subscribed": {"channel": "a", "recovered": false}}]}]));
    assert!(!fails(good), "the base case holds");
    assert!(fails(with(json!([
        {"expect_events": [{"subscribed": {"channel": "a", "recovered": true}}]}
    ]))));
    assert!(fails(with(json!([]))), "an unchecked event");
    assert!(fails(with(json!([
        {"expect_events": [{"subscribed": {"channel": "a", "recovered": false}}]},
        {"do": "jump"}
    ]))));
    assert!(fails(with(json!([
        {"expect_events": [{"subscribed": {"channel": "a", "recovered": false}}]},
        {"expect_sent": [], "extra": 1}
    ]))));
    assert!(fails(
        json!({"kind": "subscriptions", "description": "", "cases": [
            {"name": "x", "description": "", "role": "client", "steps": [], "surplus": true}
        ]})
    ));
    let mut outcome = Outcome::default();
    run_file(
        "t.json",
        &json!({"kind": "nope", "description": "", "cases": [{}]}),
        &mut outcome,
    );
    assert_eq!((outcome.total, outcome.failures.len()), (1, 1));
    // A binary case whose bytes are not the message's (pong id 1 is 48 02).
    let mut outcome = Outcome::default();
    let pong = |hex: &str| {
        json!({"kind": "binary", "description": "", "cases": [{"name": "x", "description": "",
            "role": "server", "message": {"op": "pong", "id": 1}, "hex": hex}]})
    };
    run_file("binary.json", &pong("4802"), &mut outcome);
    run_file("binary.json", &pong("4801"), &mut outcome);
    assert_eq!(
        (outcome.total, outcome.passed),
        (2, 1),
        "{:?}",
        outcome.failures
    );
}

fn run_file(name: &str, file: &Value, outcome: &mut Outcome) {
    let cases = file["cases"].as_array().cloned().unwrap_or_default();
    outcome.total += cases.len().max(1);
    let fail = |outcome: &mut Outcome, why: String| outcome.failures.push(format!("{name}: {why}"));
    if let Err(e) = only_keys(file, &["description", "kind", "cases"]) {
        return fail(outcome, e);
    }
    if cases.is_empty() {
        return fail(outcome, "no cases".into());
    }
    let kind = file["kind"].as_str().unwrap_or_default();
    let mut names = std::collections::HashSet::new();
    for case in &cases {
        let case_name = case["name"].as_str().unwrap_or("(no name)").to_owned();
        let result = if !names.insert(case_name.clone()) {
            Err("a second case of this name".into())
        } else {
            match kind {
                "subscriptions" => run_subscriptions(case),
                "codec" => run_codec(case),
                "binary" => run_binary(case),
                "signature" => run_signature(case),
                other => Err(format!("unknown kind {other:?}")),
            }
        };
        match result {
            Ok(()) => outcome.passed += 1,
            Err(why) => fail(outcome, format!("{case_name}: {why}")),
        }
    }
}

/// Errors unless every key of `object` is in `allowed`.
fn only_keys(object: &Value, allowed: &[&str]) -> Result<(), String> {
    let map = object
        .as_object()
        .ok_or_else(|| format!("not an object: {object}"))?;
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(format!("unknown key {key:?} in {object}")),
        None => Ok(()),
    }
}

// ---- comparing ------------------------------------------------------------

/// Drops what the protocol treats as absent: fields set to `null` or `false`,
/// and `recent: 0`, in every object outside `data`.
fn normalise(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !(v.is_null() || *v == &json!(false)))
                .filter(|(k, v)| !(k.as_str() == "recent" && *v == &json!(0)))
                .map(|(k, v)| {
                    let v = if k == "data" { v.clone() } else { normalise(v) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalise).collect()),
        other => other.clone(),
    }
}

/// Id placeholders (`"id": "$name"`) and their values in one case.
#[derive(Default)]
struct Ids(HashMap<String, u64>);

impl Ids {
    /// Binds `name` to `id`, or checks it; two names never share a value.
    fn bind(&mut self, name: &str, id: u64) -> Result<(), String> {
        match self.0.get(name) {
            Some(&bound) if bound == id => Ok(()),
            Some(&bound) => Err(format!("id {name} is {bound}, got {id}")),
            None => match self.0.iter().find(|(_, v)| **v == id) {
                Some((other, _)) => Err(format!("id {id} is {other} already, not {name}")),
                None => {
                    self.0.insert(name.to_owned(), id);
                    Ok(())
                }
            },
        }
    }

    /// `value` with every bound `"id": "$name"` replaced by its number.
    fn substitute(&self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let v = match (k.as_str(), v.as_str()) {
                        ("id", Some(name)) if name.starts_with('$') => json!(
                            *self
                                .0
                                .get(name)
                                .ok_or_else(|| format!("id {name} is not bound yet"))?
                        ),
                        ("data", _) => v.clone(),
                        _ => self.substitute(v)?,
                    };
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.substitute(v))
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Whether `actual` equals `expected` (both normalised), binding the
    /// placeholders of `expected`.
    fn matches(&mut self, expected: &Value, actual: &Value, subset: bool) -> Result<(), String> {
        let (expected, actual) = (normalise(expected), normalise(actual));
        self.compare(&expected, &actual, subset, "")
            .map_err(|e| format!("{e}\n  expected {expected}\n  got      {actual}"))
    }

    fn compare(
        &mut self,
        expected: &Value,
        actual: &Value,
        subset: bool,
        at: &str,
    ) -> Result<(), String> {
        match (expected, actual) {
            (Value::Object(e), Value::Object(a)) => {
                if !subset && let Some(k) = a.keys().find(|k| !e.contains_key(*k)) {
                    return Err(format!("unexpected field {at}.{k}"));
                }
                for (k, ev) in e {
                    let av = a.get(k).ok_or_else(|| format!("missing field {at}.{k}"))?;
                    match (k.as_str(), ev.as_str(), av.as_u64()) {
                        ("id", Some(name), Some(id)) if name.starts_with('$') => {
                            self.bind(name, id)?
                        }
                        ("data", ..) if ev != av => return Err(format!("{at}.data differs")),
                        ("data", ..) => {}
                        _ => self.compare(ev, av, subset, &format!("{at}.{k}"))?,
                    }
                }
                Ok(())
            }
            (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
                for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                    self.compare(ev, av, subset, &format!("{at}[{i}]"))?;
                }
                Ok(())
            }
            _ if expected == actual => Ok(()),
            _ => Err(format!("{at}: {expected} ≠ {actual}")),
        }
    }
}

// ---- subscriptions --------------------------------------------------------

fn run_subscriptions(case: &Value) -> Result<(), String> {
    only_keys(case, &["name", "description", "role", "steps"])?;
    if case.get("role").is_some_and(|r| r != "client") {
        return Err("subscriptions cases are for clients".into());
    }
    let steps = case["steps"].as_array().ok_or("no steps")?;
    let mut subs = Subscriptions::new();
    let mut ids = Ids::default();
    let mut sent: Vec<Value> = Vec::new();
    let mut events: Vec<Value> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        run_step(step, &mut subs, &mut ids, &mut sent, &mut events)
            .map_err(|e| format!("step {}: {step}: {e}", i + 1))?;
        sent.extend(std::iter::from_fn(|| subs.poll_transmit()).map(|r| request_json(&r)));
    }
    if !sent.is_empty() || !events.is_empty() {
        return Err(format!(
            "unchecked at the end: sent {sent:?}, events {events:?}"
        ));
    }
    Ok(())
}

fn run_step(
    step: &Value,
    subs: &mut Subscriptions,
    ids: &mut Ids,
    sent: &mut Vec<Value>,
    events: &mut Vec<Value>,
) -> Result<(), String> {
    let channel = || step["channel"].as_str().ok_or("no channel");
    if let Some(action) = step.get("do") {
        match action.as_str().unwrap_or_default() {
            "subscribe" => {
                only_keys(step, &["do", "channel", "recent", "since", "invalid"])?;
                let since = match step.get("since") {
                    Some(s) => Some(
                        serde_json::from_value::<Since>(s.clone()).map_err(|e| e.to_string())?,
                    ),
                    None => None,
                };
                let recent = step
                    .get("recent")
                    .map_or(Some(0), Value::as_u64)
                    .ok_or("bad recent")?;
                let options = SubscribeOptions {
                    recent: u32::try_from(recent).map_err(|e| e.to_string())?,
                    since,
                };
                let result = subs.subscribe_with(channel()?, options);
                let invalid = step.get("invalid") == Some(&json!(true));
                if result.is_err() != invalid {
                    return Err(format!("subscribe gave {result:?}"));
                }
            }
            "unsubscribe" => {
                only_keys(step, &["do", "channel", "wanted"])?;
                let wanted = subs.unsubscribe(channel()?);
                let expected = step
                    .get("wanted")
                    .map_or(Some(true), Value::as_bool)
                    .ok_or("bad wanted")?;
                if wanted != expected {
                    return Err(format!("unsubscribe returned {wanted}"));
                }
            }
            "connected" => {
                only_keys(step, &["do"])?;
                sent.extend(subs.on_connected().iter().map(request_json));
            }
            "disconnected" => {
                only_keys(step, &["do"])?;
                subs.on_disconnected();
            }
            "take_id" => {
                only_keys(step, &["do", "id"])?;
                let name = step["id"]
                    .as_str()
                    .filter(|n| n.starts_with('$'))
                    .ok_or("bad id")?;
                ids.bind(name, subs.next_id())?;
            }
            other => return Err(format!("unknown action {other:?}")),
        }
    } else if let Some(message) = step.get("receive") {
        only_keys(step, &["receive"])?;
        let text = ids.substitute(message)?.to_string();
        let message =
            decode_server(Frame::Text(&text)).map_err(|e| format!("does not decode: {e}"))?;
        events.extend(subs.handle(message).iter().map(event_json));
    } else if let Some(expected) = step.get("expect_sent") {
        only_keys(step, &["expect_sent"])?;
        let actual = Value::Array(std::mem::take(sent));
        ids.matches(expected, &actual, false)?;
    } else if let Some(expected) = step.get("expect_events") {
        only_keys(step, &["expect_events"])?;
        let actual = Value::Array(std::mem::take(events));
        ids.matches(expected, &actual, false)?;
    } else if let Some(expected) = step.get("expect_channel") {
        only_keys(step, &["expect_channel"])?;
        only_keys(expected, &["channel", "wanted", "subscribed", "position"])?;
        let channel = expected["channel"].as_str().ok_or("no channel")?;
        let wanted = subs.channels().any(|c| c == channel);
        let mut actual = json!({"channel": channel, "wanted": wanted, "subscribed": subs.is_subscribed(channel)});
        if wanted || expected.get("position").is_some() {
            actual["position"] = json!(subs.position(channel));
        }
        let mut expected = expected.clone();
        if expected.get("wanted").is_none() {
            expected["wanted"] = json!(true);
        }
        if expected != actual {
            return Err(format!("expected {expected}, got {actual}"));
        }
    } else if let Some(expected) = step.get("expect_channels") {
        only_keys(step, &["expect_channels"])?;
        let actual: Vec<&str> = subs.channels().collect();
        if expected != &json!(actual) {
            return Err(format!("wanted channels are {actual:?}"));
        }
    } else {
        return Err("unknown step".into());
    }
    Ok(())
}

/// A request as its wire JSON.
fn request_json(request: &Request) -> Value {
    match encode_command(request) {
        Encoded::Text(text) => serde_json::from_str(&text).expect("the codec writes JSON"),
        Encoded::Binary(_) => json!({"binary": "a subscription request is never binary"}),
    }
}

/// A server message as its wire JSON (text frames; binary as header + `data_hex`).
fn server_json(message: &ServerMessage) -> Value {
    frame_json(&encode_server(message))
}

fn frame_json(encoded: &Encoded) -> Value {
    match encoded {
        Encoded::Text(text) => serde_json::from_str(text).expect("the codec writes JSON"),
        Encoded::Binary(bytes) => {
            let (header, data) = split_binary(bytes).expect("the codec writes binary frames right");
            let mut header = header;
            header["data_hex"] = json!(hex(data));
            header
        }
    }
}

fn event_json(event: &Event) -> Value {
    match event {
        Event::Subscribed { channel, recovered } => {
            json!({"subscribed": {"channel": channel, "recovered": recovered}})
        }
        Event::Message(p) => json!({"message": {"channel": p.channel, "offset": p.offset}}),
        Event::Gap { channel } => json!({"gap": {"channel": channel}}),
        Event::SubscribeFailed {
            channel,
            code,
            message,
        } => json!({
            "subscribe_failed": {"channel": channel, "code": code.as_str(), "message": message}
        }),
        Event::Unsubscribed { channel, reason } => {
            json!({"unsubscribed": {"channel": channel, "reason": reason}})
        }
        Event::Other(message) => json!({"other": server_json(message)}),
    }
}

// ---- codec ----------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("odd hex {text:?}"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| format!("hex {text:?}: {e}")))
        .collect()
}

/// Header JSON and data of a binary frame, checking its length prefix.
fn split_binary(bytes: &[u8]) -> Result<(Value, &[u8]), String> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("shorter than 4 bytes")?;
    let len = u32::from_be_bytes(*len) as usize;
    let header = rest.get(..len).ok_or("header length beyond the frame")?;
    let header = serde_json::from_slice(header).map_err(|e| format!("header: {e}"))?;
    Ok((header, &rest[len..]))
}

/// The frame a vector gives: `{"text": "…"}` or `{"binary_hex": "…"}`.
fn vector_frame(frame: &Value) -> Result<Vec<u8>, String> {
    only_keys(frame, &["text", "binary_hex"])?;
    match (frame.get("text"), frame.get("binary_hex")) {
        (Some(Value::String(text)), None) => Ok(text.clone().into_bytes()),
        (None, Some(Value::String(h))) => unhex(h),
        _ => Err(format!("a frame is text or binary_hex: {frame}")),
    }
}

/// A message given as wire JSON (with `data_hex` for binary data) as a frame.
fn message_frame(message: &Value) -> Result<(bool, Vec<u8>), String> {
    let mut header = message.clone();
    match header.as_object_mut().and_then(|m| m.remove("data_hex")) {
        None => Ok((true, message.to_string().into_bytes())),
        Some(data) => {
            let data = unhex(data.as_str().ok_or("data_hex is a string")?)?;
            let header = header.to_string().into_bytes();
            let mut frame = u32::try_from(header.len()).unwrap().to_be_bytes().to_vec();
            frame.extend(header);
            frame.extend(data);
            Ok((false, frame))
        }
    }
}

fn run_codec(case: &Value) -> Result<(), String> {
    only_keys(
        case,
        &["name", "description", "role", "decode", "encode", "expect"],
    )?;
    let hub = match case["role"].as_str() {
        Some("client") => false,
        Some("hub") => true,
        other => {
            return Err(format!(
                "role {other:?}: a codec case is for a client or the hub"
            ));
        }
    };
    let expect = &case["expect"];
    let mut ids = Ids::default();
    if let Some(frame) = case.get("decode") {
        let bytes = vector_frame(frame)?;
        let text = frame.get("text").is_some();
        let decoded = match (hub, text) {
            (false, true) => decode_server(Frame::Text(std::str::from_utf8(&bytes).unwrap()))
                .map(|m| server_json(&m)),
            (false, false) => decode_server(Frame::Binary(&bytes)).map(|m| server_json(&m)),
            (true, true) => decode_command(Frame::Text(std::str::from_utf8(&bytes).unwrap()))
                .map(|r| frame_json(&encode_command(&r))),
            (true, false) => {
                decode_command(Frame::Binary(&bytes)).map(|r| frame_json(&encode_command(&r)))
            }
        };
        only_keys(expect, &["message", "error"])?;
        match (decoded, expect.get("message"), expect.get("error")) {
            (Ok(actual), Some(expected), None) => ids.matches(expected, &actual, true),
            (Err(error), None, Some(expected)) => {
                only_keys(expected, &["code", "id"])?;
                if expected["code"] != error.code.as_str() {
                    return Err(format!("error {error:?}, expected {expected}"));
                }
                match expected.get("id") {
                    Some(id) if *id != json!(error.id) => {
                        Err(format!("error {error:?}, expected {expected}"))
                    }
                    _ => Ok(()),
                }
            }
            (Ok(actual), _, _) => Err(format!("decoded to {actual}, expected {expect}")),
            (Err(error), _, _) => Err(format!("refused ({error}), expected {expect}")),
        }
    } else if let Some(message) = case.get("encode") {
        let (text, frame) = message_frame(message)?;
        let encoded = match (hub, text) {
            (false, true) => decode_command(Frame::Text(std::str::from_utf8(&frame).unwrap()))
                .map(|r| encode_command(&r)),
            (false, false) => decode_command(Frame::Binary(&frame)).map(|r| encode_command(&r)),
            (true, true) => decode_server(Frame::Text(std::str::from_utf8(&frame).unwrap()))
                .map(|m| encode_server(&m)),
            (true, false) => decode_server(Frame::Binary(&frame)).map(|m| encode_server(&m)),
        }
        .map_err(|e| format!("the vector's message does not decode: {e}"))?;
        only_keys(expect, &["text", "binary"])?;
        match (&encoded, expect.get("text"), expect.get("binary")) {
            (Encoded::Text(t), Some(expected), None) => {
                let actual: Value = serde_json::from_str(t).map_err(|e| e.to_string())?;
                ids.matches(expected, &actual, false)
            }
            (Encoded::Binary(bytes), None, Some(expected)) => {
                only_keys(expected, &["header", "data_hex"])?;
                let (header, data) = split_binary(bytes)?;
                ids.matches(&expected["header"], &header, false)?;
                if expected["data_hex"] != hex(data) {
                    return Err(format!("data {} ≠ {}", hex(data), expected["data_hex"]));
                }
                Ok(())
            }
            _ => Err(format!("encoded as {encoded:?}, expected {expect}")),
        }
    } else {
        Err("a codec case has decode or encode".into())
    }
}

// ---- binary envelope --------------------------------------------------------

/// A `binary` case: a message and its frame's bytes, both ways, or bytes the
/// decoder of the role's direction refuses.
fn run_binary(case: &Value) -> Result<(), String> {
    only_keys(
        case,
        &["name", "description", "role", "message", "hex", "expect"],
    )?;
    let command = match case["role"].as_str() {
        Some("command") => true,
        Some("server") => false,
        other => {
            return Err(format!(
                "role {other:?}: a binary case is a command or server's"
            ));
        }
    };
    let wanted = case["hex"].as_str().ok_or("a binary case has hex")?;
    let bytes = unhex(wanted)?;
    let decoded = if command {
        binary::decode_command(&bytes).map(|r| frame_json(&encode_command(&r)))
    } else {
        binary::decode_server(&bytes).map(|m| server_json(&m))
    };
    match (case.get("message"), case.get("expect")) {
        (Some(message), None) => {
            // The message's value, read through the JSON envelope.
            let (text, frame) = message_frame(message)?;
            let frame = if text {
                Frame::Text(std::str::from_utf8(&frame).unwrap())
            } else {
                Frame::Binary(&frame)
            };
            let encoded = if command {
                decode_command(frame).map(|r| binary::encode_command(&r))
            } else {
                decode_server(frame).map(|m| binary::encode_server(&m))
            }
            .map_err(|e| format!("the vector's message does not decode: {e}"))?;
            if hex(&encoded) != wanted {
                return Err(format!("encoded as {}, expected {wanted}", hex(&encoded)));
            }
            let actual = decoded.map_err(|e| format!("the bytes are refused: {e}"))?;
            Ids::default().matches(message, &actual, false)
        }
        (None, Some(expect)) => {
            only_keys(expect, &["error"])?;
            let expected = &expect["error"];
            only_keys(expected, &["code", "id"])?;
            let error = match decoded {
                Ok(actual) => return Err(format!("decoded to {actual}, expected {expect}")),
                Err(error) => error,
            };
            if expected["code"] != error.code.as_str() {
                return Err(format!("error {error:?}, expected {expected}"));
            }
            match expected.get("id") {
                Some(id) if *id != json!(error.id) => {
                    Err(format!("error {error:?}, expected {expected}"))
                }
                _ => Ok(()),
            }
        }
        _ => Err("a binary case has a message or an expected error".into()),
    }
}

/// Kind `signature`: `signature_header(secret, t, body)` is exactly
/// `header`, and `verify` accepts it at `t` and refuses it for another body.
fn run_signature(case: &Value) -> Result<(), String> {
    use duplex_hub_proto::signature::{DEFAULT_TOLERANCE_SECS, signature_header, verify};
    only_keys(
        case,
        &["name", "description", "secret", "t", "body", "header"],
    )?;
    let secret = case["secret"].as_str().ok_or("no secret")?.as_bytes();
    let t = case["t"].as_u64().ok_or("no t")?;
    let body = case["body"].as_str().ok_or("no body")?.as_bytes();
    let header = case["header"].as_str().ok_or("no header")?;
    let signed = signature_header(secret, t, body);
    if signed != header {
        return Err(format!("signed {signed:?}, the vector says {header:?}"));
    }
    verify(secret, header, body, t, DEFAULT_TOLERANCE_SECS)
        .map_err(|e| format!("its own header is refused: {e}"))?;
    let mut other = body.to_vec();
    other.push(b' ');
    if verify(secret, header, &other, t, DEFAULT_TOLERANCE_SECS).is_ok() {
        return Err("a changed body is accepted".into());
    }
    Ok(())
}
