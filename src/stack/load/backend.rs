//! The `backend "gcs"` block (schema: `schema::BACKEND`): where the state lives. Its values
//! are literal strings, as in Terraform's backend blocks: the backend names the state before
//! variables are evaluated, and a state whose place depended on `--var` would move with it.

use hcl_edit::expr::Expression;
use hcl_edit::structure::{Attribute, Block};

use super::super::schema::BACKEND;
use super::super::sources::{Sources, range_of};
use super::body::{Checked, header_range};
use crate::vocab::backend::{self, Backend};

impl Sources {
    pub(super) fn decode_backend(&mut self, file: usize, b: &Block) -> Option<Backend> {
        let what = "backend \"gcs\"";
        let c = self.check_body(file, &b.body, what, &BACKEND);
        let errors_before = self.diags.len();
        let bucket = self.literal(file, &c, "bucket");
        let prefix = self.literal(file, &c, "prefix");
        let kms = self.literal(file, &c, "kms_key_name");
        if !c.attrs.contains_key("bucket") {
            self.error(
                file,
                header_range(b),
                format!(
                    "found {what} without `bucket`, expected {}",
                    BACKEND.attr("bucket").written()
                ),
                None,
            );
        }
        if let Some((name, a)) = &bucket
            && let Some(problem) = backend::bucket_problem(name)
        {
            self.error(
                file,
                range_of(&a.value),
                format!("bucket: found {name:?}, expected a bucket name: {problem}"),
                None,
            );
        }
        let prefix = match &prefix {
            Some((p, a)) => match backend::normalize_prefix(p) {
                Ok(p) => Some(p),
                Err(problem) => {
                    self.error(
                        file,
                        range_of(&a.value),
                        format!("prefix: found {p:?}, expected a path of folders: {problem}"),
                        None,
                    );
                    None
                }
            },
            None => Some(String::new()),
        };
        if let Some((k, a)) = &kms
            && !backend::is_kms_key_name(k)
        {
            self.error(
                file,
                range_of(&a.value),
                format!("kms_key_name: found {k:?}, expected a Cloud KMS key name: projects/P/locations/L/keyRings/R/cryptoKeys/K"),
                None,
            );
        }
        if self.diags.len() > errors_before {
            return None;
        }
        Some(Backend {
            bucket: bucket?.0,
            prefix: prefix?,
            kms_key_name: kms.map(|(k, _)| k),
            span: self.span(file, range_of(&b.ident)),
        })
    }
    /// The literal string value of `name`, when written; anything else is an error.
    fn literal<'b>(
        &mut self,
        file: usize,
        c: &Checked<'b>,
        name: &str,
    ) -> Option<(String, &'b Attribute)> {
        let a = *c.attrs.get(name)?;
        match &a.value {
            Expression::String(s) => Some((s.value().to_string(), a)),
            other => {
                let found = match other {
                    Expression::Variable(_) | Expression::Traversal(_) => "a reference",
                    Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => "a template",
                    Expression::FuncCall(_) => "a function call",
                    _ => "an expression",
                };
                self.error(
                    file,
                    range_of(&a.value),
                    format!("{name}: found {found}, expected a literal string: a backend block cannot use variables, references or functions (it is read before they are, as in Terraform)"),
                    Some("write the value itself, or name the state with --state gs://BUCKET/PREFIX or BENCHSTACK_STATE".into()),
                );
                None
            }
        }
    }
}
