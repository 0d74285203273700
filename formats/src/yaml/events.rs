//! The events of one piece of a YAML stream (one document, or a few when
//! some are empty) written out as JSON records.
//!
//! The parser's events drive a small machine: along `path` it looks for the
//! key of each step, at the records node it writes a mapping as one record
//! or each item of a sequence as one, and it skips what lies elsewhere.
//! Events inside an anchored node are kept, compactly, so that an alias can
//! replay them; replays are counted, and the JSON written is measured, so
//! that aliases cannot make the work or the output grow without bound.

use rota_core::DecodeErrorKind;
use saphyr_parser::{Event, Marker, Parser, ScalarStyle};

use super::scalar::{self, Tag, Value};

/// Deepest nesting of mappings and sequences read (aliases expanded).
pub(super) const MAX_DEPTH: usize = 128;

/// Events an alias may replay, as a multiple of the text's length in bytes.
pub(super) const REPLAY_FACTOR: usize = 100;

/// Why a piece of the stream gives no records.
#[derive(Debug)]
pub(super) struct Failure {
    /// Where, in the piece.
    pub(super) at: Marker,
    /// What kind of failure.
    pub(super) kind: DecodeErrorKind,
    /// What is wrong, in lowercase words.
    pub(super) message: String,
}

impl Failure {
    fn new(at: Marker, kind: DecodeErrorKind, message: impl Into<String>) -> Self {
        Self {
            at,
            kind,
            message: message.into(),
        }
    }
}

/// The records of a piece: their JSON one after another, and for each
/// where it starts in the text and where its JSON ends.
#[derive(Debug, Default)]
pub(super) struct Records {
    /// The JSON objects (or other values) of the records, back to back.
    pub(super) json: Vec<u8>,
    /// Each record's start in the text and the end of its JSON in `json`.
    pub(super) ends: Vec<(Marker, usize)>,
}

/// The records of `text` (following `path`), writing at most `budget` bytes
/// of JSON.
pub(super) fn read(text: &str, path: &[String], budget: usize) -> Result<Records, Failure> {
    let replays = REPLAY_FACTOR.saturating_mul(text.len().max(1024));
    let mut writer = Writer {
        path,
        out: Records::default(),
        open: None,
        stack: Vec::new(),
        budget,
        replays_left: replays,
    };
    let mut anchors = Anchors::default();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            Failure::new(
                *e.marker(),
                DecodeErrorKind::Syntax,
                syntax_message(e.info()),
            )
        })?;
        let at = span.start;
        let (ev, anchor) = match &event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {
                continue;
            }
            Event::DocumentStart(_) => {
                anchors.clear();
                writer.stack.clear();
                continue;
            }
            Event::Alias(id) => (Ev::Alias(*id), 0),
            Event::Scalar(value, style, anchor, tag) => (
                Ev::Scalar(value, *style == ScalarStyle::Plain, Tag::of(tag.as_deref())),
                *anchor,
            ),
            Event::SequenceStart(anchor, tag) => (Ev::Seq(Tag::of(tag.as_deref())), *anchor),
            Event::MappingStart(anchor, tag) => (Ev::Map(Tag::of(tag.as_deref())), *anchor),
            Event::SequenceEnd | Event::MappingEnd => (Ev::End, 0),
        };
        anchors.note(ev, anchor);
        writer.event(ev, at, &anchors)?;
    }
    Ok(writer.out)
}

/// A parser's message in the user's terms.
fn syntax_message(info: &str) -> String {
    match info {
        "recursion limit exceeded" => {
            return "invalid YAML: flow collections nest too deeply".to_owned();
        }
        "while parsing node, found unknown anchor" => {
            return "invalid YAML: an alias of an anchor not defined before it in the document"
                .to_owned();
        }
        _ => {}
    }
    format!("invalid YAML: {info}")
}

/// An event, as far as reading goes.
#[derive(Clone, Copy, Debug)]
enum Ev<'a> {
    /// The start of a mapping.
    Map(Tag),
    /// The start of a sequence.
    Seq(Tag),
    /// The end of a mapping or sequence.
    End,
    /// A scalar: text, whether plain, tag.
    Scalar(&'a str, bool, Tag),
    /// An alias of the anchored node with this id.
    Alias(usize),
}

/// The events of anchored nodes, kept for their aliases.
#[derive(Default)]
struct Anchors {
    /// Encoded events (see [`encode`]).
    events: Vec<u8>,
    /// By anchor id: the node's events once complete.
    nodes: Vec<Option<(usize, usize)>>,
    /// Anchored nodes not complete yet: id, start in `events`, depth.
    open: Vec<(usize, usize, usize)>,
    /// Nesting of the events so far.
    depth: usize,
}

impl Anchors {
    /// Forgets the anchors of the document before.
    fn clear(&mut self) {
        self.events.clear();
        self.nodes.clear();
        self.open.clear();
        self.depth = 0;
    }

    /// Notes a parsed event (`anchor` 0 when none), keeping it while inside
    /// an anchored node.
    fn note(&mut self, ev: Ev<'_>, anchor: usize) {
        if anchor != 0 {
            if self.nodes.len() <= anchor {
                self.nodes.resize(anchor + 1, None);
            }
            self.nodes[anchor] = None;
            self.open.push((anchor, self.events.len(), self.depth));
        }
        if !self.open.is_empty() {
            encode(ev, &mut self.events);
        }
        match ev {
            Ev::Map(_) | Ev::Seq(_) => self.depth += 1,
            Ev::End => self.depth = self.depth.saturating_sub(1),
            Ev::Scalar(..) | Ev::Alias(_) => {}
        }
        while let Some(&(id, start, depth)) = self.open.last() {
            if depth != self.depth {
                break;
            }
            self.open.pop();
            self.nodes[id] = Some((start, self.events.len()));
        }
    }

    /// The events of the complete node with anchor `id`.
    fn node(&self, id: usize) -> Option<(usize, usize)> {
        self.nodes.get(id).copied().flatten()
    }
}

/// Appends `ev` to `out`: a byte for the kind, the tag, and a scalar's text
/// or an alias's id after its length.
fn encode(ev: Ev<'_>, out: &mut Vec<u8>) {
    match ev {
        Ev::Map(tag) => out.extend_from_slice(&[0, tag.to_byte()]),
        Ev::Seq(tag) => out.extend_from_slice(&[1, tag.to_byte()]),
        Ev::End => out.push(2),
        Ev::Scalar(text, plain, tag) => {
            out.extend_from_slice(&[3 + u8::from(plain), tag.to_byte()]);
            varint(text.len(), out);
            out.extend_from_slice(text.as_bytes());
        }
        Ev::Alias(id) => {
            out.push(5);
            varint(id, out);
        }
    }
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n & 0x7F) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The event [`encode`] wrote at `events[at..]`, and where the next starts.
fn decode(events: &[u8], at: usize) -> (Ev<'_>, usize) {
    let byte = |i: usize| events.get(i).copied().unwrap_or(0);
    let read_varint = |mut i: usize| {
        let (mut n, mut shift) = (0usize, 0u32);
        loop {
            let b = byte(i);
            i += 1;
            n |= usize::from(b & 0x7F).checked_shl(shift).unwrap_or(0);
            shift += 7;
            if b < 0x80 || i >= events.len() {
                return (n, i);
            }
        }
    };
    match byte(at) {
        0 => (Ev::Map(Tag::from_byte(byte(at + 1))), at + 2),
        1 => (Ev::Seq(Tag::from_byte(byte(at + 1))), at + 2),
        kind @ (3 | 4) => {
            let tag = Tag::from_byte(byte(at + 1));
            let (len, from) = read_varint(at + 2);
            let to = from.saturating_add(len).min(events.len());
            let text = events
                .get(from..to)
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default();
            (Ev::Scalar(text, kind == 4, tag), to)
        }
        5 => {
            let (id, next) = read_varint(at + 1);
            (Ev::Alias(id), next)
        }
        _ => (Ev::End, at + 1),
    }
}

/// A mapping or sequence being read.
#[derive(Debug)]
enum Frame {
    /// A mapping on the path, where the key of step `step` is sought.
    Find {
        step: usize,
        /// Whether a key comes next (else a value).
        key_next: bool,
        /// Whether the last key was the one sought.
        matched: bool,
        /// Whether the key was found.
        found: bool,
        /// Where the mapping starts.
        at: Marker,
    },
    /// The sequence whose items are the records.
    Items,
    /// A mapping being written.
    Map { key_next: bool, first: bool },
    /// A sequence being written.
    Seq { first: bool },
    /// A mapping or sequence skipped.
    Skip,
}

/// What the next node is to the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The node the records are in (the document, or the node at the end
    /// of the path): a mapping, a sequence of them, or null.
    Records,
    /// A mapping on the path, at this step.
    Find(usize),
    /// An item of the records sequence: one record.
    Record,
    /// A key of a mapping being written.
    Key,
    /// A key of a mapping on the path.
    FindKey,
    /// A value being written.
    Value,
    /// A node not read.
    Skip,
}

struct Writer<'p> {
    path: &'p [String],
    out: Records,
    /// The record being written: where it starts and the depth of the
    /// stack below its node.
    open: Option<(Marker, usize)>,
    stack: Vec<Frame>,
    /// Most JSON bytes written.
    budget: usize,
    /// Events aliases may still replay.
    replays_left: usize,
}

impl Writer<'_> {
    fn role(&self) -> Role {
        match self.stack.last() {
            None if self.path.is_empty() => Role::Records,
            None => Role::Find(0),
            Some(Frame::Find { key_next: true, .. }) => Role::FindKey,
            Some(Frame::Find {
                matched: true,
                step,
                ..
            }) => {
                if step + 1 == self.path.len() {
                    Role::Records
                } else {
                    Role::Find(step + 1)
                }
            }
            Some(Frame::Find { .. } | Frame::Skip) => Role::Skip,
            Some(Frame::Items) => Role::Record,
            Some(Frame::Map { key_next: true, .. }) => Role::Key,
            Some(Frame::Map { .. } | Frame::Seq { .. }) => Role::Value,
        }
    }

    fn event(&mut self, ev: Ev<'_>, at: Marker, anchors: &Anchors) -> Result<(), Failure> {
        match ev {
            Ev::Alias(id) => self.alias(id, at, anchors),
            ev => self.node_event(ev, at),
        }
    }

    /// An event other than an alias.
    fn node_event(&mut self, ev: Ev<'_>, at: Marker) -> Result<(), Failure> {
        match ev {
            Ev::Map(tag) => self.start(true, tag, at),
            Ev::Seq(tag) => self.start(false, tag, at),
            Ev::End => self.end(at),
            Ev::Scalar(text, plain, tag) => self.scalar(text, plain, tag, at),
            Ev::Alias(_) => Ok(()),
        }
    }

    /// An alias: the events of its node again (nothing when the node is
    /// skipped).
    fn alias(&mut self, id: usize, at: Marker, anchors: &Anchors) -> Result<(), Failure> {
        if self.role() == Role::Skip {
            self.done();
            return Ok(());
        }
        let node = |id| {
            anchors.node(id).ok_or_else(|| {
                Failure::new(
                    at,
                    DecodeErrorKind::Syntax,
                    "invalid YAML: an alias inside the node it refers to",
                )
            })
        };
        let mut replaying = vec![node(id)?];
        while let Some(range) = replaying.last_mut() {
            if range.0 >= range.1 {
                replaying.pop();
                continue;
            }
            let (ev, next) = decode(&anchors.events, range.0);
            range.0 = next;
            self.replays_left = self.replays_left.checked_sub(1).ok_or_else(|| {
                Failure::new(
                    at,
                    DecodeErrorKind::TooLarge,
                    format!(
                        "aliases repeat the document's nodes more than {REPLAY_FACTOR} times over \
                         (an alias bomb?)"
                    ),
                )
            })?;
            match ev {
                Ev::Alias(_) if self.role() == Role::Skip => self.done(),
                Ev::Alias(inner) => replaying.push(node(inner)?),
                ev => self.node_event(ev, at)?,
            }
        }
        Ok(())
    }

    fn start(&mut self, mapping: bool, tag: Tag, at: Marker) -> Result<(), Failure> {
        let role = self.role();
        let what = if mapping { "mapping" } else { "sequence" };
        if role != Role::Skip {
            let fits = if mapping {
                tag.fits_mapping()
            } else {
                tag.fits_sequence()
            };
            if !fits {
                return Err(Failure::new(
                    at,
                    DecodeErrorKind::Type,
                    format!("a {what} tagged {}, a tag for {}", tag.name(), tag.fits()),
                ));
            }
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(Failure::new(
                at,
                DecodeErrorKind::TooLarge,
                format!("mappings and sequences nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        let frame = match role {
            Role::Records if mapping => {
                self.begin(at);
                self.open_value(true)
            }
            Role::Records => Frame::Items,
            Role::Find(step) if mapping => Frame::Find {
                step,
                key_next: true,
                matched: false,
                found: false,
                at,
            },
            Role::Find(step) => {
                return Err(Failure::new(
                    at,
                    DecodeErrorKind::Type,
                    format!(
                        "expected a mapping with key '{}', found a sequence",
                        self.path[step]
                    ),
                ));
            }
            Role::Record => {
                self.begin(at);
                self.open_value(mapping)
            }
            Role::Value => {
                self.comma();
                self.open_value(mapping)
            }
            Role::Key => {
                return Err(Failure::new(
                    at,
                    DecodeErrorKind::Type,
                    format!(
                        "a {what} used as a key: a field name must be text, a number, a boolean or null"
                    ),
                ));
            }
            Role::FindKey => {
                if let Some(Frame::Find { matched, .. }) = self.stack.last_mut() {
                    *matched = false;
                }
                Frame::Skip
            }
            Role::Skip => Frame::Skip,
        };
        self.stack.push(frame);
        Ok(())
    }

    /// Writes the start of a mapping or sequence value.
    fn open_value(&mut self, mapping: bool) -> Frame {
        if mapping {
            self.out.json.push(b'{');
            Frame::Map {
                key_next: true,
                first: true,
            }
        } else {
            self.out.json.push(b'[');
            Frame::Seq { first: true }
        }
    }

    /// Writes the comma before an item of a sequence but the first.
    fn comma(&mut self) {
        if let Some(Frame::Seq { first }) = self.stack.last_mut() {
            if !*first {
                self.out.json.push(b',');
            }
            *first = false;
        }
    }

    fn end(&mut self, at: Marker) -> Result<(), Failure> {
        match self.stack.pop() {
            Some(Frame::Map { .. }) => self.out.json.push(b'}'),
            Some(Frame::Seq { .. }) => self.out.json.push(b']'),
            Some(Frame::Find {
                found: false,
                step,
                at: start,
                ..
            }) => {
                return Err(Failure::new(
                    start,
                    DecodeErrorKind::Type,
                    format!("the document has no key '{}' on the path", self.path[step]),
                ));
            }
            _ => {}
        }
        self.check_budget(at)?;
        self.done();
        Ok(())
    }

    fn scalar(&mut self, text: &str, plain: bool, tag: Tag, at: Marker) -> Result<(), Failure> {
        let role = self.role();
        if role == Role::Skip {
            self.done();
            return Ok(());
        }
        let value = scalar::resolve(text, plain, tag)
            .map_err(|message| Failure::new(at, DecodeErrorKind::Type, message))?;
        match role {
            Role::Records | Role::Find(_) => {
                if value != Value::Null {
                    let expected = match role {
                        Role::Find(step) => format!("a mapping with key '{}'", self.path[step]),
                        _ => "a mapping or a sequence of mappings".to_owned(),
                    };
                    return Err(Failure::new(
                        at,
                        DecodeErrorKind::Type,
                        format!(
                            "expected {expected}, found the scalar {}",
                            scalar::quoted(text)
                        ),
                    ));
                }
            }
            Role::Record => {
                self.begin(at);
                scalar::write_json(&value, &mut self.out.json);
            }
            Role::Value => {
                self.comma();
                scalar::write_json(&value, &mut self.out.json);
            }
            Role::Key => {
                if let Some(Frame::Map { first, .. }) = self.stack.last_mut() {
                    if !*first {
                        self.out.json.push(b',');
                    }
                    *first = false;
                }
                scalar::write_str(&scalar::key_text(value), &mut self.out.json);
                self.out.json.push(b':');
            }
            Role::FindKey => {
                let key = scalar::key_text(value);
                if let Some(Frame::Find {
                    step,
                    matched,
                    found,
                    ..
                }) = self.stack.last_mut()
                {
                    *matched = !*found && *key == *self.path[*step];
                    *found |= *matched;
                }
            }
            Role::Skip => {}
        }
        self.check_budget(at)?;
        self.done();
        Ok(())
    }

    /// Starts a record at `at`.
    fn begin(&mut self, at: Marker) {
        self.open = Some((at, self.stack.len()));
    }

    /// A node is complete: the record ends if it was the record's, and its
    /// mapping goes from key to value or back.
    fn done(&mut self) {
        if let Some((at, depth)) = self.open
            && depth == self.stack.len()
        {
            self.out.ends.push((at, self.out.json.len()));
            self.open = None;
        }
        if let Some(Frame::Map { key_next, .. } | Frame::Find { key_next, .. }) =
            self.stack.last_mut()
        {
            *key_next = !*key_next;
        }
    }

    fn check_budget(&self, at: Marker) -> Result<(), Failure> {
        if self.out.json.len() > self.budget {
            return Err(Failure::new(
                at,
                DecodeErrorKind::TooLarge,
                format!(
                    "the document expands to more than {} bytes of records (aliases repeating \
                     large values?)",
                    self.budget
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str, path: &[&str]) -> Result<Vec<(usize, String)>, String> {
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        let r = read(text, &path, 1 << 20).map_err(|f| {
            format!(
                "{:?} at line {} index {}: {}",
                f.kind,
                f.at.line(),
                f.at.index(),
                f.message
            )
        })?;
        let mut from = 0;
        Ok(r.ends
            .iter()
            .map(|(at, end)| {
                let json = String::from_utf8_lossy(&r.json[from..*end]).into_owned();
                from = *end;
                (at.line(), json)
            })
            .collect())
    }

    fn json(text: &str) -> Vec<String> {
        records(text, &[])
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .into_iter()
            .map(|(_, j)| j)
            .collect()
    }

    #[test]
    fn a_mapping_is_a_record_and_a_sequence_one_per_item() {
        assert_eq!(
            json("a: 1\nb: [x, {c: null}]\n"),
            [r#"{"a":1,"b":["x",{"c":null}]}"#]
        );
        assert_eq!(
            records("- a: 1\n- a: 2\n\n-  {a: 3}\n", &[]).expect("records"),
            [
                (1, r#"{"a":1}"#.to_owned()),
                (2, r#"{"a":2}"#.to_owned()),
                (4, r#"{"a":3}"#.to_owned())
            ]
        );
        assert!(json("").is_empty());
        assert!(json("~\n").is_empty());
        assert!(json("--- # nothing\n").is_empty());
        let e = records("just text\n", &[]).expect_err("a scalar");
        assert!(e.contains("found the scalar 'just text'"), "{e}");
    }

    #[test]
    fn several_documents_in_one_piece() {
        assert_eq!(
            json("---\n---\na: 1\n...\n---\nb: 2\n"),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
    }

    #[test]
    fn the_path_leads_to_the_records() {
        let text =
            "meta: {x: 1}\ndata:\n  other: [1]\n  items:\n    - id: 1\n    - id: 2\n  items: []\n";
        assert_eq!(
            records(text, &["data", "items"]).expect("records"),
            [(5, r#"{"id":1}"#.to_owned()), (6, r#"{"id":2}"#.to_owned())]
        );
        let e = records(text, &["data", "nope"]).expect_err("missing");
        assert!(e.contains("no key 'nope' on the path"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = records(text, &["data", "other", "x"]).expect_err("a sequence");
        assert!(
            e.contains("expected a mapping with key 'x', found a sequence"),
            "{e}"
        );
        // A complex key where the path is sought is passed over.
        assert_eq!(
            json_at("? [a]\n: 1\nk: {v: 2}\n", &["k"]),
            [r#"{"v":2}"#.to_owned()]
        );
    }

    fn json_at(text: &str, path: &[&str]) -> Vec<String> {
        records(text, path)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .into_iter()
            .map(|(_, j)| j)
            .collect()
    }

    #[test]
    fn aliases_replay_their_node() {
        assert_eq!(
            json("a: &x {b: [1, &y two]}\nc: *x\nd: *y\n*y : 3\n"),
            [r#"{"a":{"b":[1,"two"]},"c":{"b":[1,"two"]},"d":"two","two":3}"#]
        );
        // Records through an alias, and an alias along the path.
        assert_eq!(json("- &r {a: 1}\n- *r\n"), [r#"{"a":1}"#, r#"{"a":1}"#]);
        assert_eq!(
            json_at("x: &m {items: [{a: 1}]}\ny: *m\n", &["y", "items"]),
            [r#"{"a":1}"#.to_owned()]
        );
        // Anchors redefined: the alias takes the latest.
        assert_eq!(
            json("a: &x 1\nb: &x 2\nc: *x\n"),
            [r#"{"a":1,"b":2,"c":2}"#]
        );
    }

    #[test]
    fn an_alias_bomb_stops_after_bounded_work() {
        let mut text = "a0: &a0 [x, x]\n".to_owned();
        for i in 1..40 {
            text.push_str(&format!("a{i}: &a{i} [*a{}, *a{}]\n", i - 1, i - 1));
        }
        let e = read(&text, &[], usize::MAX).expect_err("refused");
        assert_eq!(e.kind, DecodeErrorKind::TooLarge);
        assert!(e.message.contains("alias bomb"), "{}", e.message);
        // Also where it would only be skipped on the way along a path.
        text.push_str("data: {items: [{a: *a39}]}\n");
        let e = read(&text, &["data".into(), "items".into()], usize::MAX).expect_err("refused");
        assert_eq!(e.kind, DecodeErrorKind::TooLarge);
        // But not where nothing reads it.
        text.push_str("other: {items: [{a: 1}]}\n");
        let r = read(&text, &["other".into(), "items".into()], usize::MAX).expect("skipped");
        assert_eq!(r.json, br#"{"a":1}"#);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("a: {}{}\n", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let e = read(&deep, &[], usize::MAX).expect_err("too deep");
        assert_eq!(e.kind, DecodeErrorKind::TooLarge);
        assert!(e.message.contains("deeper than 128"), "{}", e.message);
        let fine = format!(
            "a: {}{}\n",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        assert!(read(&fine, &[], usize::MAX).is_ok());
        // Deep through aliases too.
        let half = MAX_DEPTH / 2 + 1;
        let text = format!(
            "a: &a {}{}\nb: {}*a{}\n",
            "[".repeat(half),
            "]".repeat(half),
            "[".repeat(half),
            "]".repeat(half)
        );
        let e = read(&text, &[], usize::MAX).expect_err("too deep");
        assert!(e.message.contains("deeper than"), "{}", e.message);
    }

    #[test]
    fn complex_keys_are_refused_where_they_would_name_a_field() {
        for (text, says, line) in [
            ("a: 1\n? [x, y]\n: 2\n", "a sequence used as a key", 2),
            ("a: 1\n{x: 1}: 2\n", "a mapping used as a key", 2),
            ("- k: &m {x: 1}\n- *m : 1\n", "a mapping used as a key", 2),
        ] {
            let e = records(text, &[]).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
            assert!(e.contains(&format!("line {line}")), "{text}: {e}");
        }
    }

    #[test]
    fn tags_of_collections_must_fit() {
        assert_eq!(
            json("a: !!map {b: 1}\nc: !!seq [1]\nd: !!set {x, y}\n"),
            [r#"{"a":{"b":1},"c":[1],"d":{"x":null,"y":null}}"#]
        );
        let e = records("a: !!str [1]\n", &[]).expect_err("mismatch");
        assert!(e.contains("a sequence tagged !!str"), "{e}");
        let e = records("a: !!int {}\n", &[]).expect_err("mismatch");
        assert!(e.contains("a mapping tagged !!int"), "{e}");
    }

    #[test]
    fn events_of_anchored_nodes_are_kept_compactly() {
        let mut out = Vec::new();
        let long = "é".repeat(100);
        let evs = [
            Ev::Map(Tag::Set),
            Ev::Scalar(&long, true, Tag::Other),
            Ev::Alias(300),
            Ev::Seq(Tag::None),
            Ev::End,
        ];
        for ev in evs {
            encode(ev, &mut out);
        }
        let mut at = 0;
        let mut back = Vec::new();
        while at < out.len() {
            let (ev, next) = decode(&out, at);
            back.push(format!("{ev:?}"));
            at = next;
        }
        let want: Vec<String> = evs.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(back, want);
    }
}
