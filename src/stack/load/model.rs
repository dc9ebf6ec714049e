//! `model` blocks (schema: `schema::MODEL`).

use hcl_edit::structure::Block;

use super::super::funcs::resolve;
use super::super::schema::MODEL;
use super::super::sources::{Sources, range_of};
use super::super::value::Value;
use super::body::{Checked, Ctx, as_string, is_valid_name};
use crate::vocab::resources::{Address, ModelConfig};

impl Sources {
    pub(super) fn decode_model(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        block: &Block,
        what: &str,
        address: &Address,
    ) -> Option<ModelConfig> {
        let name_attr = MODEL.attr("name");
        let name = self.opt(cx, c, name_attr.name, |v| match v {
            Value::String(s) if is_valid_name(s) => Ok(s.clone()),
            _ => Err(name_attr
                .ty
                .expected()
                .replacen("a name", "a model name", 1)),
        });
        let name = name.unwrap_or_else(|| match &address.key {
            Some(k) => format!("{}-{k}", address.name),
            None => address.name.clone(),
        });
        let a = self.required(cx, c, block, what, MODEL.attr("base_path"))?;
        let base = self.typed(cx, a, as_string)?;
        let path = resolve(cx.scope.dir, &base);
        match std::fs::metadata(&path) {
            Err(_) => {
                self.error(cx.file, range_of(&a.value), format!("base_path: found {base:?}, but {} does not exist; expected a model directory with numbered versions (relative paths resolve against the stack file's directory)", path.display()), None);
                return None;
            }
            Ok(m) if !m.is_dir() => {
                self.error(cx.file, range_of(&a.value), format!("base_path: found {base:?}, which is a file; expected a directory holding versions such as 1/saved_model.pb"), None);
                return None;
            }
            Ok(_) => {
                let has_version = std::fs::read_dir(&path)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok()).any(|e| {
                            e.path().is_dir()
                                && e.file_name()
                                    .to_string_lossy()
                                    .chars()
                                    .all(|c| c.is_ascii_digit())
                        })
                    })
                    .unwrap_or(false);
                if !has_version {
                    self.error(cx.file, range_of(&a.value), format!("base_path: found {} with no numbered version directory, expected versions such as {}/1/saved_model.pb (TF Serving's layout)", path.display(), base), None);
                    return None;
                }
            }
        }
        let serving_path_attr = MODEL.attr("serving_path");
        let serving_path = self.opt(cx, c, serving_path_attr.name, |v| match v {
            Value::String(s) if s.starts_with('/') || s.starts_with("gs://") => Ok(s.clone()),
            _ => Err(serving_path_attr.ty.expected()),
        });
        Some(ModelConfig {
            name,
            base_path: path,
            serving_path,
        })
    }
}
