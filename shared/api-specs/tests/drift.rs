//! The committed docs/api/asyncapi.json is exactly what the code generates.

#[test]
fn the_committed_document_is_what_the_code_generates() {
    let path = api_specs::document_path();
    let generated = api_specs::render(&api_specs::document().expect("the document builds")).expect("it renders");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {}: {e}\nrun `cargo run -p api-specs` and commit docs/api/asyncapi.json", path.display())
    });
    if committed == generated {
        return;
    }
    let first_difference = committed
        .lines()
        .zip(generated.lines())
        .enumerate()
        .find(|(_, (c, g))| c != g)
        .map(|(i, (c, g))| format!("line {}:\n  committed: {c}\n  generated: {g}", i + 1))
        .unwrap_or_else(|| {
            format!(
                "lengths differ: committed {} lines, generated {}",
                committed.lines().count(),
                generated.lines().count()
            )
        });
    panic!(
        "{} is out of date with the code (shared/contracts, shared/api-specs).\n\
         Run `cargo run -p api-specs` and commit docs/api/asyncapi.json.\nFirst difference at {first_difference}",
        path.display()
    );
}
