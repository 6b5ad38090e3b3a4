//! `cargo run -p api-specs`: writes docs/api/asyncapi.json from the code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let path = api_specs::document_path();
    let text = match api_specs::document().and_then(|document| api_specs::render(&document)) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("api-specs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&path, text));
    if let Err(e) = written {
        eprintln!("api-specs: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", path.display());
    ExitCode::SUCCESS
}
