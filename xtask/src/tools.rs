//! Locating (and, when missing, installing) the external programs the runner
//! drives: PostgreSQL server binaries, the RabbitMQ server scripts and the
//! Tansu Kafka-compatible broker.

use std::{
    env, fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

/// Where Debian puts versioned PostgreSQL server binaries (off PATH).
const POSTGRES_LIB_DIR: &str = "/usr/lib/postgresql";
/// The RabbitMQ scripts that run as the caller; `/usr/sbin/rabbitmq-*` would
/// `su` to the `rabbitmq` user and read `/etc/rabbitmq`.
const RABBITMQ_BIN_DIR: &str = "/usr/lib/rabbitmq/bin";
const APT_INSTALL: &str = "apt-get update && apt-get install -y --no-install-recommends postgresql rabbitmq-server";
/// The Tansu release the runner installs: the one this project was built and
/// measured against (its quirks are in docs/broker-notes.md), so
/// a newer release never changes a fresh machine's broker unasked.
const TANSU_VERSION: &str = "0.6.0";
/// Longest we wait for somebody else's `cargo install tansu` to finish.
const FOREIGN_INSTALL_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// PostgreSQL server binaries of one major version.
#[derive(Clone, Debug)]
pub struct PostgresTools {
    pub version: u32,
    pub bin_dir: PathBuf,
}

impl PostgresTools {
    pub fn initdb(&self) -> PathBuf {
        self.bin_dir.join("initdb")
    }
    pub fn pg_ctl(&self) -> PathBuf {
        self.bin_dir.join("pg_ctl")
    }
    pub fn postgres(&self) -> PathBuf {
        self.bin_dir.join("postgres")
    }
}

/// RabbitMQ server scripts.
#[derive(Clone, Debug)]
pub struct RabbitMqTools {
    pub bin_dir: PathBuf,
}

impl RabbitMqTools {
    pub fn server(&self) -> PathBuf {
        self.bin_dir.join("rabbitmq-server")
    }
    pub fn ctl(&self) -> PathBuf {
        self.bin_dir.join("rabbitmqctl")
    }
}

/// Everything the infrastructure layer needs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub postgres: PostgresTools,
    pub rabbitmq: RabbitMqTools,
    pub tansu: PathBuf,
}

/// Finds all tools, installing whatever is missing: PostgreSQL and RabbitMQ
/// via apt-get (as root), Tansu via `cargo install`.
pub async fn ensure_all() -> Result<Tools> {
    Ok(Tools { postgres: ensure_postgres().await?, rabbitmq: ensure_rabbitmq().await?, tansu: ensure_tansu().await? })
}

/// The highest PostgreSQL version under `/usr/lib/postgresql` that has a full
/// set of server binaries.
pub fn locate_postgres() -> Result<PostgresTools> {
    let entries = match fs::read_dir(POSTGRES_LIB_DIR) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "PostgreSQL server binaries not found: {POSTGRES_LIB_DIR} does not exist; install them with `{APT_INSTALL}`"
            )
        }
        Err(error) => return Err(error).with_context(|| format!("listing {POSTGRES_LIB_DIR}")),
    };
    let mut best: Option<PostgresTools> = None;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {POSTGRES_LIB_DIR}"))?;
        let Some(version) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let bin_dir = entry.path().join("bin");
        let tools = PostgresTools { version, bin_dir };
        let complete = [tools.initdb(), tools.pg_ctl(), tools.postgres()].iter().all(|path| path.is_file());
        if complete && best.as_ref().is_none_or(|current| version > current.version) {
            best = Some(tools);
        }
    }
    best.with_context(|| {
        format!("no PostgreSQL version under {POSTGRES_LIB_DIR} has initdb, pg_ctl and postgres in bin/; install them with `{APT_INSTALL}`")
    })
}

pub fn locate_rabbitmq() -> Result<RabbitMqTools> {
    let tools = RabbitMqTools { bin_dir: PathBuf::from(RABBITMQ_BIN_DIR) };
    for path in [tools.server(), tools.ctl()] {
        if !path.is_file() {
            bail!("RabbitMQ not found: {} is missing; install it with `{APT_INSTALL}`", path.display());
        }
    }
    Ok(tools)
}

/// `$HOME/.cache/ordermesh/tools`: the `cargo install --root` for Tansu.
pub fn tools_root() -> Result<PathBuf> {
    let home = env::var_os("HOME").context("HOME is not set; cannot locate ~/.cache/ordermesh/tools")?;
    Ok(PathBuf::from(home).join(".cache/ordermesh/tools"))
}

/// Tansu from `TANSU_BIN`, else `tansu` on PATH, else the runner's tools root.
pub fn locate_tansu() -> Result<Option<PathBuf>> {
    if let Some(explicit) = env::var_os("TANSU_BIN") {
        let path = PathBuf::from(explicit);
        if !path.is_file() {
            bail!("TANSU_BIN is set to {} but no such file exists", path.display());
        }
        return Ok(Some(path));
    }
    if let Some(on_path) = find_on_path("tansu") {
        return Ok(Some(on_path));
    }
    let installed = tools_root()?.join("bin/tansu");
    Ok(installed.is_file().then_some(installed))
}

pub async fn ensure_postgres() -> Result<PostgresTools> {
    match locate_postgres() {
        Ok(tools) => Ok(tools),
        Err(error) => {
            apt_install_packages(&error).await?;
            locate_postgres().context("PostgreSQL binaries still missing after apt-get install")
        }
    }
}

pub async fn ensure_rabbitmq() -> Result<RabbitMqTools> {
    match locate_rabbitmq() {
        Ok(tools) => Ok(tools),
        Err(error) => {
            apt_install_packages(&error).await?;
            locate_rabbitmq().context("RabbitMQ binaries still missing after apt-get install")
        }
    }
}

/// Finds Tansu; if absent, waits for an install already running on this
/// machine or runs `cargo install tansu` itself.
pub async fn ensure_tansu() -> Result<PathBuf> {
    if let Some(path) = locate_tansu()? {
        check_tansu_has_sqlite(&path).await?;
        return Ok(path);
    }
    wait_for_foreign_tansu_install().await?;
    if let Some(path) = locate_tansu()? {
        check_tansu_has_sqlite(&path).await?;
        return Ok(path);
    }

    let root = tools_root()?;
    println!(
        "Installing Tansu {TANSU_VERSION} (Kafka-compatible broker) into {}; this takes 10–20 minutes…",
        root.display()
    );
    let status = Command::new("cargo")
        .args(["install", "tansu", "--version", TANSU_VERSION, "--locked", "--features", "libsql", "--root"])
        .arg(&root)
        .status()
        .await
        .context("running `cargo install tansu` (is cargo on PATH?)")?;
    if !status.success() {
        bail!(
            "`cargo install tansu --version {TANSU_VERSION} --locked --features libsql --root {}` failed with {status}",
            root.display()
        );
    }
    let path = root.join("bin/tansu");
    if !path.is_file() {
        bail!("cargo install tansu succeeded but {} does not exist", path.display());
    }
    check_tansu_has_sqlite(&path).await?;
    Ok(path)
}

/// The broker is started with `--storage-engine sqlite://…`, which only
/// works if Tansu was built with the `libsql` feature.
async fn check_tansu_has_sqlite(tansu: &Path) -> Result<()> {
    let output = Command::new(tansu)
        .arg("--help")
        .output()
        .await
        .with_context(|| format!("running {} --help", tansu.display()))?;
    let help = String::from_utf8_lossy(&output.stdout);
    if !help.contains("libsql") {
        bail!(
            "{} lacks the sqlite storage engine (built without the `libsql` feature); reinstall with `cargo install tansu --version {TANSU_VERSION} --locked --features libsql --root {}`",
            tansu.display(),
            tools_root()?.display()
        );
    }
    Ok(())
}

/// If another process is already running `cargo install … tansu`, starting a
/// second one would just fight over the same build: wait for it instead.
async fn wait_for_foreign_tansu_install() -> Result<()> {
    let started = Instant::now();
    let mut announced = false;
    while let Some(pid) = running_tansu_install() {
        if !announced {
            println!("Waiting for the Tansu install already in progress (pid {pid})…");
            announced = true;
        }
        if started.elapsed() > FOREIGN_INSTALL_TIMEOUT {
            bail!("gave up after {FOREIGN_INSTALL_TIMEOUT:?} waiting for `cargo install tansu` (pid {pid}) to finish");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Ok(())
}

fn running_tansu_install() -> Option<u32> {
    let own_pid = std::process::id();
    fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid = entry.ok()?.file_name().to_str()?.parse::<u32>().ok()?;
        if pid == own_pid {
            return None;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
        let is_cargo = args.first().is_some_and(|program| program.ends_with(b"cargo"));
        let installs_tansu = args.contains(&b"install".as_slice()) && args.contains(&b"tansu".as_slice());
        (is_cargo && installs_tansu && crate::process::is_alive(pid)).then_some(pid)
    })
}

async fn apt_install_packages(missing: &anyhow::Error) -> Result<()> {
    apt_install(missing, APT_INSTALL).await
}

/// `docker-compose` (v1, Debian's package), with which the tests validate
/// docker-compose.yml; no Docker engine is needed for that.
pub async fn ensure_docker_compose() -> Result<PathBuf> {
    if let Some(path) = find_on_path("docker-compose") {
        return Ok(path);
    }
    // --no-install-recommends: otherwise apt brings a whole Docker engine.
    let install = "apt-get update && apt-get install -y --no-install-recommends docker-compose";
    apt_install(&anyhow::anyhow!("docker-compose is not installed"), install).await?;
    find_on_path("docker-compose").context("docker-compose still missing after apt-get install")
}

/// Debian's Chromium and its WebDriver, for the console's browser tests
/// (installed from the distribution, never a browser a tool downloads).
pub async fn ensure_chromium() -> Result<()> {
    const BINARIES: [&str; 2] = ["/usr/bin/chromium", "/usr/bin/chromedriver"];
    if BINARIES.iter().all(|b| std::path::Path::new(b).is_file()) {
        return Ok(());
    }
    let install = "apt-get update && apt-get install -y chromium chromium-driver";
    apt_install(&anyhow::anyhow!("chromium or chromium-driver is not installed"), install).await?;
    match BINARIES.iter().find(|b| !std::path::Path::new(b).is_file()) {
        Some(missing) => bail!("{missing} still missing after `{install}`"),
        None => Ok(()),
    }
}

/// Runs `command` (an apt-get install) as root, or fails naming `missing`
/// and the command to run.
pub(crate) async fn apt_install(missing: &anyhow::Error, command: &str) -> Result<()> {
    let is_root = nix::unistd::geteuid().is_root();
    let has_apt = find_on_path("apt-get").is_some();
    if !(is_root && has_apt) {
        bail!("{missing:#}\nrun as root: `{command}`");
    }
    println!("{missing:#}\nInstalling with `{command}`…");
    let status = Command::new("sh")
        .args(["-c", command])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .await
        .context("running apt-get")?;
    if !status.success() {
        bail!("`{command}` failed with {status}");
    }
    Ok(())
}

/// Like `which`: the first executable file called `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        candidate.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}
