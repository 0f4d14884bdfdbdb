//! The ESI parser: the subset Varnish implements (`<esi:include>`,
//! `<esi:remove>`, `<!--esi … -->`) plus `onerror`, as a push parser that
//! is fed the template's body chunk by chunk and hands back literal text
//! and includes in document order, so that the page can go out while the
//! template is still arriving (`proxy/esi.rs` assembles it).
//!
//! A leaf, knowing nothing of HTTP, so that it can be fuzzed on its own
//! (`fuzz/fuzz_targets/esi_parse.rs`). It never fails: a malformed ESI
//! element (no `>`, an include without `src`, an unknown `esi:` element)
//! is left out of the output and everything around it is kept, which is
//! what Varnish does with the ESI errors it logs. Memory is bounded: a
//! tag is looked for over at most [`MAX_TAG`] bytes.

use bytes::{Buf, Bytes, BytesMut};

/// The longest ESI tag looked for: a `<esi:` with no `>` within this many
/// bytes is a broken tag, and is dropped up to there.
pub const MAX_TAG: usize = 4096;

/// What a failed include does to the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Insert nothing and go on (the default, and `onerror="continue"`).
    Continue,
    /// `onerror="abort"`: the page stops there (its body ends in an error).
    Abort,
}

/// An `<esi:include>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Include {
    /// `src`, with `&amp;` decoded.
    pub src: String,
    /// `onerror`.
    pub onerror: OnError,
}

/// One piece of the processed document, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes that go out as they are.
    Text(Bytes),
    /// A fragment that goes here.
    Include(Include),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Ordinary text.
    Text,
    /// Inside `<esi:remove>`: everything up to `</esi:remove>` is dropped.
    Remove,
}

/// The push parser. Feed it chunks with [`Parser::feed`], then call
/// [`Parser::finish`]; each returns the events it completed.
pub struct Parser {
    pending: BytesMut,
    state: State,
    /// Inside `<!--esi`: the next `-->` ends it (and is dropped).
    in_comment: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

const REMOVE_END: &[u8] = b"</esi:remove>";

impl Parser {
    /// A parser at the start of a document.
    pub fn new() -> Parser {
        Parser {
            pending: BytesMut::new(),
            state: State::Text,
            in_comment: false,
        }
    }

    /// Parses `chunk`, appending what it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        self.pending.extend_from_slice(chunk);
        self.run(false, out);
    }

    /// The end of the document: what was held back (a partial tag) is
    /// decided now.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.run(true, out);
        // Whatever is still pending is a tag that never ended: dropped.
        self.pending.clear();
    }

    fn run(&mut self, end: bool, out: &mut Vec<Event>) {
        loop {
            let progressed = match self.state {
                State::Text => self.text(end, out),
                State::Remove => self.remove(end),
            };
            if !progressed || self.pending.is_empty() {
                return;
            }
        }
    }

    /// Text up to the next markup, then that markup; whether it moved on.
    /// A `<` or `-` that starts no markup stays in the text, so text goes
    /// out in as few pieces as the chunks allow.
    fn text(&mut self, end: bool, out: &mut Vec<Event>) -> bool {
        let mut from = 0;
        let (at, markup) = loop {
            let in_comment = self.in_comment;
            let next = self.pending[from..]
                .iter()
                .position(|&b| b == b'<' || (in_comment && b == b'-'));
            let Some(rel) = next else {
                let text = self.pending.split().freeze();
                push_text(out, text);
                return false;
            };
            let at = from + rel;
            match self.markup(&self.pending[at..], end) {
                Markup::Literal => from = at + 1,
                markup => break (at, markup),
            }
        };
        let text = self.pending.split_to(at).freeze();
        push_text(out, text);
        match markup {
            Markup::Literal => true,
            Markup::Wait => false,
            Markup::CommentEnd => {
                self.pending.advance(3);
                self.in_comment = false;
                true
            }
            Markup::CommentStart => {
                self.pending.advance(7);
                self.in_comment = true;
                true
            }
            Markup::TooLong => {
                // A tag that never ends: dropped up to the limit.
                self.pending.advance(MAX_TAG);
                true
            }
            Markup::Unterminated => {
                // At the end of the document: left out.
                self.pending.clear();
                false
            }
            Markup::Close(gt) => {
                // `</esi:include>` and the like: nothing to do. A stray
                // `</esi:remove>` is dropped too.
                self.pending.advance(gt + 1);
                true
            }
            Markup::Open(gt) => {
                let tag = self.pending.split_to(gt + 1).freeze();
                let (name, attrs) = split_tag(&tag[5..tag.len() - 1]);
                match name {
                    b"include" => {
                        if let Some(include) = include(attrs) {
                            out.push(Event::Include(include));
                        }
                    }
                    b"remove" if !attrs.ends_with(b"/") => self.state = State::Remove,
                    // `<esi:comment …/>` and unknown elements: left out.
                    _ => {}
                }
                true
            }
        }
    }

    /// What `buf` (starting at a `<`, or a `-` inside `<!--esi`) starts.
    fn markup(&self, buf: &[u8], end: bool) -> Markup {
        let wait_or_literal = if end { Markup::Literal } else { Markup::Wait };
        if buf[0] == b'-' {
            return match prefix_state(buf, b"-->") {
                Prefix::Match => Markup::CommentEnd,
                Prefix::Partial => wait_or_literal,
                Prefix::No => Markup::Literal,
            };
        }
        if !self.in_comment {
            match prefix_state(buf, b"<!--esi") {
                Prefix::Match => return Markup::CommentStart,
                Prefix::Partial if !end => return Markup::Wait,
                _ => {}
            }
        }
        let open = prefix_state(buf, b"<esi:");
        let close = prefix_state(buf, b"</esi:");
        if open == Prefix::No && close == Prefix::No {
            return Markup::Literal;
        }
        if open != Prefix::Match && close != Prefix::Match {
            // Only a partial match: wait for more, or it was plain text.
            return wait_or_literal;
        }
        match buf.iter().take(MAX_TAG).position(|&b| b == b'>') {
            Some(gt) if close == Prefix::Match => Markup::Close(gt),
            Some(gt) => Markup::Open(gt),
            None if buf.len() >= MAX_TAG => Markup::TooLong,
            None if end => Markup::Unterminated,
            None => Markup::Wait,
        }
    }

    /// Inside `<esi:remove>`: drops everything up to its end.
    fn remove(&mut self, end: bool) -> bool {
        match find(&self.pending, REMOVE_END) {
            Some(at) => {
                self.pending.advance(at + REMOVE_END.len());
                self.state = State::Text;
                true
            }
            None => {
                // Keep what may be the start of the end tag.
                let keep = if end {
                    0
                } else {
                    (REMOVE_END.len() - 1).min(self.pending.len())
                };
                let drop = self.pending.len() - keep;
                self.pending.advance(drop);
                false
            }
        }
    }
}

/// Parses a whole document at once.
pub fn parse(document: &[u8]) -> Vec<Event> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    parser.feed(document, &mut out);
    parser.finish(&mut out);
    out
}

fn push_text(out: &mut Vec<Event>, text: Bytes) {
    if !text.is_empty() {
        out.push(Event::Text(text));
    }
}

/// What a `<` (or a `-` inside `<!--esi`) turned out to start.
enum Markup {
    /// Nothing: it is text.
    Literal,
    /// Cannot tell before more of the document arrives.
    Wait,
    /// `-->` closing a `<!--esi`.
    CommentEnd,
    /// `<!--esi`.
    CommentStart,
    /// `<esi:…>`, its `>` at this offset.
    Open(usize),
    /// `</esi:…>`, its `>` at this offset.
    Close(usize),
    /// A `<esi:` with no `>` within [`MAX_TAG`] bytes.
    TooLong,
    /// A `<esi:` with no `>` before the end of the document.
    Unterminated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prefix {
    /// `buf` starts with the pattern (ASCII case-insensitive).
    Match,
    /// `buf` is shorter than the pattern and a prefix of it.
    Partial,
    No,
}

fn prefix_state(buf: &[u8], pattern: &[u8]) -> Prefix {
    let n = buf.len().min(pattern.len());
    if !buf[..n].eq_ignore_ascii_case(&pattern[..n]) {
        Prefix::No
    } else if n == pattern.len() {
        Prefix::Match
    } else {
        Prefix::Partial
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// An element's name and the rest of its tag (attributes, maybe a `/`).
fn split_tag(inner: &[u8]) -> (&[u8], &[u8]) {
    let end = inner
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'/')
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(end);
    (name, trim(rest))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// An include from its attributes; `None` without a usable `src`.
fn include(attrs: &[u8]) -> Option<Include> {
    let mut src = None;
    let mut onerror = OnError::Continue;
    for (name, value) in attributes(attrs) {
        if name.eq_ignore_ascii_case(b"src") {
            let value = std::str::from_utf8(value).ok()?;
            src = Some(value.replace("&amp;", "&"));
        } else if name.eq_ignore_ascii_case(b"onerror") && value.eq_ignore_ascii_case(b"abort") {
            onerror = OnError::Abort;
        }
    }
    let src = src.filter(|s| !s.is_empty())?;
    Some(Include { src, onerror })
}

/// `name="value"` / `name='value'` pairs; anything else is skipped.
fn attributes(mut s: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || loop {
        s = trim(s);
        let eq = s.iter().position(|&b| b == b'=')?;
        let name = trim(&s[..eq]);
        let name = match name
            .iter()
            .rposition(|b| b.is_ascii_whitespace() || *b == b'/')
        {
            Some(space) => &name[space + 1..],
            None => name,
        };
        let rest = trim(&s[eq + 1..]);
        let Some((&quote, body)) = rest.split_first() else {
            s = rest;
            continue;
        };
        if quote != b'"' && quote != b'\'' {
            // An unquoted value: up to the next space.
            let end = rest
                .iter()
                .position(|b| b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            s = &rest[end..];
            return Some((name, &rest[..end]));
        }
        let close = body.iter().position(|&b| b == quote)?;
        s = &body[close + 1..];
        return Some((name, &body[..close]));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events as bytes, an include as `[src]`.
    fn bytes(events: &[Event]) -> Vec<u8> {
        let mut s = Vec::new();
        for e in events {
            match e {
                Event::Text(t) => s.extend_from_slice(t),
                Event::Include(i) => s.extend_from_slice(format!("[{}]", i.src).as_bytes()),
            }
        }
        s
    }

    fn render(events: &[Event]) -> String {
        String::from_utf8_lossy(&bytes(events)).into_owned()
    }

    #[test]
    fn includes_removes_and_comments() {
        let doc = b"a<esi:include src=\"/x?a=1&amp;b=2\"/>b<esi:remove>gone<p></esi:remove>c<!--esi <esi:include src='/y' onerror=\"abort\"/>d-->e";
        let events = parse(doc);
        // The markers of `<!--esi` go, the space after them stays (as in Varnish).
        assert_eq!(render(&events), "a[/x?a=1&b=2]bc [/y]de");
        assert!(events.contains(&Event::Include(Include {
            src: "/y".into(),
            onerror: OnError::Abort
        })));
    }

    #[test]
    fn broken_tags_are_left_out() {
        assert_eq!(render(&parse(b"a<esi:include src=\"/x\"")), "a");
        assert_eq!(render(&parse(b"a<esi:include/>b")), "ab");
        assert_eq!(render(&parse(b"a<esi:bogus x='1'/>b")), "ab");
        assert_eq!(render(&parse(b"a<esi:remove>b")), "a");
        assert_eq!(render(&parse(b"a<es")), "a<es");
        assert_eq!(render(&parse(b"1 < 2 -->")), "1 < 2 -->");
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let doc: &[u8] = b"x<!--esi y--><esi:include src=\"/a\"/>z<esi:remove>r</esi:remove>w";
        let whole = render(&parse(doc));
        for split in 0..doc.len() {
            let mut parser = Parser::new();
            let mut out = Vec::new();
            parser.feed(&doc[..split], &mut out);
            parser.feed(&doc[split..], &mut out);
            parser.finish(&mut out);
            assert_eq!(render(&out), whole, "split at {split}");
        }
        assert_eq!(whole, "x y[/a]zw");
    }

    /// The fuzz target's property without the fuzzer: random and mutated
    /// documents, fed in random chunks, never panic, and the text that
    /// comes out is made only of bytes of the input, in order.
    #[test]
    fn never_panics_on_random_documents() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let atoms: &[&[u8]] = &[
            b"<esi:include src=\"/a\"/>",
            b"<esi:include",
            b" src='",
            b"<esi:remove>",
            b"</esi:remove>",
            b"<!--esi",
            b"-->",
            b"<",
            b">",
            b"-",
            b"/",
            b"\"",
            b"=",
            b"text",
            b"<esi:",
            b"</esi:",
            b"&amp;",
            b"\xff",
        ];
        for _ in 0..5000 {
            let mut doc = Vec::new();
            for _ in 0..rng.gen_range(0..40) {
                if rng.gen_bool(0.2) {
                    doc.push(rng.gen());
                } else {
                    doc.extend_from_slice(atoms[rng.gen_range(0..atoms.len())]);
                }
            }
            let mut parser = Parser::new();
            let mut out = Vec::new();
            let mut rest = &doc[..];
            while !rest.is_empty() {
                let n = rng.gen_range(1..=rest.len());
                parser.feed(&rest[..n], &mut out);
                rest = &rest[n..];
            }
            parser.finish(&mut out);
            let text: Vec<u8> = out
                .iter()
                .filter_map(|e| match e {
                    Event::Text(t) => Some(t.to_vec()),
                    Event::Include(_) => None,
                })
                .flatten()
                .collect();
            assert!(is_subsequence(&text, &doc), "{doc:?}");
            assert_eq!(bytes(&out), bytes(&parse(&doc)), "{doc:?}");
        }
    }

    fn is_subsequence(small: &[u8], big: &[u8]) -> bool {
        let mut big = big.iter();
        small.iter().all(|b| big.any(|c| c == b))
    }
}
