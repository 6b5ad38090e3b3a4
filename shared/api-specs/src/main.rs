//! `cargo run -p api-specs`: writes docs/api/asyncapi.json and the six
//! services' docs/api/<service>.openapi.json from the code.

use std::path::PathBuf;
use std::process::ExitCode;

fn documents() -> Result<Vec<(PathBuf, String)>, api_specs::SpecError> {
    let mut documents = vec![(api_specs::document_path(), api_specs::render(&api_specs::document()?)?)];
    for service in api_specs::SERVICES {
        if let Some(document) = api_specs::openapi_document(service) {
            documents.push((api_specs::openapi_path(service), api_specs::render(&document?)?));
        }
    }
    Ok(documents)
}

fn main() -> ExitCode {
    let documents = match documents() {
        Ok(documents) => documents,
        Err(e) => {
            eprintln!("api-specs: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (path, text) in documents {
        let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&path, text));
        if let Err(e) = written {
            eprintln!("api-specs: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
