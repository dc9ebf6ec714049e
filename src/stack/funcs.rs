//! The functions a stack may call (a subset of Terraform's, same names and behaviour).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::value::{Value, format_number};

pub const NAMES: &[&str] = &[
    "abspath",
    "basename",
    "concat",
    "dirname",
    "file",
    "format",
    "join",
    "jsonencode",
    "keys",
    "length",
    "lower",
    "max",
    "merge",
    "min",
    "replace",
    "tolist",
    "tomap",
    "tonumber",
    "toset",
    "tostring",
    "trimspace",
    "upper",
    "values",
];

#[derive(Debug)]
pub struct FuncError {
    /// The argument at fault, if one is.
    pub arg: Option<usize>,
    pub message: String,
    pub unknown: bool,
}

fn err(arg: Option<usize>, message: impl Into<String>) -> FuncError {
    FuncError {
        arg,
        message: message.into(),
        unknown: false,
    }
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<(), FuncError> {
    if args.len() == n {
        Ok(())
    } else {
        Err(err(
            None,
            format!("found {} argument(s) to {name}(), expected {n}", args.len()),
        ))
    }
}

fn string_arg(name: &str, args: &[Value], i: usize) -> Result<String, FuncError> {
    match &args[i] {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(args[i].to_template_string().unwrap_or_default()),
        other => Err(err(
            Some(i),
            format!(
                "found {} as argument {} of {name}(), expected a string",
                other.describe(),
                i + 1
            ),
        )),
    }
}

/// Resolves a path the way the stack does: relative to the directory of the file holding it.
pub fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        normalize(&dir.join(p))
    }
}

/// Removes `.` and `..` components without touching the file system.
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

pub fn call(name: &str, args: &[Value], dir: &Path) -> Result<Value, FuncError> {
    match name {
        "file" => {
            arity(name, args, 1)?;
            let p = string_arg(name, args, 0)?;
            let path = resolve(dir, &p);
            match std::fs::read(&path) {
                Ok(bytes) => String::from_utf8(bytes).map(Value::String).map_err(|_| {
                    err(
                        Some(0),
                        format!(
                            "found {} which is not UTF-8 text, expected a text file",
                            path.display()
                        ),
                    )
                }),
                Err(e) => Err(err(
                    Some(0),
                    format!(
                        "found file({p:?}) but {} cannot be read ({}), expected an existing file (relative paths resolve against the stack file's directory)",
                        path.display(),
                        io_reason(&e)
                    ),
                )),
            }
        }
        "abspath" => {
            arity(name, args, 1)?;
            Ok(Value::String(
                resolve(dir, &string_arg(name, args, 0)?)
                    .display()
                    .to_string(),
            ))
        }
        "basename" => {
            arity(name, args, 1)?;
            let s = string_arg(name, args, 0)?;
            Ok(Value::String(
                Path::new(&s)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ))
        }
        "dirname" => {
            arity(name, args, 1)?;
            let s = string_arg(name, args, 0)?;
            let d = Path::new(&s)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            Ok(Value::String(if d.is_empty() { ".".into() } else { d }))
        }
        "lower" => {
            arity(name, args, 1)?;
            Ok(Value::String(string_arg(name, args, 0)?.to_lowercase()))
        }
        "upper" => {
            arity(name, args, 1)?;
            Ok(Value::String(string_arg(name, args, 0)?.to_uppercase()))
        }
        "trimspace" => {
            arity(name, args, 1)?;
            Ok(Value::String(string_arg(name, args, 0)?.trim().to_string()))
        }
        "replace" => {
            arity(name, args, 3)?;
            let s = string_arg(name, args, 0)?;
            Ok(Value::String(s.replace(
                &string_arg(name, args, 1)?,
                &string_arg(name, args, 2)?,
            )))
        }
        "tostring" => {
            arity(name, args, 1)?;
            match &args[0] {
                Value::Null => Ok(Value::Null),
                v => v.to_template_string().map(Value::String).ok_or_else(|| {
                    err(
                        Some(0),
                        format!(
                            "found {}, expected a string, number or bool to convert",
                            v.describe()
                        ),
                    )
                }),
            }
        }
        "tonumber" => {
            arity(name, args, 1)?;
            match &args[0] {
                Value::Number(n) => Ok(Value::Number(*n)),
                Value::Null => Ok(Value::Null),
                Value::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .map(Value::Number)
                    .ok_or_else(|| {
                        err(
                            Some(0),
                            format!("found the string {s:?}, expected a string holding a number"),
                        )
                    }),
                v => Err(err(
                    Some(0),
                    format!(
                        "found {}, expected a number or a numeric string",
                        v.describe()
                    ),
                )),
            }
        }
        "join" => {
            arity(name, args, 2)?;
            let sep = string_arg(name, args, 0)?;
            let Value::List(items) = &args[1] else {
                return Err(err(
                    Some(1),
                    format!("found {}, expected a list of strings", args[1].describe()),
                ));
            };
            let parts = items
                .iter()
                .map(|v| {
                    v.to_template_string().ok_or_else(|| {
                        err(
                            Some(1),
                            format!("found {} in the list, expected strings", v.describe()),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::String(parts.join(&sep)))
        }
        "min" | "max" => {
            if args.is_empty() {
                return Err(err(
                    None,
                    format!("found no arguments to {name}(), expected at least one number"),
                ));
            }
            let mut best: Option<f64> = None;
            for (i, a) in args.iter().enumerate() {
                let Value::Number(n) = a else {
                    return Err(err(
                        Some(i),
                        format!("found {}, expected a number", a.describe()),
                    ));
                };
                best = Some(match best {
                    None => *n,
                    Some(b) if name == "min" => b.min(*n),
                    Some(b) => b.max(*n),
                });
            }
            Ok(Value::Number(best.unwrap_or_default()))
        }
        "length" => {
            arity(name, args, 1)?;
            match &args[0] {
                Value::List(l) => Ok(Value::Number(l.len() as f64)),
                Value::Map(m) => Ok(Value::Number(m.len() as f64)),
                Value::String(s) => Ok(Value::Number(s.chars().count() as f64)),
                v => Err(err(
                    Some(0),
                    format!("found {}, expected a list, map or string", v.describe()),
                )),
            }
        }
        "keys" | "values" => {
            arity(name, args, 1)?;
            let Value::Map(m) = &args[0] else {
                return Err(err(
                    Some(0),
                    format!("found {}, expected a map", args[0].describe()),
                ));
            };
            Ok(Value::List(if name == "keys" {
                m.keys().cloned().map(Value::String).collect()
            } else {
                m.values().cloned().collect()
            }))
        }
        "concat" => {
            let mut out = Vec::new();
            for (i, a) in args.iter().enumerate() {
                let Value::List(l) = a else {
                    return Err(err(
                        Some(i),
                        format!("found {}, expected a list", a.describe()),
                    ));
                };
                out.extend(l.iter().cloned());
            }
            Ok(Value::List(out))
        }
        "merge" => {
            let mut out = BTreeMap::new();
            for (i, a) in args.iter().enumerate() {
                match a {
                    Value::Map(m) => out.extend(m.clone()),
                    Value::Null => {}
                    other => {
                        return Err(err(
                            Some(i),
                            format!("found {}, expected a map", other.describe()),
                        ));
                    }
                }
            }
            Ok(Value::Map(out))
        }
        "toset" => {
            arity(name, args, 1)?;
            let Value::List(l) = &args[0] else {
                return Err(err(
                    Some(0),
                    format!("found {}, expected a list", args[0].describe()),
                ));
            };
            let mut out: Vec<Value> = Vec::new();
            for v in l {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(Value::List(out))
        }
        "tolist" => {
            arity(name, args, 1)?;
            match &args[0] {
                Value::List(_) => Ok(args[0].clone()),
                v => Err(err(
                    Some(0),
                    format!("found {}, expected a list or set", v.describe()),
                )),
            }
        }
        "tomap" => {
            arity(name, args, 1)?;
            match &args[0] {
                Value::Map(_) => Ok(args[0].clone()),
                v => Err(err(
                    Some(0),
                    format!("found {}, expected a map or object", v.describe()),
                )),
            }
        }
        "jsonencode" => {
            arity(name, args, 1)?;
            Ok(Value::String(args[0].to_json().to_string()))
        }
        "format" => {
            if args.is_empty() {
                return Err(err(
                    None,
                    "found format() with no arguments, expected a format string and its values",
                ));
            }
            let spec = string_arg(name, args, 0)?;
            format(&spec, &args[1..]).map(Value::String)
        }
        _ => Err(FuncError {
            arg: None,
            message: format!(
                "found a call to the unknown function {name}(), expected one of: {}",
                NAMES.join(", ")
            ),
            unknown: true,
        }),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The widest width or precision `format` accepts: a stack needs a few digits, and Rust's
/// formatter panics beyond u16::MAX (a padded string would also take memory without bound).
const MAX_FORMAT_WIDTH: usize = 1000;

/// A width or precision of `format`, refused (not silently zeroed) when too large.
fn format_width(digits: &str, what: &str) -> Result<usize, FuncError> {
    digits
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= MAX_FORMAT_WIDTH)
        .ok_or_else(|| {
            err(
                Some(0),
                format!(
                    "found the {what} {digits} in the format string, expected at most {MAX_FORMAT_WIDTH}"
                ),
            )
        })
}

/// Terraform's `format`: `%s %d %f %v %q %t %%` with optional width and precision.
fn format(spec: &str, args: &[Value]) -> Result<String, FuncError> {
    let mut out = String::new();
    let mut chars = spec.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            out.push('%');
            continue;
        }
        let mut left = false;
        let mut zero = false;
        while let Some(&f) = chars.peek() {
            match f {
                '-' => left = true,
                '0' => zero = true,
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut precision: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            precision = Some(if p.is_empty() {
                0
            } else {
                format_width(&p, "precision")?
            });
        }
        let Some(verb) = chars.next() else {
            return Err(err(
                Some(0),
                "found a `%` at the end of the format string, expected a verb such as %s or %d",
            ));
        };
        let Some(arg) = args.get(next) else {
            return Err(err(
                None,
                format!(
                    "found more verbs than values in the format string, expected a value for verb {}",
                    next + 1
                ),
            ));
        };
        let argi = Some(next + 1);
        next += 1;
        let s = match verb {
            's' | 'v' => arg.to_template_string().map(|s| match precision {
                Some(p) => s.chars().take(p).collect(),
                None => s,
            }),
            'q' => arg.to_template_string().map(|s| format!("{s:?}")),
            't' => match arg {
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            },
            'd' => match arg {
                Value::Number(n) if n.fract() == 0.0 => Some(format_number(*n)),
                _ => None,
            },
            'f' => match arg {
                Value::Number(n) => Some(format!("{:.*}", precision.unwrap_or(6), n)),
                _ => None,
            },
            other => {
                return Err(err(
                    Some(0),
                    format!("found the verb %{other}, expected one of %s %d %f %v %q %t %%"),
                ));
            }
        };
        let Some(s) = s else {
            return Err(err(
                argi,
                format!(
                    "found {} for %{verb}, expected a value that verb formats",
                    arg.describe()
                ),
            ));
        };
        let w: usize = if width.is_empty() {
            0
        } else {
            format_width(&width, "width")?
        };
        let len = s.chars().count();
        if len >= w {
            out.push_str(&s);
        } else if left {
            out.push_str(&s);
            out.push_str(&" ".repeat(w - len));
        } else {
            out.push_str(&(if zero { "0" } else { " " }).repeat(w - len));
            out.push_str(&s);
        }
    }
    if next < args.len() {
        return Err(err(
            None,
            format!(
                "found {} value(s) for {} verb(s) in the format string, expected one value per verb",
                args.len(),
                next
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    #[test]
    fn format_supports_terraform_verbs() {
        let v = call(
            "format",
            &[
                s("%s-%03d %.2f %q %%"),
                s("a"),
                Value::Number(7.0),
                Value::Number(1.5),
                s("x"),
            ],
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(v, s("a-007 1.50 \"x\" %"));
        assert!(call("format", &[s("%d"), s("x")], Path::new("/")).is_err());
        assert!(call("format", &[s("%s %s"), s("x")], Path::new("/")).is_err());
    }

    #[test]
    fn format_refuses_absurd_widths_and_precisions() {
        let one = Value::Number(1.0);
        for spec in [
            "%.70000f",
            "%.99999999999999999999999f",
            "%70000d",
            "%99999999999999999999s",
        ] {
            let e = call("format", &[s(spec), one.clone()], Path::new("/")).unwrap_err();
            assert!(
                e.message.contains("expected at most 1000"),
                "{spec}: {}",
                e.message
            );
        }
        assert_eq!(
            call("format", &[s("%.1000f"), one.clone()], Path::new("/"))
                .unwrap()
                .to_template_string()
                .map(|t| t.len()),
            Some(1002)
        );
    }

    #[test]
    fn path_functions_resolve_against_the_stack_directory() {
        assert_eq!(
            call("abspath", &[s("../m")], Path::new("/a/b")).unwrap(),
            s("/a/m")
        );
        assert_eq!(
            call("basename", &[s("/x/y.csv")], Path::new("/")).unwrap(),
            s("y.csv")
        );
        assert_eq!(
            call("dirname", &[s("/x/y.csv")], Path::new("/")).unwrap(),
            s("/x")
        );
    }

    #[test]
    fn string_and_number_functions() {
        let d = Path::new("/");
        assert_eq!(
            call(
                "join",
                &[s(","), Value::List(vec![s("a"), Value::Number(2.0)])],
                d
            )
            .unwrap(),
            s("a,2")
        );
        assert_eq!(
            call("min", &[Value::Number(3.0), Value::Number(-1.0)], d).unwrap(),
            Value::Number(-1.0)
        );
        assert_eq!(
            call("max", &[Value::Number(3.0), Value::Number(-1.0)], d).unwrap(),
            Value::Number(3.0)
        );
        assert_eq!(
            call("tonumber", &[s("42")], d).unwrap(),
            Value::Number(42.0)
        );
        assert!(call("tonumber", &[s("forty")], d).is_err());
        assert_eq!(call("tostring", &[Value::Number(4.0)], d).unwrap(), s("4"));
        assert_eq!(call("upper", &[s("ab")], d).unwrap(), s("AB"));
        assert!(call("nope", &[], d).unwrap_err().unknown);
    }
}
