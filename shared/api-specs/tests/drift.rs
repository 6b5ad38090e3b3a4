//! The committed documents under docs/api/ are exactly what the code
//! generates: a message type, route or response changed without
//! regenerating fails here.

fn assert_committed(path: &std::path::Path, generated: &str, sources: &str) {
    let committed = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("cannot read {}: {e}\nrun `cargo run -p api-specs` and commit docs/api/", path.display())
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
        "{} is out of date with the code ({sources}).\n\
         Run `cargo run -p api-specs` and commit docs/api/.\nFirst difference at {first_difference}",
        path.display()
    );
}

#[test]
fn the_committed_asyncapi_document_is_what_the_code_generates() {
    let generated = api_specs::render(&api_specs::document().expect("the document builds")).expect("it renders");
    assert_committed(&api_specs::document_path(), &generated, "shared/contracts, shared/api-specs");
}

#[test]
fn each_committed_openapi_document_is_what_its_service_generates() {
    for service in api_specs::SERVICES {
        let document = api_specs::openapi_document(service).expect("a service").expect("the document builds");
        let generated = api_specs::render(&document).expect("it renders");
        assert_committed(
            &api_specs::openapi_path(service),
            &generated,
            &format!("services/{service}, shared/service-kit"),
        );
    }
}
