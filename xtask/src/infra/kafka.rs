//! The stack's Tansu (Kafka API) broker: start, stop, kill, restart when
//! wedged, and its topics.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::{net::TcpStream, process::Command};

use super::{KAFKA_READY_TIMEOUT, PORT_RELEASE_TIMEOUT, Stack, StartOutcome, describe_output};
use crate::{
    kafka_supervisor::KafkaSupervisor,
    process::{self, OWNER_ENV, POLL_INTERVAL},
    tools,
};

impl Stack {
    pub fn kafka(&self) -> Kafka<'_> {
        Kafka { stack: self }
    }
    pub fn kafka_supervisor(&self) -> KafkaSupervisor<'_> {
        KafkaSupervisor::new(self)
    }
}

/// The stack's Tansu broker.
#[derive(Clone, Copy, Debug)]
pub struct Kafka<'a> {
    stack: &'a Stack,
}

impl Kafka<'_> {
    const NAME: &'static str = "kafka";

    pub fn dir(self) -> PathBuf {
        self.stack.dir.join("kafka")
    }

    /// The sqlite file holding all topics.
    pub fn storage_file(self) -> PathBuf {
        self.dir().join("tansu.db")
    }

    /// Kills the broker and deletes everything it stored, then starts it
    /// empty. Tansu's SQLite engine slows down as its file grows (a whole
    /// core for ~10 records/s at ~30 MB), so a throwaway stack that runs
    /// experiment after experiment starts each one from an empty broker.
    pub async fn restart_empty(self) -> Result<()> {
        self.kill().await?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let path = PathBuf::from(format!("{}{suffix}", self.storage_file().display()));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error).with_context(|| format!("removing {}", path.display())),
            }
        }
        self.start().await?;
        self.wait_ready(KAFKA_READY_TIMEOUT).await
    }

    /// `tcp://127.0.0.1:<port>`, the URL form Tansu's CLI takes.
    pub fn broker_url(self) -> String {
        format!("tcp://127.0.0.1:{}", self.stack.ports.kafka)
    }

    pub fn pid(self) -> Option<u32> {
        self.stack.owned_pid(Self::NAME)
    }

    pub fn is_running(self) -> bool {
        self.pid().is_some()
    }

    fn tansu_command(self, tansu: &Path) -> Command {
        tansu_command(tansu, &self.dir())
    }

    /// Spawns `tansu broker` with sqlite storage unless already running.
    pub async fn start(self) -> Result<StartOutcome> {
        let _lock = process::lock_file_async(&self.stack.start_lock_path(Self::NAME)).await?;
        self.start_locked().await
    }

    /// SIGKILLs the broker `pid`, alive but not answering, and starts it
    /// again on the same data file, under the start lock so that no other
    /// start races it. Leaves it alone (`Ok(None)`) if `pid` is no longer
    /// the broker (someone killed or restarted it meanwhile) or is stopped
    /// (frozen on purpose). The new broker advertises what the old one did
    /// (a chaos run's proxy, see [`Stack::with_kafka_advertised_port`]).
    /// Returns the new pid.
    pub async fn restart_unresponsive(self, pid: u32) -> Result<Option<u32>> {
        let _lock = process::lock_file_async(&self.stack.start_lock_path(Self::NAME)).await?;
        if self.pid() != Some(pid) || process::is_stopped(pid) {
            return Ok(None);
        }
        let advertised = process::process_args(pid).and_then(|args| advertised_port(&args));
        self.stack.mark_log(Self::NAME, &format!("the supervisor kills unresponsive (pid {pid})"))?;
        self.kill().await?;
        let stack = match advertised {
            Some(port) if port != self.stack.ports.kafka => self.stack.clone().with_kafka_advertised_port(port),
            _ => self.stack.clone(),
        };
        Ok(Some(stack.kafka().start_locked().await?.pid()))
    }

    /// [`Kafka::start`], the start lock held by the caller.
    async fn start_locked(self) -> Result<StartOutcome> {
        if let Some(pid) = self.pid() {
            return Ok(StartOutcome::AlreadyRunning { pid });
        }
        let tansu = tools::ensure_tansu().await?;
        process::wait_port_free(self.stack.ports.kafka, PORT_RELEASE_TIMEOUT, "Kafka").await?;
        self.stack.prepare_dirs()?;
        fs::create_dir_all(self.dir()).with_context(|| format!("creating {}", self.dir().display()))?;
        let url = self.broker_url();
        let advertised = match self.stack.kafka_advertised_port {
            Some(port) => format!("tcp://127.0.0.1:{port}"),
            None => url.clone(),
        };
        let mut command = self.tansu_command(&tansu);
        // Tansu resolves sqlite:// paths relative to its working directory.
        command
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .env(OWNER_ENV, self.stack.owner_tag(Self::NAME));
        self.stack.mark_log(Self::NAME, KAFKA_START_MARK)?;
        let pid = process::spawn_detached(
            command.into_std(),
            &self.stack.log_path(Self::NAME),
            &self.stack.pid_path(Self::NAME),
        )?;
        Ok(StartOutcome::Spawned { pid })
    }

    /// Waits until the port accepts connections and topics can be listed.
    pub async fn wait_ready(self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let address = SocketAddr::from(([127, 0, 0, 1], self.stack.ports.kafka));
        loop {
            let Some(pid) = self.pid() else {
                return Err(self.stack.not_ready_error(Self::NAME, None, "is not running (exited during startup?)"));
            };
            let probe = async {
                TcpStream::connect(address).await.context("connecting")?;
                self.list_topics().await.map(|_| ())
            };
            let problem = match tokio::time::timeout(Duration::from_secs(10), probe).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => format!("{error:#}"),
                Err(_) => "probe timed out".to_owned(),
            };
            if Instant::now() >= deadline {
                return Err(self.stack.not_ready_error(
                    Self::NAME,
                    Some(pid),
                    &format!("not ready on {address} after {timeout:?}: {problem}"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Existing topics with their partition counts.
    pub async fn list_topics(self) -> Result<Vec<(String, usize)>> {
        let tansu = tools::locate_tansu()?.context("tansu is not installed")?;
        let url = self.broker_url();
        let output = self
            .tansu_command(&tansu)
            .args(["topic", "list", "--broker", &url])
            .kill_on_drop(true)
            .output()
            .await
            .context("running `tansu topic list`")?;
        if !output.status.success() {
            bail!("`tansu topic list --broker {url}` failed: {}", describe_output(&output));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        // Tansu prints the Metadata response's topics as one JSON array line.
        let json_line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with('['))
            .with_context(|| format!("`tansu topic list` printed no JSON array: {stdout}"))?;
        let topics: Vec<serde_json::Value> = serde_json::from_str(json_line)
            .with_context(|| format!("parsing `tansu topic list` output {json_line}"))?;
        Ok(topics
            .iter()
            .filter_map(|topic| {
                let name = topic.get("name")?.as_str()?.to_owned();
                let partitions = topic.get("partitions").and_then(|p| p.as_array()).map_or(0, Vec::len);
                Some((name, partitions))
            })
            .collect())
    }

    /// Creates the topics that do not exist yet; existing ones are left alone
    /// (a differing partition count is reported on stderr, not changed).
    pub async fn create_topics(self, topics: &[(&str, i32)]) -> Result<()> {
        let tansu = tools::locate_tansu()?.context("tansu is not installed")?;
        let url = self.broker_url();
        let existing = self.list_topics().await?;
        for (topic, partitions) in topics {
            if let Some((_, actual)) = existing.iter().find(|(name, _)| name == topic) {
                if i32::try_from(*actual).ok() != Some(*partitions) {
                    eprintln!(
                        "warning: topic {topic} exists with {actual} partitions (wanted {partitions}); left as is"
                    );
                }
                continue;
            }
            let output = self
                .tansu_command(&tansu)
                .args(["topic", "create", topic, "--partitions", &partitions.to_string(), "--broker", &url])
                .kill_on_drop(true)
                .output()
                .await
                .with_context(|| format!("running `tansu topic create {topic}`"))?;
            if !output.status.success() {
                // Lost a race with another creator? Then the topic is there now.
                let now = self.list_topics().await?;
                if !now.iter().any(|(name, _)| name == topic) {
                    bail!(
                        "`tansu topic create {topic} --partitions {partitions} --broker {url}` failed: {}",
                        describe_output(&output)
                    );
                }
            }
        }
        Ok(())
    }

    /// SIGTERM (Tansu shuts down cleanly on it) and wait.
    pub async fn stop(self) -> Result<()> {
        let running = self.is_running();
        self.stack.terminate_owned(Self::NAME, Duration::from_secs(30)).await?;
        if running {
            self.stack.mark_log(Self::NAME, "stopped")?;
        }
        Ok(())
    }

    /// SIGKILL; `Ok(false)` if the broker was not running.
    pub async fn kill(self) -> Result<bool> {
        self.stack.kill_owned(Self::NAME).await
    }

    pub async fn restart(self) -> Result<u32> {
        self.stop().await?;
        let outcome = self.start().await?;
        self.wait_ready(KAFKA_READY_TIMEOUT).await?;
        Ok(outcome.pid())
    }
}

/// What Kafka's log is marked with at each start ([`Stack::mark_log`]):
/// "===== ordermesh runner: starting kafka (unix time …) =====".
pub(crate) const KAFKA_START_MARK: &str = "starting";

/// The port of `--advertised-listener-url tcp://host:port` in a Tansu
/// command line.
fn advertised_port(args: &[String]) -> Option<u16> {
    let url = args.iter().skip_while(|arg| *arg != "--advertised-listener-url").nth(1)?;
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// `tansu` run in `dir`, without the settings Tansu would otherwise take
/// from the environment (and from a .env file in its working directory,
/// which is why that is a directory of its own).
pub fn tansu_command(tansu: &Path, dir: &Path) -> Command {
    let mut command = Command::new(tansu);
    for leaky in [
        "CLUSTER_ID",
        "LISTENER_URL",
        "ADVERTISED_LISTENER_URL",
        "STORAGE_ENGINE",
        "SCHEMA_REGISTRY",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        command.env_remove(leaky);
    }
    command.current_dir(dir);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_broker_keeps_the_port_it_advertised() {
        let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        let tansu = args(&[
            "tansu",
            "broker",
            "--listener-url",
            "tcp://127.0.0.1:23092",
            "--advertised-listener-url",
            "tcp://127.0.0.1:40123",
        ]);
        assert_eq!(advertised_port(&tansu), Some(40123));
        assert_eq!(advertised_port(&args(&["tansu", "broker"])), None);
    }
}
