//! `cargo xtask sqlx-prepare [--check]`: the compile-checked queries' offline
//! data (`.sqlx/` at the workspace root), written or checked against a
//! scratch database that holds every migration of the repository.
//!
//! One database serves the whole workspace: `cargo sqlx prepare --workspace`
//! compiles every crate against a single `DATABASE_URL`. That works because
//! no two services' migrations create the same table, and the messaging
//! tables (outbox, inbox, inbox_sequence) are the same in every service's
//! database. The files are applied as plain SQL rather than through sqlx's
//! migrator: every service numbers its own migrations from 1001, which one
//! `_sqlx_migrations` table could not hold.
//!
//! xtask itself links crates with checked queries: with a query whose data
//! is missing it does not build offline, and has to be built once against
//! the scratch database an earlier run left (docs/operations.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sqlx::{Connection as _, PgConnection};

use crate::infra::create_database_on;
use crate::{Component, Stack, tools};

/// The scratch database, dropped and made again on every run.
pub const DATABASE: &str = "sqlx_prepare";

/// sqlx-cli's version: the workspace's sqlx (Cargo.lock; a unit test checks).
pub const SQLX_CLI_VERSION: &str = "0.8.6";

/// Migration directories applied before all others: the services' tables
/// may refer to the messaging ones, never the other way round.
const FIRST: &str = "messaging";

/// Where the PostgreSQL server comes from.
pub enum Server<'a> {
    /// The stack's own, started if it is not running: what a fresh machine has.
    Stack(&'a Stack),
    /// A server already running, e.g. `postgres://postgres@127.0.0.1:5432`.
    Url(String),
}

/// Writes `.sqlx/` (or with `check`, fails if it is stale), installing
/// sqlx-cli first if it is missing.
pub async fn run(root: &Path, server: Server<'_>, check: bool) -> Result<()> {
    let cargo_sqlx = ensure_sqlx_cli().await?;
    let server_url = match server {
        Server::Stack(stack) => {
            stack.start_component(Component::Postgres).await.context("starting the stack's PostgreSQL")?;
            stack.wait_component_ready(Component::Postgres).await?;
            stack.postgres_server_url()
        }
        Server::Url(url) => url.trim_end_matches('/').to_owned(),
    };
    let database_url = format!("{server_url}/{DATABASE}");
    recreate_database(&server_url).await?;
    apply_migrations(&database_url, &root.join("migrations")).await?;
    // Kept after the run: xtask links crates with checked queries, so a
    // query without data yet keeps xtask itself from building offline.
    println!("scratch database {database_url} (to build against it: SQLX_OFFLINE=false DATABASE_URL={database_url})");

    let mut command = std::process::Command::new(cargo());
    command.args(["sqlx", "prepare", "--workspace"]);
    if check {
        command.arg("--check");
    }
    // Queries in tests and benches are compiled too, so their data is kept.
    command.args(["--", "--all-targets"]);
    let status = command
        .env("DATABASE_URL", &database_url)
        .env("PATH", path_with(cargo_sqlx.parent().unwrap_or(Path::new("."))))
        .current_dir(root)
        .status()
        .context("running cargo sqlx prepare")?;
    if !status.success() {
        if check {
            bail!("the query data in .sqlx/ is stale: run `cargo xtask sqlx-prepare` and commit .sqlx/");
        }
        bail!("cargo sqlx prepare failed ({status})");
    }
    Ok(())
}

/// Drops and creates [`DATABASE`], so a migration changed or removed since
/// the last run leaves nothing behind.
async fn recreate_database(server_url: &str) -> Result<()> {
    let admin_url = format!("{server_url}/postgres");
    let mut admin = PgConnection::connect(&admin_url).await.with_context(|| format!("connecting to {admin_url}"))?;
    // A fixed name, no parameter possible for an identifier.
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping database {DATABASE}"))?;
    create_database_on(&mut admin, DATABASE).await
}

/// Every `.sql` file under `migrations/`, messaging's first, then each
/// directory's in name order.
async fn apply_migrations(database_url: &str, migrations: &Path) -> Result<()> {
    let mut connection =
        PgConnection::connect(database_url).await.with_context(|| format!("connecting to {database_url}"))?;
    for file in migration_files(migrations)? {
        let sql = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        sqlx::raw_sql(&sql).execute(&mut connection).await.with_context(|| format!("applying {}", file.display()))?;
    }
    Ok(())
}

fn migration_files(migrations: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = sorted_entries(migrations)?;
    dirs.retain(|dir| dir.is_dir());
    // Stable sort: messaging's directory moves first, the rest keep name order.
    dirs.sort_by_key(|dir| dir.file_name().is_none_or(|name| name != FIRST));
    let mut files = Vec::new();
    for dir in dirs {
        files.extend(sorted_entries(&dir)?.into_iter().filter(|f| f.extension().is_some_and(|e| e == "sql")));
    }
    Ok(files)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

/// `cargo-sqlx` on PATH if it is [`SQLX_CLI_VERSION`], else the runner's
/// tools root, where it is installed if missing.
async fn ensure_sqlx_cli() -> Result<PathBuf> {
    if let Some(found) = tools::find_on_path("cargo-sqlx").filter(|found| is_expected_version(found)) {
        return Ok(found);
    }
    let root = tools::tools_root()?;
    let installed = root.join("bin/cargo-sqlx");
    if installed.exists() && is_expected_version(&installed) {
        return Ok(installed);
    }
    println!("Installing sqlx-cli {SQLX_CLI_VERSION} into {} (a few minutes, once)…", root.display());
    let status = tokio::process::Command::new(cargo())
        .args(["install", "sqlx-cli", "--version", SQLX_CLI_VERSION, "--locked", "--no-default-features"])
        .args(["--features", "postgres,rustls", "--root"])
        .arg(&root)
        .status()
        .await
        .context("running cargo install sqlx-cli")?;
    if !status.success() {
        bail!(
            "`cargo install sqlx-cli --version {SQLX_CLI_VERSION} --locked --no-default-features --features postgres,rustls --root {}` failed with {status}",
            root.display()
        );
    }
    Ok(installed)
}

/// Whether `cargo-sqlx --version` says [`SQLX_CLI_VERSION`]: query data
/// written by another version may differ.
fn is_expected_version(cargo_sqlx: &Path) -> bool {
    std::process::Command::new(cargo_sqlx)
        .args(["sqlx", "--version"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).split_whitespace().any(|word| word == SQLX_CLI_VERSION))
}

/// PATH with `dir` first, so `cargo sqlx` finds this `cargo-sqlx`.
fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlx_cli_is_the_version_of_the_workspace_sqlx() {
        let lock = std::fs::read_to_string(crate::repo_root().join("Cargo.lock")).unwrap();
        let sqlx = lock.split("[[package]]").find(|p| p.contains("\nname = \"sqlx\"\n")).unwrap();
        assert!(sqlx.contains(&format!("\nversion = \"{SQLX_CLI_VERSION}\"\n")), "{sqlx}");
    }

    #[test]
    fn messaging_migrations_come_first_then_each_directory_in_order() {
        let files = migration_files(&crate::repo_root().join("migrations")).unwrap();
        let dirs: Vec<String> = files
            .iter()
            .filter_map(|f| f.parent()?.file_name()?.to_str().map(str::to_owned))
            .collect::<Vec<_>>()
            .into_iter()
            .fold(Vec::new(), |mut seen, dir| {
                if seen.last() != Some(&dir) {
                    seen.push(dir);
                }
                seen
            });
        assert_eq!(dirs.first().map(String::as_str), Some(FIRST));
        let mut rest = dirs[1..].to_vec();
        rest.sort();
        assert_eq!(rest, dirs[1..]);
        assert!(files.iter().all(|f| f.extension().is_some_and(|e| e == "sql")));
    }
}
