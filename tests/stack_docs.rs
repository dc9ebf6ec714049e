//! `docs/stack-language.md` is generated from the schema (`stack::schema`); the committed page
//! must be what the code generates, so the reference never drifts from what the loader accepts.
//! After changing the schema, regenerate the page with `BLESS=1 cargo test --test stack_docs`
//! and commit it.

use std::path::Path;

#[test]
fn the_committed_stack_language_reference_is_generated_from_the_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/stack-language.md");
    let generated = benchstack::stack::schema::reference_markdown();
    if std::env::var_os("BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("docs/stack-language.md is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()) + 1);
        panic!(
            "docs/stack-language.md differs from the schema's reference (first at line {line}); \
             regenerate it with `{}`",
            benchstack::stack::schema::REGENERATE_DOCS
        );
    }
}

#[test]
fn the_reference_documents_every_block_and_attribute() {
    let page = benchstack::stack::schema::reference_markdown();
    for block in benchstack::stack::schema::BLOCKS {
        assert!(page.contains(&format!("`{}", block.name)), "{}", block.name);
        for a in block.attrs {
            assert!(
                page.contains(&format!("| `{}` |", a.name)),
                "{}.{}",
                block.name,
                a.name
            );
        }
    }
}
