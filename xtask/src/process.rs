//! Detached child processes: spawning into their own process group, pid files,
//! signals and `/proc` inspection.
//!
//! Every long-running process the runner owns is spawned with `process_group(0)`
//! so that a single `killpg` takes the process and all of its helpers (the
//! RabbitMQ start script, `beam.smp`, `erl_child_setup`, ...) down at once.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    errno::Errno,
    sys::signal::{self, Signal},
    unistd::Pid,
};

/// Environment variable stamped on every process the runner spawns. Its value
/// identifies the owner (stack directory + component), so a pid file that
/// points to a recycled pid is never mistaken for our process.
pub const OWNER_ENV: &str = "ORDERMESH_PROCESS";

/// How often waiting loops look again.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Spawns `command` detached from the caller: own process group, stdin closed,
/// stdout and stderr appended to `log_path`, pid written to `pid_path`.
/// Returns the pid (which is also the process group id).
pub fn spawn_detached(mut command: Command, log_path: &Path, pid_path: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt as _;

    for path in [log_path, pid_path] {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating directory {}", parent.display()))?;
        }
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("opening log file {}", log_path.display()))?;
    let log_for_stderr =
        log.try_clone().with_context(|| format!("duplicating log file handle {}", log_path.display()))?;
    command.stdin(Stdio::null()).stdout(log).stderr(log_for_stderr).process_group(0);

    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.spawn().with_context(|| format!("spawning {program} (log: {})", log_path.display()))?;
    let pid = child.id();
    fs::write(pid_path, format!("{pid}\n")).with_context(|| format!("writing pid file {}", pid_path.display()))?;

    // Reap the child when it exits so a long-lived caller (the test process)
    // does not accumulate zombies, which would still answer `kill(pid, 0)`,
    // and note how it ended in its log: a crash by signal prints nothing of
    // its own. If the caller exits first, the child is simply re-parented.
    let log_path = log_path.to_path_buf();
    std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            if let Ok(status) = child.wait()
                && let Ok(mut log) = OpenOptions::new().append(true).open(&log_path)
            {
                let _ = writeln!(log, "===== ordermesh runner: pid {pid} exited ({status}) =====");
            }
        })
        .context("spawning reaper thread")?;
    Ok(pid)
}

/// An exclusive `flock` on a lock file, released on drop. Serialises
/// "is it running? otherwise spawn" between threads and processes (parallel
/// tests all calling `start_infra`).
#[derive(Debug)]
pub struct StartLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Blocks until the lock at `path` is held.
pub fn lock_file(path: &Path) -> Result<StartLock> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating directory {}", parent.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(StartLock { _lock: lock })
}

/// [`lock_file`] without blocking the async runtime.
pub async fn lock_file_async(path: &Path) -> Result<StartLock> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || lock_file(&path)).await.context("lock task panicked")?
}

/// Reads a pid file; `None` if it does not exist or is empty.
pub fn read_pid_file(path: &Path) -> Result<Option<u32>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            let pid = text.parse::<u32>().with_context(|| format!("pid file {} holds {text:?}", path.display()))?;
            Ok(Some(pid))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading pid file {}", path.display())),
    }
}

/// Removes a pid file, ignoring a missing one.
pub fn remove_pid_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("removing pid file {}", path.display())),
    }
}

/// True if `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|fields| fields.into_iter().next())
        .is_some_and(|state| !matches!(state.as_str(), "Z" | "X" | "x"))
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T` for stopped by a
/// signal, `t` by a tracer, `Z`, …); `None` if there is no such process.
pub fn process_state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// Whether `pid` is stopped (SIGSTOP or a tracer): alive, but answering
/// nothing on purpose.
pub fn is_stopped(pid: u32) -> bool {
    matches!(process_state(pid), Some('T' | 't'))
}

/// The command line of `pid`, one string per argument.
pub fn process_args(pid: u32) -> Option<Vec<String>> {
    let raw = read_proc_nul_list(pid, "cmdline")?;
    Some(
        raw.split(|byte| *byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

/// `/proc/<pid>/<file>` for a NUL-separated list (`cmdline`, `environ`).
///
/// While a process is replacing its image (`exec`) both read as empty for a
/// moment: the parent of a spawned child is resumed before the kernel has
/// laid out the new arguments, and start scripts such as `rabbitmq-server`
/// exec several times while booting. An empty read is therefore looked at
/// again, for up to 200 ms, while the process lives.
fn read_proc_nul_list(pid: u32, file: &str) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        match fs::read(format!("/proc/{pid}/{file}")) {
            Ok(raw) if raw.is_empty() && Instant::now() < deadline && is_alive(pid) => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(raw) => return Some(raw),
            Err(_) => return None,
        }
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (state, ppid,
/// pgrp, …). The name is parenthesised and may itself contain spaces or
/// parentheses: the fields start after the last ')'.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let end = stat.rfind(')')?;
    Some(stat[end + 1..].split_whitespace().map(str::to_owned).collect())
}

/// Every live process for which `keep` holds.
fn live_processes(keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| keep(*pid) && is_alive(*pid))
        .collect()
}

/// Live processes whose process group is `pgid` (the leader included).
/// A group's leader can die before the rest of it: RabbitMQ's start script
/// leads a group in which `beam.smp` holds the listening socket.
pub fn group_members(pgid: u32) -> Vec<u32> {
    live_processes(|pid| stat_fields(pid).and_then(|fields| fields.get(2)?.parse::<u32>().ok()) == Some(pgid))
}

/// Waits until 127.0.0.1:`port` can be bound, for at most `timeout`, before
/// `server` is started on it: every server here gives up at once on a taken
/// port. It is taken for a while by a killed predecessor's socket not yet
/// released, and now and then by another program's connection, since the
/// stacks' ports lie in Linux's ephemeral range.
pub async fn wait_port_free(port: u16, timeout: Duration, server: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "port {port} is still taken after {timeout:?}; cannot start {server} (see `ss -tanp | grep :{port}`)"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The current working directory of `pid`, if readable.
pub fn process_cwd(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// True if the environment of `pid` contains exactly `NAME=value`. Taking
/// our own process for a stranger leaves it running unkilled, holding its
/// port, hence the re-read of an environment caught mid-`exec`.
pub fn process_has_env(pid: u32, name: &str, value: &str) -> bool {
    let wanted = format!("{name}={value}");
    read_proc_nul_list(pid, "environ")
        .is_some_and(|environ| environ.split(|byte| *byte == 0).any(|entry| entry == wanted.as_bytes()))
}

/// All live processes whose working directory is `dir` (compared after
/// canonicalisation). PostgreSQL backends chdir into the data directory and
/// become session leaders, so this is how stray backends are found after the
/// postmaster was killed.
pub fn processes_with_cwd(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    live_processes(|pid| process_cwd(pid).is_some_and(|cwd| cwd == dir))
}

/// Sends `signal` to the process group led by `pgid`. A group that no longer
/// exists is not an error.
pub fn signal_group(pgid: u32, signal: Signal) -> Result<()> {
    let pgid = to_nix_pid(pgid)?;
    match signal::killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("sending {signal} to process group {pgid}")),
    }
}

/// Sends `signal` to one process. A process that no longer exists is not an error.
pub fn signal_process(pid: u32, signal: Signal) -> Result<()> {
    let nix_pid = to_nix_pid(pid)?;
    match signal::kill(nix_pid, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("sending {signal} to process {pid}")),
    }
}

fn to_nix_pid(pid: u32) -> Result<Pid> {
    let raw = i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))?;
    if raw <= 1 {
        // killpg(0|1) would hit our own group or everything: never do that.
        bail!("refusing to signal pid {raw}");
    }
    Ok(Pid::from_raw(raw))
}

/// Waits until every pid in `pids` is gone. Returns false on timeout.
pub async fn wait_for_exit(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|pid| !is_alive(*pid)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The last `max_lines` lines of a log file (best effort, for error messages).
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    if file.seek(SeekFrom::Start(length.saturating_sub(MAX_BYTES))).is_err() {
        return format!("(could not read {})", path.display());
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return format!("(could not read {})", path.display());
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    format!("--- last {} lines of {} ---\n{}", lines.len() - start, path.display(), lines[start..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spawned_process_is_recognised_as_ours_at_once() {
        let dir = std::env::temp_dir().join(format!("ordermesh-spawn-test-{}", std::process::id()));
        let (log, pid_file) = (dir.join("log"), dir.join("pid"));
        let mut misses = Vec::new();
        for i in 0..100 {
            let mut command = Command::new("sleep");
            command.arg("0.2").env(OWNER_ENV, "spawn-test");
            let pid = spawn_detached(command, &log, &pid_file).unwrap();
            let alive = is_alive(pid);
            let ours = process_has_env(pid, OWNER_ENV, "spawn-test");
            let recorded = read_pid_file(&pid_file).unwrap();
            if !(alive && ours && recorded == Some(pid)) {
                misses.push(format!("#{i} pid {pid}: alive {alive} ours {ours} recorded {recorded:?}"));
            }
        }
        let _ = fs::remove_dir_all(&dir);
        assert!(misses.is_empty(), "{misses:#?}");
    }

    #[test]
    fn own_process_is_alive_and_bogus_pid_is_not() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX - 1));
    }

    #[test]
    fn a_stopped_process_is_told_from_a_running_one() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(!is_stopped(pid));
        assert_eq!(process_args(pid).unwrap(), ["sleep", "30"]);
        signal_process(pid, Signal::SIGSTOP).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_stopped(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(process_state(pid), Some('T'));
        assert!(is_alive(pid), "a stopped process is alive");
        signal_process(pid, Signal::SIGKILL).unwrap();
        let _ = child.wait();
        assert_eq!(process_state(pid), None);
        assert!(!is_stopped(pid));
    }

    #[test]
    fn refuses_to_signal_init_or_own_group() {
        assert!(signal_group(0, Signal::SIGTERM).is_err());
        assert!(signal_group(1, Signal::SIGTERM).is_err());
    }
}
