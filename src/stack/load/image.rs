//! `image` blocks (schema: `schema::IMAGE`), and the `image` / `loadgen_image` attributes that
//! take either a reference string or `image.NAME`.

use std::collections::BTreeMap;

use hcl_edit::structure::Block;

use super::super::funcs::resolve;
use super::super::schema::{Attr, IMAGE};
use super::super::sources::{Sources, range_of};
use super::super::value::{Reference, Value};
use super::body::{Checked, Ctx, as_string, expect_ref};
use crate::image_context::{Context, ContextError};
use crate::vocab::resources::{Address, ImageConfig, Kind, ServingPreset};

/// Docker's rule for a repository path component: lowercase alphanumerics separated by
/// `.`, `_`, `__` or runs of `-` (distribution/reference grammar).
fn is_image_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
                && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        })
}

impl Sources {
    pub(super) fn decode_image(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        block: &Block,
        what: &str,
    ) -> Option<ImageConfig> {
        let a = |name| IMAGE.attr(name);
        let repository = self
            .required(cx, c, block, what, a("repository"))
            .and_then(|attr| self.typed(cx, attr, as_string));
        if let (Some(r), Some(attr)) = (&repository, c.attrs.get("repository")) {
            let probe = ImageConfig {
                repository: r.clone(),
                name: String::new(),
                context: Default::default(),
                dockerfile: String::new(),
                args: BTreeMap::new(),
                content_hash: String::new(),
                preset: None,
            };
            if probe.artifact_registry().is_none() {
                self.error(cx.file, range_of(&attr.value), format!("repository: found {r:?}, expected an Artifact Registry repository such as {} (Cloud Build pushes there; Container Registry, gcr.io, is shut down)", a("repository").example), None);
            }
        }
        let name_attr = a("name");
        let name = self
            .required(cx, c, block, what, name_attr)
            .and_then(|attr| {
                self.typed(cx, attr, |v| match v {
                    Value::String(s) if is_image_name(s) => Ok(s.clone()),
                    _ => Err(name_attr.ty.expected()),
                })
            });
        let preset = self.choice(cx, c, a("preset"), |s| (s == "serving").then_some(()));
        if preset.is_some() {
            // The context is generated: nothing of the user's may be added to it.
            for name in ["context", "dockerfile", "args"] {
                if let Some(found) = c.attrs.get(name) {
                    self.error(cx.file, range_of(&found.key), format!("found `{name}` with `preset = \"serving\"`, expected no `{name}` (the preset generates the Dockerfile and its context from the serving resource that uses the image)"), None);
                }
            }
            let base_image = self
                .string(cx, c, a("base_image"))
                .unwrap_or_else(|| "tensorflow/serving:2.19.0".to_string());
            if base_image.trim().is_empty() || base_image.chars().any(char::is_whitespace) {
                if let Some(found) = c.attrs.get("base_image") {
                    self.error(cx.file, range_of(&found.value), format!("base_image: found {base_image:?}, expected an image reference such as {}", a("base_image").example), None);
                }
                return None;
            }
            // The models and the hash come later: the models from the serving resource that
            // uses it (cross-checks), the hash from the plan's rendered files.
            return Some(ImageConfig {
                repository: repository?,
                name: name?,
                context: Default::default(),
                dockerfile: "Dockerfile".to_string(),
                args: BTreeMap::new(),
                content_hash: String::new(),
                preset: Some(ServingPreset {
                    base_image,
                    serving: None,
                    models: Vec::new(),
                }),
            });
        }
        if let Some(found) = c.attrs.get("base_image") {
            self.error(cx.file, range_of(&found.key), "found `base_image` without `preset = \"serving\"`, expected it only with the preset (your Dockerfile names its own base image)".to_string(), None);
        }
        let context_attr = self.required(cx, c, block, what, a("context"));
        let context = context_attr.and_then(|attr| {
            let rel = self.typed(cx, attr, as_string)?;
            let path = resolve(cx.scope.dir, &rel);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => Some(path),
                Ok(_) => {
                    self.error(cx.file, range_of(&attr.value), format!("context: found {rel:?}, which is a file; expected the build context directory (relative paths resolve against the stack file's directory)"), None);
                    None
                }
                Err(_) => {
                    self.error(cx.file, range_of(&attr.value), format!("context: found {rel:?}, but {} does not exist; expected the build context directory (relative paths resolve against the stack file's directory)", path.display()), None);
                    None
                }
            }
        });
        let dockerfile = self
            .string(cx, c, a("dockerfile"))
            .unwrap_or_else(|| "Dockerfile".to_string());
        let args_attr = a("args");
        let args = self
            .opt(cx, c, args_attr.name, |v| match v {
                Value::Map(m) => m
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k.clone(), s.clone())),
                        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                            Ok((k.clone(), format!("{}", *n as i64)))
                        }
                        Value::Number(n) => Ok((k.clone(), n.to_string())),
                        Value::Bool(b) => Ok((k.clone(), b.to_string())),
                        other => Err(format!(
                            "{}; `{k}` is {}",
                            args_attr.ty.expected(),
                            other.describe()
                        )),
                    })
                    .collect::<Result<BTreeMap<_, _>, _>>(),
                _ => Err(args_attr.ty.expected()),
            })
            .unwrap_or_default();
        let context = context?;
        // What a build would see, hashed now: the plan compares it with the last build's.
        let content_hash =
            match Context::scan(&context, &dockerfile).and_then(|ctx| ctx.hash(&args)) {
                Ok(h) => h,
                Err(e) => {
                    let at = match &e {
                        ContextError::Dockerfile { .. } => c
                            .attrs
                            .get("dockerfile")
                            .copied()
                            .or(context_attr)
                            .map(|x| range_of(&x.value)),
                        _ => context_attr.map(|x| range_of(&x.value)),
                    };
                    let r = at.unwrap_or_else(|| range_of(&block.ident));
                    let name = match &e {
                        ContextError::Dockerfile { .. } if c.attrs.contains_key("dockerfile") => {
                            "dockerfile"
                        }
                        _ => "context",
                    };
                    self.error(cx.file, r, format!("{name}: {e}"), None);
                    return None;
                }
            };
        Some(ImageConfig {
            repository: repository?,
            name: name?,
            context,
            dockerfile,
            args,
            content_hash,
            preset: None,
        })
    }

    /// `image = "REF"` or `image = image.NAME` (with `loadgen_image` the same): the literal,
    /// or the `image` block's address.
    pub(super) fn image_ref(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        a: &Attr,
    ) -> (Option<String>, Option<Address>) {
        let Some(attr) = c.attrs.get(a.name) else {
            return (None, None);
        };
        let Some(v) = self.value(cx, attr) else {
            return (None, None);
        };
        match &v {
            Value::String(s) if !s.trim().is_empty() => (Some(s.clone()), None),
            Value::Ref(Reference { address, .. }) if address.kind == Kind::Image => {
                match expect_ref(&v, Kind::Image, cx.decls) {
                    Ok(addr) => (None, Some(addr)),
                    Err(expected) => {
                        self.error(
                            cx.file,
                            range_of(&attr.value),
                            format!("{}: found {}, expected {expected}", a.name, v.describe()),
                            None,
                        );
                        (None, None)
                    }
                }
            }
            other => {
                self.error(
                    cx.file,
                    range_of(&attr.value),
                    format!(
                        "{}: found {}, expected {}",
                        a.name,
                        other.describe(),
                        a.ty.expected()
                    ),
                    None,
                );
                (None, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_image_name;

    #[test]
    fn image_names_follow_dockers_grammar() {
        assert!(is_image_name("benchstack"));
        assert!(is_image_name("tf-serving/regression_1.2"));
        assert!(!is_image_name("Benchstack"));
        assert!(!is_image_name("a//b"));
        assert!(!is_image_name("-a"));
        assert!(!is_image_name("a:latest"));
    }
}
