//! A small reader for protobuf text format, enough for TF Serving's models.config and
//! batching_parameters.txt: fields `name: value` or `name { … }` (the colon is optional before a
//! brace), strings in single or double quotes, numbers, identifiers (enum values, true/false),
//! `#` comments. Every field keeps its line and column for error messages.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    /// A number or bare identifier, as written.
    Scalar(String),
    Message(Message),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub value: Value,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write!(f, "{s:?}"),
            Value::Scalar(s) => f.write_str(s),
            Value::Message(_) => f.write_str("{ … }"),
        }
    }
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
    col: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Colon,
    Open,
    Close,
    Eof,
}

impl<'a> Lexer<'a> {
    fn err(&self, line: usize, col: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line,
            col,
            message: message.into(),
        }
    }

    fn bump(&mut self) -> Option<u8> {
        let c = *self.src.get(self.pos)?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn skip_space(&mut self) {
        while let Some(&c) = self.src.get(self.pos) {
            if c == b'#' {
                while let Some(&c) = self.src.get(self.pos) {
                    if c == b'\n' {
                        break;
                    }
                    self.bump();
                }
            } else if c.is_ascii_whitespace() || c == b',' || c == b';' {
                self.bump();
            } else {
                break;
            }
        }
    }

    /// The next token with the position where it starts.
    fn next(&mut self) -> Result<(Token, usize, usize), ParseError> {
        self.skip_space();
        let (line, col) = (self.line, self.col);
        let Some(&c) = self.src.get(self.pos) else {
            return Ok((Token::Eof, line, col));
        };
        let tok = match c {
            b':' => {
                self.bump();
                Token::Colon
            }
            b'{' | b'<' => {
                self.bump();
                Token::Open
            }
            b'}' | b'>' => {
                self.bump();
                Token::Close
            }
            b'"' | b'\'' => {
                self.bump();
                let mut out = Vec::new();
                loop {
                    match self.bump() {
                        None | Some(b'\n') => {
                            return Err(self.err(line, col, "unterminated string"));
                        }
                        Some(b'\\') => match self.bump() {
                            Some(b'n') => out.push(b'\n'),
                            Some(b't') => out.push(b'\t'),
                            Some(other) => out.push(other),
                            None => return Err(self.err(line, col, "unterminated string")),
                        },
                        Some(q) if q == c => break,
                        Some(other) => out.push(other),
                    }
                }
                Token::Str(String::from_utf8_lossy(&out).into_owned())
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'+' || c == b'.' => {
                let start = self.pos;
                while let Some(&c) = self.src.get(self.pos) {
                    if c.is_ascii_alphanumeric() || b"_-+.".contains(&c) {
                        self.bump();
                    } else {
                        break;
                    }
                }
                Token::Ident(String::from_utf8_lossy(&self.src[start..self.pos]).into_owned())
            }
            other => {
                return Err(self.err(
                    line,
                    col,
                    format!("unexpected character `{}`", other as char),
                ));
            }
        };
        Ok((tok, line, col))
    }
}

/// How deeply messages may nest. TF Serving's files nest four levels; protobuf's own parsers
/// stop at 100, which we copy so a file of 100k `{` is an error, not a stack overflow.
pub const MAX_DEPTH: usize = 100;

/// Parses a whole text-format message.
pub fn parse(src: &str) -> Result<Message, ParseError> {
    let mut lx = Lexer {
        src: src.as_bytes(),
        pos: 0,
        line: 1,
        col: 1,
    };
    let msg = parse_fields(&mut lx, None, 0)?;
    Ok(msg)
}

fn parse_fields(
    lx: &mut Lexer<'_>,
    open: Option<(usize, usize)>,
    depth: usize,
) -> Result<Message, ParseError> {
    if let Some((l, c)) = open
        && depth > MAX_DEPTH
    {
        return Err(lx.err(
            l,
            c,
            format!("messages nest more than {MAX_DEPTH} levels deep here"),
        ));
    }
    let mut msg = Message::default();
    loop {
        let (tok, line, col) = lx.next()?;
        let name = match tok {
            Token::Eof => {
                return match open {
                    None => Ok(msg),
                    Some((l, c)) => Err(lx.err(l, c, "this `{` is never closed")),
                };
            }
            Token::Close => {
                return match open {
                    Some(_) => Ok(msg),
                    None => Err(lx.err(line, col, "unexpected `}`")),
                };
            }
            Token::Ident(name) => name,
            other => {
                return Err(lx.err(
                    line,
                    col,
                    format!("expected a field name, found {}", describe(&other)),
                ));
            }
        };
        let (mut tok, mut vline, mut vcol) = lx.next()?;
        let had_colon = tok == Token::Colon;
        if had_colon {
            (tok, vline, vcol) = lx.next()?;
        }
        let value = match tok {
            Token::Open => Value::Message(parse_fields(lx, Some((vline, vcol)), depth + 1)?),
            Token::Str(s) if had_colon => Value::String(s),
            Token::Ident(s) if had_colon => Value::Scalar(s),
            other => {
                let expected = if had_colon { "a value" } else { "`:` or `{`" };
                return Err(lx.err(
                    vline,
                    vcol,
                    format!(
                        "after `{name}` expected {expected}, found {}",
                        describe(&other)
                    ),
                ));
            }
        };
        msg.fields.push(Field {
            name,
            value,
            line,
            col,
        });
    }
}

fn describe(t: &Token) -> String {
    match t {
        Token::Ident(s) => format!("`{s}`"),
        Token::Str(s) => format!("the string {s:?}"),
        Token::Colon => "`:`".into(),
        Token::Open => "`{`".into(),
        Token::Close => "`}`".into(),
        Token::Eof => "the end of the file".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_messages_strings_and_scalars_with_positions() {
        let m = parse(
            "model_config_list {\n  config {\n    name: 'regression'\n    base_path: \"/models/r\"\n    model_platform: \"tensorflow\"\n  }\n}\n",
        )
        .unwrap();
        let list = &m.fields[0];
        assert_eq!(list.name, "model_config_list");
        let Value::Message(list) = &list.value else {
            panic!()
        };
        let Value::Message(config) = &list.fields[0].value else {
            panic!()
        };
        assert_eq!(config.fields[0].value, Value::String("regression".into()));
        assert_eq!((config.fields[1].line, config.fields[1].col), (4, 5));
    }

    #[test]
    fn comments_and_wrapped_scalars_parse() {
        let m = parse("# tuned\nmax_batch_size { value: 8000 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n").unwrap();
        assert_eq!(m.fields.len(), 3);
        let Value::Message(w) = &m.fields[0].value else {
            panic!()
        };
        assert_eq!(w.fields[0].value, Value::Scalar("8000".into()));
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse("config {\n  name 'x'\n}\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 8));
        assert!(e.message.contains("expected `:` or `{`"), "{}", e.message);
        let e = parse("config {\n name: 'x'\n").unwrap_err();
        assert_eq!((e.line, e.col), (1, 8));
        let e = parse("name: 'x\n").unwrap_err();
        assert!(e.message.contains("unterminated"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "a {".repeat(100_000);
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nest more than 100"), "{}", e.message);
        assert_eq!(e.line, 1);
        let ok = format!("{}{}", "a {".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let too_deep = format!(
            "{}{}",
            "a <".repeat(MAX_DEPTH + 1),
            ">".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(&too_deep).is_err());
    }
}
