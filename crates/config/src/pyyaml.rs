//! What PyYAML (and so Synapse) accepts that a YAML 1.2 parser refuses.
//!
//! PyYAML lets a quoted scalar (`"..."` or `'...'`) continue on lines that are not indented
//! beyond the key it belongs to, even at column 0:
//!
//! ```yaml
//! email:
//!   notif_from: "Your %(app)s homeserver
//! <noreply@example.org>"
//! ```
//!
//! YAML 1.2 requires those continuation lines to be indented, and serde-saphyr follows it. The
//! leading white space of a quoted scalar's continuation line is never part of the value (the
//! line break folds to one space, or to nothing after an escaped line break), so indenting such
//! lines changes nothing but their validity. [`indent_quoted_continuations`] does that, and only
//! that: it scans the text as YAML (comments, block scalars, quoted and plain scalars) so that a
//! quote character inside a comment, a plain scalar or a block scalar is never taken for the
//! start of a quoted scalar.

/// Returns the text with every under-indented continuation line of a quoted scalar indented one
/// column beyond the line its scalar starts on, or `None` when there is no such line.
pub(crate) fn indent_quoted_continuations(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut changed = false;
    let mut state = State::Normal;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = line.trim_end_matches(['\n', '\r']);
        let mut line = line;
        let mut padded;
        match state {
            State::BlockScalar { parent_indent } => {
                if content.trim().is_empty() || indent > parent_indent {
                    out.push_str(line);
                    continue;
                }
                state = State::Normal;
            }
            State::Quoted { required_indent, .. } => {
                if !content.trim().is_empty() && indent < required_indent {
                    padded = " ".repeat(required_indent - indent);
                    padded.push_str(line);
                    line = &padded;
                    changed = true;
                }
            }
            State::Normal => {}
        }
        state = scan_line(line, state);
        out.push_str(line);
    }
    changed.then_some(out)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Normal,
    /// Inside a quoted scalar; continuation lines need at least `required_indent` spaces.
    Quoted {
        double: bool,
        required_indent: usize,
    },
    /// Inside a block scalar (`|` or `>`): lines indented beyond `parent_indent` are its content.
    BlockScalar {
        parent_indent: usize,
    },
}

/// Scans one line from `state` and returns the state at its end.
fn scan_line(line: &str, mut state: State) -> State {
    let line_indent = line.len() - line.trim_start_matches(' ').len();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match state {
            State::Quoted { double: true, .. } => match byte {
                b'\\' => i += 1,
                b'"' => state = State::Normal,
                _ => {}
            },
            State::Quoted { double: false, .. } => {
                if byte == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        state = State::Normal;
                    }
                }
            }
            // The caller copies a block scalar's lines without scanning them.
            State::BlockScalar { .. } => return state,
            State::Normal => {
                let at_start = token_start(&line[..i]);
                match byte {
                    b'#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t') => return state,
                    b'"' | b'\'' if at_start => {
                        state = State::Quoted { double: byte == b'"', required_indent: line_indent + 1 };
                    }
                    b'|' | b'>' if at_start && block_scalar_header(&line[i + 1..]) => {
                        return State::BlockScalar { parent_indent: line_indent };
                    }
                    _ if at_start && !byte.is_ascii_whitespace() && !b"[]{},-?:".contains(&byte) => {
                        // A plain scalar: skip to where a token may start again (`: `, ` #`,
                        // or a flow indicator).
                        i = plain_scalar_end(bytes, i);
                        continue;
                    }
                    _ => {}
                }
            }
        }
        i += 1;
    }
    state
}

/// Whether a token may start after `before` (the part of the line already read).
fn token_start(before: &str) -> bool {
    let trimmed = before.trim_end_matches([' ', '\t']);
    if trimmed.is_empty() {
        return true;
    }
    let spaced = trimmed.len() < before.len();
    match trimmed.as_bytes()[trimmed.len() - 1] {
        b'[' | b'{' | b',' => true,
        b':' | b'-' | b'?' => spaced,
        _ => false,
    }
}

/// Whether the rest of a line after `|` or `>` is a block scalar header (indicators, then
/// nothing or a comment).
fn block_scalar_header(rest: &str) -> bool {
    let rest = rest.trim_end_matches(['\n', '\r']);
    let indicators = rest.trim_start_matches(|c: char| c == '+' || c == '-' || c.is_ascii_digit());
    let trimmed = indicators.trim_start_matches([' ', '\t']);
    trimmed.is_empty() || (trimmed.starts_with('#') && trimmed.len() < indicators.len())
}

/// The index just after a plain scalar starting at `start`: before `: `, ` #`, or (a
/// conservative choice) a flow indicator `,]}`.
fn plain_scalar_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b':' if bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace()) => return i,
            b'#' if i > start && matches!(bytes[i - 1], b' ' | b'\t') => return i,
            b',' | b']' | b'}' => return i,
            b'\n' | b'\r' => return i,
            _ => i += 1,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::indent_quoted_continuations as fix;

    #[test]
    fn continuation_lines_of_quoted_scalars_are_indented() {
        let text =
            "email:\n  notif_from: \"Your %(app)s homeserver\n<noreply@example.org>\"\n  app_name: x\n";
        assert_eq!(
            fix(text).as_deref(),
            Some(
                "email:\n  notif_from: \"Your %(app)s homeserver\n   <noreply@example.org>\"\n  app_name: x\n"
            )
        );
        let single = "a: 'it''s\nmore'\nb: c\n";
        assert_eq!(fix(single).as_deref(), Some("a: 'it''s\n more'\nb: c\n"));
        let escaped = "a: \"one \\\" two\nthree\"\n";
        assert_eq!(fix(escaped).as_deref(), Some("a: \"one \\\" two\n three\"\n"));
        let in_list = "- \"one\n\ntwo\"\n";
        assert_eq!(fix(in_list).as_deref(), Some("- \"one\n\n two\"\n"));
    }

    #[test]
    fn quotes_outside_quoted_scalars_are_left_alone() {
        for text in [
            "a: \"one line\"\nb: 'two'\n",
            "# a \"comment\nb: 1\n",
            "a: it's plain\nb: x\n",
            "a: x # it's a comment\nb: y\n",
            "a: |\n  \"quoted\n  in a block\nb: 'x'\n",
            "a: >-\n  it's\nb: c\n",
            "a: [\"x\", 'y']\nb: {c: \"d\"}\n",
            "a: \"properly\n  indented\"\n",
        ] {
            assert_eq!(fix(text), None, "{text:?}");
        }
    }
}
