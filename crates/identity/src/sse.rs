//! A small incremental Server-Sent Events parser: the subset of the WHATWG `EventSource`
//! stream format that gatepass's revocation feed uses.
//!
//! Bytes go in as they arrive, in chunks split anywhere (inside a line, inside a `\r\n`, inside
//! a UTF-8 sequence); complete events come out. Fields: `id` and `data` (several `data` lines
//! are joined with `\n`); `event`, `retry` and unknown fields are ignored; a line starting with
//! `:` is a comment (a keep-alive); a blank line dispatches. Lines end with `\r\n`, `\n` or a
//! lone `\r`. Line and event sizes are bounded, so a hostile stream cannot grow memory.

/// The default bound on one line and on one event's joined data, in bytes.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id` field of this event's block, if it had one (the last one wins).
    pub id: Option<String>,
    /// The `data` lines, joined with `\n`.
    pub data: String,
}

/// Why a stream was refused. After an error the parser is reset; the stream it was reading
/// should be abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line exceeded the bound.
    #[error("SSE line longer than {0} bytes")]
    LineTooLong(usize),
    /// One event's joined data exceeded the bound.
    #[error("SSE event larger than {0} bytes")]
    EventTooLarge(usize),
}

/// Incremental SSE parser; see the module docs.
#[derive(Debug, Clone)]
pub struct SseParser {
    max: usize,
    /// The incomplete line carried over from the previous chunk.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` first in the next one belongs to it.
    skip_lf: bool,
    /// No line was completed yet (a UTF-8 BOM may start the stream).
    first_line: bool,
    data: String,
    /// `data` saw at least one `data` field (it may be empty: `data:` alone is an event).
    has_data: bool,
    block_id: Option<String>,
    last_id: Option<String>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser bounding lines and events at [`DEFAULT_MAX_LINE`].
    pub fn new() -> Self {
        Self::with_max_line(DEFAULT_MAX_LINE)
    }

    /// A parser bounding each line, and each event's joined data, at `max` bytes.
    pub fn with_max_line(max: usize) -> Self {
        SseParser {
            max,
            line: Vec::new(),
            skip_lf: false,
            first_line: true,
            data: String::new(),
            has_data: false,
            block_id: None,
            last_id: None,
        }
    }

    /// The last event id of the stream (the spec's "last event ID"): the value of the most
    /// recent `id` field of a dispatched block, also of a block without data. `Some("")`
    /// means the stream reset it.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Feeds `bytes`, appending every event they complete to `out`. Events completed before
    /// an error are still appended.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.skip_lf {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
                self.skip_lf = false;
            } else if !bytes.is_empty() {
                self.skip_lf = false;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = bytes.split_at(end);
            let result = if self.line.is_empty() {
                self.check_len(head.len())
                    .and_then(|()| self.line_done(head, out))
            } else {
                self.check_len(self.line.len() + head.len()).and_then(|()| {
                    let mut line = std::mem::take(&mut self.line);
                    line.extend_from_slice(head);
                    let r = self.line_done(&line, out);
                    // Keep the allocation for the next carried-over line.
                    line.clear();
                    self.line = line;
                    r
                })
            };
            if let Err(e) = result {
                self.reset();
                return Err(e);
            }
            bytes = match tail {
                [b'\r', b'\n', rest @ ..] => rest,
                [b'\r'] => {
                    self.skip_lf = true;
                    &[]
                }
                [_, rest @ ..] => rest,
                [] => &[],
            };
        }
        if let Err(e) = self.check_len(self.line.len() + bytes.len()) {
            self.reset();
            return Err(e);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<(), SseError> {
        if len > self.max {
            Err(SseError::LineTooLong(self.max))
        } else {
            Ok(())
        }
    }

    fn reset(&mut self) {
        *self = Self::with_max_line(self.max);
    }

    /// Interprets one complete line (without its line end).
    fn line_done(&mut self, raw: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        // Decoded per complete line, so a multi-byte character split across chunks is whole;
        // invalid UTF-8 is replaced, as the spec's decoder does.
        let text = String::from_utf8_lossy(raw);
        let mut line: &str = &text;
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    return Err(SseError::EventTooLarge(self.max));
                }
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            // The spec ignores an id containing NUL.
            "id" if !value.contains('\0') => self.block_id = Some(value.to_owned()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let id = self.block_id.take();
        if id.is_some() {
            self.last_id.clone_from(&id);
        }
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the `\n` after the last data line
        out.push(SseEvent { id, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(input, &mut out).unwrap();
        out
    }

    fn ev(id: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn fields_comments_and_dispatch() {
        let input = b": keep-alive\n\nid: 1\nevent: revoke\ndata: a\ndata:b\ndata:  c\n\n\
                      data\n\nid:2\nretry: 10\nunknown: x\n\nid: 3\n";
        assert_eq!(parse(input), vec![ev(Some("1"), "a\nb\n c"), ev(None, "")]);
        let mut p = SseParser::new();
        p.feed(input, &mut Vec::new()).unwrap();
        // The id-only block moved the last event id; the undispatched `id: 3` did not.
        assert_eq!(p.last_event_id(), Some("2"));
    }

    #[test]
    fn crlf_lone_cr_and_bom() {
        let input = "\u{feff}id: 1\r\ndata: x\r\n\r\nid: 2\rdata: y\r\r".as_bytes();
        assert_eq!(parse(input), vec![ev(Some("1"), "x"), ev(Some("2"), "y")]);
    }

    #[test]
    fn chunk_boundaries_inside_crlf_and_utf8() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for chunk in [&b"data: caf"[..], b"\xc3", b"\xa9\r", b"\n\r", b"\n"] {
            p.feed(chunk, &mut out).unwrap();
        }
        assert_eq!(out, vec![ev(None, "café")]);
    }

    #[test]
    fn empty_id_resets_and_nul_id_is_ignored() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"id: 7\ndata: a\n\nid: x\0y\ndata: b\n\n", &mut out)
            .unwrap();
        assert_eq!(out, vec![ev(Some("7"), "a"), ev(None, "b")]);
        assert_eq!(p.last_event_id(), Some("7"));
        p.feed(b"id\n\n", &mut out).unwrap();
        assert_eq!(p.last_event_id(), Some(""));
    }

    #[test]
    fn over_long_line_is_an_error_even_split_across_chunks() {
        let mut p = SseParser::with_max_line(8);
        let mut out = Vec::new();
        p.feed(b"data: 12", &mut out).unwrap();
        assert_eq!(p.feed(b"345", &mut out), Err(SseError::LineTooLong(8)));
        // Reset: a fresh stream parses.
        p.feed(b"data: 1\n\n", &mut out).unwrap();
        assert_eq!(out, vec![ev(None, "1")]);
        // In a single chunk, with its line end present.
        assert_eq!(
            SseParser::with_max_line(8).feed(b"data: 123456789\n\n", &mut out),
            Err(SseError::LineTooLong(8))
        );
        // Exactly at the bound is fine.
        let mut p = SseParser::with_max_line(8);
        p.feed(b"data: 12\n\n", &mut out).unwrap();
        assert_eq!(out.last(), Some(&ev(None, "12")));
    }

    #[test]
    fn many_short_data_lines_are_bounded() {
        let mut p = SseParser::with_max_line(16);
        let mut out = Vec::new();
        let r = p.feed(&b"data: abcd\n".repeat(10), &mut out);
        assert_eq!(r, Err(SseError::EventTooLarge(16)));
        assert!(out.is_empty());
    }

    #[test]
    fn events_before_an_error_are_kept() {
        let mut p = SseParser::with_max_line(8);
        let mut out = Vec::new();
        let r = p.feed(b"data: a\n\ndata: too long\n", &mut out);
        assert_eq!(r, Err(SseError::LineTooLong(8)));
        assert_eq!(out, vec![ev(None, "a")]);
    }

    /// Bytes drawn mostly from the characters that matter to the framing.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\r"[..]),
            Just(&b":"[..]),
            Just(&b" "[..]),
            Just(&b"data"[..]),
            Just(&b"id"[..]),
            Just(&b"event"[..]),
            Just("é".as_bytes()),
            Just(&b"x"[..]),
        ];
        proptest::collection::vec(piece, 0..64).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn splitting_anywhere_gives_the_same_events(
            input in stream(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut whole = SseParser::new();
            let mut expected = Vec::new();
            whole.feed(&input, &mut expected).unwrap();

            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            at.sort_unstable();
            let mut split = SseParser::new();
            let mut got = Vec::new();
            let mut start = 0;
            for cut in at.into_iter().chain([input.len()]) {
                split.feed(&input[start..cut], &mut got).unwrap();
                start = cut;
            }
            prop_assert_eq!(got, expected);
            prop_assert_eq!(split.last_event_id(), whole.last_event_id());
        }
    }
}
