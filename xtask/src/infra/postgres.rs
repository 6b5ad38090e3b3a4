//! The stack's PostgreSQL cluster: its OS owner and data area, start, stop,
//! kill, and the databases on it.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::Signal,
    unistd::{Gid, Uid, User},
};
use sqlx::{Connection as _, PgConnection};
use tokio::process::Command;

use super::{
    KILL_TIMEOUT, MAX_SOCKET_DIR_LEN, PORT_RELEASE_TIMEOUT, POSTGRES_READY_TIMEOUT, STOP_TIMEOUT, Stack, StartOutcome,
    describe_output, short_hash,
};
use crate::{
    process::{self, OWNER_ENV, POLL_INTERVAL},
    tools,
};

impl Stack {
    pub fn postgres(&self) -> Postgres<'_> {
        Postgres { stack: self }
    }

    /// Creates a database if it does not exist yet (see [`create_database_on`]).
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let mut connection = self.admin_connection().await?;
        create_database_on(&mut connection, name).await.with_context(|| format!("on {}", self.postgres_url("postgres")))
    }

    /// Drops every replication slot no session streams: on a test stack,
    /// what the log-tailing relays of earlier test runs left behind.
    pub async fn drop_idle_replication_slots(&self) -> Result<()> {
        let mut connection = self.admin_connection().await?;
        let (dropped,): (i64,) = sqlx::query_as(
            "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE NOT active",
        )
        .fetch_one(&mut connection)
        .await
        .context("dropping idle replication slots")?;
        if dropped > 0 {
            println!("dropped {dropped} idle replication slot(s) left by earlier runs");
        }
        Ok(())
    }

    /// Drops a database if it exists, disconnecting its sessions.
    pub async fn drop_database(&self, name: &str) -> Result<()> {
        let mut connection = self.admin_connection().await?;
        // A log-tailing relay's slot keeps its database from being dropped,
        // even with FORCE; its stream may outlive the killed service briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Inactive slots are dropped; the streams of active ones ended,
            // to be dropped on the next pass.
            let pass: Result<(i64,), sqlx::Error> = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE active AND pg_terminate_backend(active_pid))
                      + count(*) FILTER (WHERE NOT active AND pg_drop_replication_slot(slot_name) IS NOT NULL)
                 FROM pg_replication_slots WHERE database = $1",
            )
            .bind(name)
            .fetch_one(&mut connection)
            .await;
            let left = match pass {
                Ok((active,)) => active,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("dropping the replication slots of database {name:?}"));
                }
                // A slot taken up again between the scan and the drop.
                Err(_) => 1,
            };
            if left == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_identifier(name));
        sqlx::raw_sql(&statement)
            .execute(&mut connection)
            .await
            .with_context(|| format!("dropping database {name:?} on {}", self.postgres_url("postgres")))?;
        Ok(())
    }

    async fn admin_connection(&self) -> Result<PgConnection> {
        let url = self.postgres_url("postgres");
        PgConnection::connect(&url).await.with_context(|| {
            format!(
                "connecting to {url} (is the {} stack up? try `cargo xtask infra up --stack {}`)",
                self.name, self.name
            )
        })
    }
}

/// The OS user PostgreSQL runs as: `postgres` when we are root (the server
/// refuses to run as root), otherwise ourselves.
#[derive(Clone, Debug)]
struct ClusterOwner {
    ids: Option<(Uid, Gid)>,
}

impl ClusterOwner {
    fn current() -> Result<ClusterOwner> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(ClusterOwner { ids: None });
        }
        let user = User::from_name("postgres").context("looking up the `postgres` OS user")?.context(
            "no `postgres` OS user exists; install PostgreSQL (apt-get install postgresql) which creates it",
        )?;
        Ok(ClusterOwner { ids: Some((user.uid, user.gid)) })
    }

    fn apply(&self, command: &mut Command) {
        if let Some((uid, gid)) = self.ids {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
    }

    fn apply_std(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt as _;
        if let Some((uid, gid)) = self.ids {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.ids {
            nix::unistd::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown postgres {}", path.display()))?;
        }
        Ok(())
    }

    /// Whether the owner can traverse `dir` (x permission on it and all ancestors).
    async fn can_traverse(&self, dir: &Path) -> Result<bool> {
        let mut command = Command::new("test");
        command.arg("-x").arg(dir);
        self.apply(&mut command);
        let status = command
            .status()
            .await
            .with_context(|| format!("checking whether the postgres user can reach {}", dir.display()))?;
        Ok(status.success())
    }
}

/// The stack's PostgreSQL cluster.
#[derive(Clone, Copy, Debug)]
pub struct Postgres<'a> {
    stack: &'a Stack,
}

impl Postgres<'_> {
    const NAME: &'static str = "postgres";

    /// `<stack dir>/pg`: a directory or a symlink to the fallback location.
    pub fn area_link(self) -> PathBuf {
        self.stack.dir.join("pg")
    }

    /// The real data directory, if the cluster area exists.
    pub fn data_dir(self) -> Option<PathBuf> {
        self.area_link().canonicalize().ok().map(|area| area.join("data"))
    }

    /// Pid of the postmaster, if running: the process we spawned (recognised
    /// by its environment marker), or the one named in the cluster's own
    /// `postmaster.pid` if it really serves this data directory (pids get reused).
    pub fn pid(self) -> Option<u32> {
        if let Some(pid) = self.stack.owned_pid(Self::NAME) {
            return Some(pid);
        }
        let data_dir = self.data_dir()?;
        let postmaster = fs::read_to_string(data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())?;
        (process::is_alive(postmaster) && process::process_cwd(postmaster).as_deref() == Some(&data_dir))
            .then_some(postmaster)
    }

    pub fn is_running(self) -> bool {
        self.pid().is_some()
    }

    /// Spawns the postmaster (after `initdb` on first use) unless it is already running.
    pub async fn start(self) -> Result<StartOutcome> {
        let _lock = process::lock_file_async(&self.stack.start_lock_path(Self::NAME)).await?;
        if let Some(pid) = self.pid() {
            return Ok(StartOutcome::AlreadyRunning { pid });
        }
        let tools = tools::ensure_postgres().await?;
        let owner = ClusterOwner::current()?;
        self.stack.prepare_dirs()?;
        let area = self.prepare_area(&owner).await?;
        let data_dir = area.join("data");
        self.init_cluster(&tools, &owner, &data_dir).await?;
        self.write_config(&owner, &area, &data_dir)?;
        self.reap_orphans(&area, &data_dir).await?;
        process::wait_port_free(self.stack.ports.postgres, PORT_RELEASE_TIMEOUT, "PostgreSQL").await?;

        let mut command = std::process::Command::new(tools.postgres());
        command
            .arg("-D")
            .arg(&data_dir)
            .current_dir(&area)
            .env("HOME", &area)
            .env(OWNER_ENV, self.stack.owner_tag(Self::NAME));
        owner.apply_std(&mut command);
        self.stack.mark_log(Self::NAME, "starting")?;
        let pid = process::spawn_detached(command, &self.stack.log_path(Self::NAME), &self.stack.pid_path(Self::NAME))?;
        Ok(StartOutcome::Spawned { pid })
    }

    /// Waits until `SELECT 1` succeeds over TCP.
    pub async fn wait_ready(self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let url = self.stack.postgres_url("postgres");
        loop {
            // Our pid file exists from the spawn on; postmaster.pid only once
            // the server has initialised.
            let spawned = process::read_pid_file(&self.stack.pid_path(Self::NAME)).ok().flatten();
            let pid = self.pid().or(spawned.filter(|pid| process::is_alive(*pid)));
            let Some(pid) = pid else {
                return Err(self.stack.not_ready_error(Self::NAME, spawned, "is not running (exited during startup?)"));
            };
            // Only connect once the postmaster says it is ready: connecting
            // earlier just fills the log with "the database system is starting up".
            let problem = if self.postmaster_status().as_deref() != Some("ready") {
                format!("postmaster status is {:?}", self.postmaster_status().unwrap_or_else(|| "unknown".into()))
            } else {
                match tokio::time::timeout(Duration::from_secs(5), select_one(&url)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(error)) => format!("{url}: {error:#}"),
                    Err(_) => format!("{url}: connection attempt timed out"),
                }
            };
            if Instant::now() >= deadline {
                return Err(self.stack.not_ready_error(
                    Self::NAME,
                    Some(pid),
                    &format!("not ready after {timeout:?} ({problem})"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The status line PostgreSQL keeps in `postmaster.pid` (`starting`,
    /// `ready`, `stopping`, ...), as `pg_ctl -w` reads it.
    pub fn postmaster_status(self) -> Option<String> {
        let lock = fs::read_to_string(self.data_dir()?.join("postmaster.pid")).ok()?;
        lock.lines().nth(7).map(|status| status.trim().to_owned())
    }

    /// `pg_ctl stop -m fast`, waiting for the postmaster to exit.
    pub async fn stop(self) -> Result<()> {
        let (Some(pid), Some(data_dir)) = (self.pid(), self.data_dir()) else {
            return process::remove_pid_file(&self.stack.pid_path(Self::NAME));
        };
        let tools = tools::locate_postgres()?;
        let owner = ClusterOwner::current()?;
        let mut command = Command::new(tools.pg_ctl());
        command
            .arg("stop")
            .arg("-D")
            .arg(&data_dir)
            .args(["-m", "fast", "-w", "-t"])
            .arg(STOP_TIMEOUT.as_secs().to_string());
        owner.apply(&mut command);
        let output = command.output().await.context("running pg_ctl stop")?;
        if !output.status.success() && process::is_alive(pid) {
            bail!("pg_ctl stop -D {} failed: {}", data_dir.display(), describe_output(&output));
        }
        if !process::wait_for_exit(&[pid], STOP_TIMEOUT).await {
            bail!("postgres (pid {pid}) still running {STOP_TIMEOUT:?} after pg_ctl stop");
        }
        self.stack.mark_log(Self::NAME, "stopped")?;
        process::remove_pid_file(&self.stack.pid_path(Self::NAME))
    }

    /// Simulates a crash: SIGKILL to the postmaster's group, then to every
    /// backend (backends are session leaders of their own, so the group kill
    /// misses them), and waits until all are gone so a restart can attach to
    /// the shared memory again. `Ok(false)` if no postgres process was found.
    pub async fn kill(self) -> Result<bool> {
        let mut killed = Vec::new();
        if let Some(pid) = self.pid() {
            process::signal_group(pid, Signal::SIGKILL)?;
            process::signal_process(pid, Signal::SIGKILL)?;
            killed.push(pid);
        }
        if let Some(data_dir) = self.data_dir() {
            // Look for backends only after the postmaster is dead, so it cannot fork new ones.
            process::wait_for_exit(&killed, KILL_TIMEOUT).await;
            for pid in cluster_processes(&data_dir) {
                process::signal_process(pid, Signal::SIGKILL)?;
                killed.push(pid);
            }
        }
        if !process::wait_for_exit(&killed, KILL_TIMEOUT).await {
            let alive: Vec<u32> = killed.into_iter().filter(|pid| process::is_alive(*pid)).collect();
            bail!("postgres processes {alive:?} still alive {KILL_TIMEOUT:?} after SIGKILL");
        }
        process::remove_pid_file(&self.stack.pid_path(Self::NAME))?;
        Ok(!killed.is_empty())
    }

    /// Graceful stop (if running), start, wait until ready. Returns the new pid.
    pub async fn restart(self) -> Result<u32> {
        self.stop().await?;
        let outcome = self.start().await?;
        self.wait_ready(POSTGRES_READY_TIMEOUT).await?;
        Ok(outcome.pid())
    }

    /// Creates (once) the directory holding `data/` and `socket/`, choosing a
    /// location the `postgres` user can reach. Returns its canonical path.
    async fn prepare_area(self, owner: &ClusterOwner) -> Result<PathBuf> {
        let link = self.area_link();
        match fs::symlink_metadata(&link) {
            Ok(meta) if meta.file_type().is_symlink() => {
                // The symlink records a fallback location; recreate its target if
                // /var/tmp was cleaned.
                let target = fs::read_link(&link).with_context(|| format!("reading symlink {}", link.display()))?;
                if !target.is_dir() {
                    create_owned_dir(&target, owner)?;
                }
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!("{} exists but is neither a directory nor a symlink", link.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.stack.dir)
                    .with_context(|| format!("creating {}", self.stack.dir.display()))?;
                if owner.ids.is_none() || owner.can_traverse(&self.stack.dir).await? {
                    create_owned_dir(&link, owner)?;
                } else {
                    // E.g. the repository is checked out under a root-only temp dir in CI.
                    let fallback = fallback_area(&self.stack.repo_root, &self.stack.name);
                    create_owned_dir(&fallback, owner)?;
                    let parent = fallback.parent().unwrap_or(Path::new("/"));
                    if !owner.can_traverse(parent).await? {
                        bail!(
                            "the postgres user can reach neither {} nor {}; make one of them traversable (chmod o+x)",
                            self.stack.dir.display(),
                            parent.display()
                        );
                    }
                    std::os::unix::fs::symlink(&fallback, &link)
                        .with_context(|| format!("symlinking {} -> {}", link.display(), fallback.display()))?;
                }
            }
            Err(error) => {
                return Err(error).with_context(|| format!("inspecting {}", link.display()));
            }
        }
        link.canonicalize().with_context(|| format!("resolving {}", link.display()))
    }

    async fn init_cluster(self, tools: &tools::PostgresTools, owner: &ClusterOwner, data_dir: &Path) -> Result<()> {
        if data_dir.join("PG_VERSION").is_file() {
            return Ok(());
        }
        if data_dir.exists() {
            // A previous initdb was interrupted; the directory is ours and unusable.
            fs::remove_dir_all(data_dir)
                .with_context(|| format!("removing half-initialised {}", data_dir.display()))?;
        }
        let mut command = Command::new(tools.initdb());
        command
            .arg("-D")
            .arg(data_dir)
            .args(["--auth=trust", "-U", "postgres", "--no-locale", "--encoding=UTF8"])
            .env("HOME", data_dir.parent().unwrap_or(data_dir));
        owner.apply(&mut command);
        let output = command.output().await.with_context(|| format!("running {}", tools.initdb().display()))?;
        if !output.status.success() {
            bail!("initdb -D {} failed: {}", data_dir.display(), describe_output(&output));
        }
        let conf = data_dir.join("postgresql.conf");
        let mut file =
            OpenOptions::new().append(true).open(&conf).with_context(|| format!("opening {}", conf.display()))?;
        writeln!(
            file,
            "\n# Settings of the ordermesh runner, rewritten on every start.\ninclude_if_exists = 'ordermesh.conf'"
        )
        .with_context(|| format!("writing {}", conf.display()))?;
        Ok(())
    }

    fn write_config(self, owner: &ClusterOwner, area: &Path, data_dir: &Path) -> Result<()> {
        let port = self.stack.ports.postgres;
        let socket_dir = self.socket_dir(area);
        if !socket_dir.is_dir() {
            create_owned_dir(&socket_dir, owner)?;
        }
        // fsync stays on: surviving kill -9 without losing commits is the point.
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             max_connections = 400\n\
             shared_buffers = 128MB\n\
             fsync = on\n\
             synchronous_commit = on\n\
             full_page_writes = on\n\
             logging_collector = off\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n\
             # After a crash, sync the data directory with one syncfs() instead of
             # fsync()ing every file: same guarantee, seconds faster.\n\
             recovery_init_sync_method = syncfs\n\
             # The log-tailing outbox relay (OUTBOX_RELAY=log-tailing) reads the WAL
             # through logical replication, one slot per service database (tests
             # make many). A slot left unread may hold back at most this much WAL;
             # beyond it the slot is invalidated and the relay sweeps what it missed.
             # A relay cut off by the network frees its slot after the timeout.\n\
             wal_level = logical\n\
             max_replication_slots = 100\n\
             max_wal_senders = 100\n\
             max_slot_wal_keep_size = 512MB\n\
             wal_sender_timeout = 15s\n",
            socket = socket_dir.display()
        );
        let path = data_dir.join("ordermesh.conf");
        fs::write(&path, settings).with_context(|| format!("writing {}", path.display()))?;
        owner.chown(&path)
    }

    /// `<area>/socket`, or a short directory under the temp dir when that
    /// path would not fit a unix socket address (108 bytes).
    fn socket_dir(self, area: &Path) -> PathBuf {
        let socket_dir = area.join("socket");
        if socket_dir.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
            return socket_dir;
        }
        std::env::temp_dir().join(format!("ordermesh-{}-{}-pgsock", short_hash(&self.stack.repo_root), self.stack.name))
    }

    /// Kills leftovers of an earlier crash (backends outliving a SIGKILLed
    /// postmaster) and removes a stale `postmaster.pid`, whose pid might
    /// since have been reused by an unrelated process.
    async fn reap_orphans(self, area: &Path, data_dir: &Path) -> Result<()> {
        let orphans = cluster_processes(data_dir);
        for pid in &orphans {
            process::signal_process(*pid, Signal::SIGKILL)?;
        }
        if !process::wait_for_exit(&orphans, KILL_TIMEOUT).await {
            bail!("leftover postgres processes {orphans:?} of {} survive SIGKILL", data_dir.display());
        }
        // Nothing serves this cluster now, so lock files are stale. PostgreSQL
        // would refuse to start if their pid still answered kill(pid, 0),
        // which happens when the pid was reused or is an unreaped zombie.
        let socket = self.socket_dir(area).join(format!(".s.PGSQL.{}", self.stack.ports.postgres));
        let socket_lock = PathBuf::from(format!("{}.lock", socket.display()));
        for stale in [data_dir.join("postmaster.pid"), socket_lock, socket] {
            match fs::remove_file(&stale) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("removing stale {}", stale.display()));
                }
            }
        }
        Ok(())
    }
}

/// Live `postgres` processes whose working directory is `data_dir`: the
/// postmaster and all its backends / auxiliary processes.
fn cluster_processes(data_dir: &Path) -> Vec<u32> {
    process::processes_with_cwd(data_dir)
        .into_iter()
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                exe.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with("postgres"))
            })
        })
        .collect()
}

async fn select_one(url: &str) -> Result<()> {
    let mut connection = PgConnection::connect(url).await.context("connecting")?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut connection).await.context("SELECT 1")?;
    if one != 1 {
        bail!("SELECT 1 returned {one}");
    }
    let _ = connection.close().await;
    Ok(())
}
/// Creates `dir` (and parents) owned by the cluster owner with mode 0700:
/// private to that user, which is what PostgreSQL expects of its own areas.
fn create_owned_dir(dir: &Path, owner: &ClusterOwner) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    owner.chown(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| format!("chmod 700 {}", dir.display()))
}

/// `/var/tmp/ordermesh-<hash of repo path>/<stack>/pg`
fn fallback_area(repo_root: &Path, stack: &str) -> PathBuf {
    PathBuf::from("/var/tmp").join(format!("ordermesh-{}", short_hash(repo_root))).join(stack).join("pg")
}
/// Creates database `name` on the server `admin` is connected to, unless it
/// exists. Names are quoted, so SQL keywords such as `order` work; somebody
/// else creating it in between is what we wanted, not an error.
pub async fn create_database_on(admin: &mut sqlx::PgConnection, name: &str) -> Result<()> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut *admin)
        .await
        .with_context(|| format!("checking whether database {name:?} exists"))?;
    if exists.is_some() {
        return Ok(());
    }
    let statement = format!("CREATE DATABASE {}", quote_identifier(name));
    match sqlx::raw_sql(&statement).execute(&mut *admin).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating database {name:?}")),
    }
}

/// `"name"` with embedded quotes doubled.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("order"), "\"order\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
