//! schemathesis, the property-based API tester that reads an OpenAPI
//! document, for the fuzz test of the services' HTTP APIs
//! (tests/tests/api_fuzz.rs, docs/api-fuzzing.md). It is installed from PyPI
//! with pip into a Python virtual environment under a stack's folder, at a
//! pinned version with every dependency pinned too, and reused while that
//! install is complete and of the right version.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::{process, tools};

/// The schemathesis release the fuzz test runs.
pub const VERSION: &str = "4.32.5";

/// The whole install as pip resolved it for [`VERSION`] (`pip freeze`):
/// schemathesis pins its dependencies only to ranges, and a new Hypothesis
/// release generates other cases from the same seed, so a failure found
/// once could not be replayed. Every one has wheels for CPython 3.11–3.13.
const CONSTRAINTS: &str = "\
anyio==4.16.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
graphql-core==3.3.2
harfile==0.6.0
hypothesis==6.170.27
hypothesis-graphql==0.13.5
idna==3.21
iniconfig==2.3.1
jsonschema_rs==0.60.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
packaging==26.4
pluggy==1.7.0
Pygments==2.21.0
pyrate-limiter==4.6.0
pytest==9.2.0
PyYAML==6.0.4
requests==2.34.2
rich==15.0.0
schemathesis==4.32.5
sortedcontainers==2.4.0
typing_extensions==4.16.0
urllib3==2.8.0
Werkzeug==3.1.9
";

/// schemathesis 4 needs Python 3.11 or later.
const MIN_PYTHON: (u32, u32) = (3, 11);
/// Debian's and Ubuntu's packages for a Python with `venv` and `ensurepip`.
const APT_PYTHON: &str = "apt-get update && apt-get install -y --no-install-recommends python3 python3-venv";
/// Longest a pip install may take (27 wheels; minutes on a slow mirror).
const PIP_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Written last into the virtual environment: an install without it was
/// cut short and is made again.
const MARKER: &str = "ordermesh-installed";
/// The Python to build the environment with, instead of `python3` on PATH.
pub const PYTHON_ENV: &str = "ORDERMESH_PYTHON";

/// Where the virtual environment of [`VERSION`] lives under `dir`.
pub fn venv_dir(dir: &Path) -> PathBuf {
    dir.join("schemathesis").join(format!("venv-{VERSION}"))
}

/// The `st` command of schemathesis [`VERSION`] in a virtual environment
/// under `dir` (a stack's folder, [`crate::Stack::dir`]), installed with pip
/// from PyPI if it is not there yet. Two processes may call it at once: a
/// lock file lets one install while the other waits and then reuses it.
pub async fn ensure_schemathesis(dir: &Path) -> Result<PathBuf> {
    let venv = venv_dir(dir);
    let st = venv.join("bin/st");
    if is_installed(&venv).await {
        return Ok(st);
    }
    let lock_path = dir.join("schemathesis").join("install.lock");
    let _lock = process::lock_file_async(&lock_path).await?;
    // Somebody else may have installed it while we waited for the lock.
    if is_installed(&venv).await {
        return Ok(st);
    }
    install(&venv).await.with_context(|| format!("installing schemathesis {VERSION} into {}", venv.display()))?;
    Ok(st)
}

/// The marker names this very install, and `st` runs and says its version.
async fn is_installed(venv: &Path) -> bool {
    let marker = std::fs::read_to_string(venv.join(MARKER)).unwrap_or_default();
    if marker != marker_text() {
        return false;
    }
    match Command::new(venv.join("bin/st")).arg("--version").output().await {
        Ok(output) => output.status.success() && version_matches(&String::from_utf8_lossy(&output.stdout)),
        Err(_) => false,
    }
}

fn marker_text() -> String {
    format!("schemathesis {VERSION}\n{CONSTRAINTS}")
}

/// `st --version` prints `st, version 4.32.5`.
fn version_matches(output: &str) -> bool {
    output.split_whitespace().last() == Some(VERSION)
}

async fn install(venv: &Path) -> Result<()> {
    // What an earlier, interrupted install left: a virtual environment is
    // not relocatable (its scripts name its path), so it is made in place.
    if venv.exists() {
        std::fs::remove_dir_all(venv).with_context(|| format!("removing the incomplete {}", venv.display()))?;
    }
    let python = python().await?;
    println!("Installing schemathesis {VERSION} from PyPI into {} (once)…", venv.display());
    create_venv(&python, venv).await?;
    let constraints = venv.join("constraints.txt");
    std::fs::write(&constraints, CONSTRAINTS).with_context(|| format!("writing {}", constraints.display()))?;
    let pip = Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--constraint"])
        .arg(&constraints)
        .arg(format!("schemathesis=={VERSION}"))
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(PIP_TIMEOUT, pip).await {
        Ok(output) => output.context("running pip in the virtual environment")?,
        Err(_) => bail!("pip install schemathesis=={VERSION} did not finish within {PIP_TIMEOUT:?}"),
    };
    if !output.status.success() {
        bail!("pip install schemathesis=={VERSION} failed ({}):\n{}", output.status, both_streams(&output));
    }
    let st = venv.join("bin/st");
    let version =
        Command::new(&st).arg("--version").output().await.with_context(|| format!("running {}", st.display()))?;
    let printed = String::from_utf8_lossy(&version.stdout);
    if !version.status.success() || !version_matches(&printed) {
        bail!(
            "{} --version printed {:?}, expected version {VERSION}:\n{}",
            st.display(),
            printed.trim(),
            both_streams(&version)
        );
    }
    let marker = venv.join(MARKER);
    std::fs::write(&marker, marker_text()).with_context(|| format!("writing {}", marker.display()))?;
    Ok(())
}

/// `ORDERMESH_PYTHON`, else `python3` on PATH (installed with apt when run
/// as root on Debian or Ubuntu); at least [`MIN_PYTHON`].
async fn python() -> Result<PathBuf> {
    let python = match std::env::var_os(PYTHON_ENV) {
        Some(explicit) => PathBuf::from(explicit),
        None => match tools::find_on_path("python3") {
            Some(found) => found,
            None => {
                tools::apt_install(&anyhow::anyhow!("python3 is not on PATH"), APT_PYTHON).await?;
                tools::find_on_path("python3").with_context(|| format!("python3 still missing after `{APT_PYTHON}`"))?
            }
        },
    };
    let output = Command::new(&python)
        .args(["-c", "import sys; print(*sys.version_info[:2])"])
        .output()
        .await
        .with_context(|| format!("running {}", python.display()))?;
    let printed = String::from_utf8_lossy(&output.stdout);
    let version: Vec<u32> = printed.split_whitespace().filter_map(|part| part.parse().ok()).collect();
    match version.as_slice() {
        [major, minor] if (*major, *minor) >= MIN_PYTHON => Ok(python),
        [major, minor] => bail!(
            "{} is Python {major}.{minor}; schemathesis {VERSION} needs {}.{} or later (set {PYTHON_ENV} to one)",
            python.display(),
            MIN_PYTHON.0,
            MIN_PYTHON.1
        ),
        _ => bail!("{} did not say its version:\n{}", python.display(), both_streams(&output)),
    }
}

/// `python -m venv`; where `venv` or `ensurepip` is missing (Debian ships
/// them apart, in python3-venv), installs that and tries once more.
async fn create_venv(python: &Path, venv: &Path) -> Result<()> {
    let run = || Command::new(python).args(["-m", "venv"]).arg(venv).output();
    let output = run().await.with_context(|| format!("running {} -m venv", python.display()))?;
    if output.status.success() {
        return Ok(());
    }
    let first = format!(
        "{} -m venv {} failed ({}):\n{}",
        python.display(),
        venv.display(),
        output.status,
        both_streams(&output)
    );
    tools::apt_install(&anyhow::anyhow!("{first}"), APT_PYTHON).await?;
    // The failed attempt leaves a virtual environment without pip.
    if venv.exists() {
        std::fs::remove_dir_all(venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    let output = run().await.with_context(|| format!("running {} -m venv", python.display()))?;
    if !output.status.success() {
        bail!("{first}\nand again after `{APT_PYTHON}` ({}):\n{}", output.status, both_streams(&output));
    }
    Ok(())
}

fn both_streams(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_of_st_is_recognised() {
        assert!(version_matches("st, version 4.32.5\n"));
        assert!(!version_matches("st, version 4.32.50\n"));
        assert!(!version_matches(""));
    }

    #[test]
    fn the_constraints_pin_the_same_schemathesis_and_only_exact_versions() {
        let pins: Vec<&str> = CONSTRAINTS.lines().collect();
        assert!(pins.contains(&format!("schemathesis=={VERSION}").as_str()));
        assert!(pins.iter().all(|pin| pin.split_once("==").is_some_and(|(name, v)| !name.is_empty() && !v.is_empty())));
    }
}
