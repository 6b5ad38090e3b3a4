//! The stack's RabbitMQ node: its environment and configuration, start,
//! stop, kill, and the repair of quorum queues an unclean stop broke.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::Command,
};

use super::{PORT_RELEASE_TIMEOUT, RABBITMQ_READY_TIMEOUT, STOP_TIMEOUT, Stack, StartOutcome, describe_output};
use crate::{
    process::{self, OWNER_ENV, POLL_INTERVAL},
    tools,
};

impl Stack {
    pub fn rabbitmq(&self) -> RabbitMq<'_> {
        RabbitMq { stack: self }
    }
}

/// The stack's RabbitMQ node.
#[derive(Clone, Copy, Debug)]
pub struct RabbitMq<'a> {
    stack: &'a Stack,
}

impl RabbitMq<'_> {
    const NAME: &'static str = "rabbitmq";

    /// The node's home: config files, Erlang cookie, mnesia, logs.
    pub fn dir(self) -> PathBuf {
        self.stack.dir.join("rabbitmq")
    }

    /// `ordermesh-<stack>@localhost`
    pub fn node_name(self) -> String {
        format!("ordermesh-{}@localhost", self.stack.name)
    }

    pub fn pid(self) -> Option<u32> {
        self.stack.owned_pid(Self::NAME)
    }

    pub fn is_running(self) -> bool {
        self.pid().is_some()
    }

    /// Environment shared by `rabbitmq-server` and `rabbitmqctl`: everything
    /// points into the node's own directory so `/etc/rabbitmq/*` (which names
    /// the system node) never leaks in, and HOME makes both agree on the cookie.
    pub fn env(self) -> Vec<(String, String)> {
        let dir = self.dir();
        let in_dir = |file: &str| dir.join(file).display().to_string();
        let ports = self.stack.ports;
        vec![
            ("HOME".into(), dir.display().to_string()),
            ("RABBITMQ_NODENAME".into(), self.node_name()),
            ("RABBITMQ_NODE_IP_ADDRESS".into(), "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT".into(), ports.amqp.to_string()),
            ("RABBITMQ_DIST_PORT".into(), ports.rabbit_dist.to_string()),
            ("RABBITMQ_MNESIA_BASE".into(), in_dir("mnesia")),
            ("RABBITMQ_LOG_BASE".into(), in_dir("log")),
            ("RABBITMQ_PID_FILE".into(), in_dir("beam.pid")),
            ("RABBITMQ_CONFIG_FILE".into(), in_dir("rabbitmq.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE".into(), in_dir("advanced.config")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), in_dir("enabled_plugins")),
            ("RABBITMQ_CONF_ENV_FILE".into(), in_dir("rabbitmq-env.conf")),
            // Keep distribution on loopback, like the system node.
            ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".into(), "-kernel inet_dist_use_interface {127,0,0,1}".into()),
            ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
        ]
    }

    fn command(self, program: &Path) -> Command {
        let mut command = Command::new(program);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RABBITMQ_") {
                command.env_remove(name);
            }
        }
        command
            .env_remove("ERL_FLAGS")
            .env_remove("ERL_AFLAGS")
            .env_remove("ERL_ZFLAGS")
            .envs(self.env())
            .current_dir(self.dir());
        command
    }

    fn write_config(self) -> Result<()> {
        let dir = self.dir();
        for sub in [dir.clone(), dir.join("mnesia"), dir.join("log")] {
            fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        let ports = self.stack.ports;
        let mut config = format!(
            "# Written by the ordermesh runner on every start.\n\
             listeners.tcp.default = 127.0.0.1:{amqp}\n\
             # loopback_users stays at its default: guest/guest works on 127.0.0.1 only.\n\
             log.console = true\n\
             log.console.level = info\n\
             log.console.use_colors = off\n\
             log.file = false\n",
            amqp = ports.amqp
        );
        let plugins = match ports.rabbit_management {
            Some(port) => {
                config.push_str(&format!("management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {port}\n"));
                "[rabbitmq_management].\n"
            }
            None => "[].\n",
        };
        let files = [
            ("rabbitmq.conf", config.as_str()),
            ("enabled_plugins", plugins),
            ("advanced.config", "[].\n"),
            (
                "rabbitmq-env.conf",
                "# Intentionally empty: replaces /etc/rabbitmq/rabbitmq-env.conf, which names the system node.\n",
            ),
        ];
        for (file, contents) in files {
            let path = dir.join(file);
            fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Spawns `rabbitmq-server` unless the node is already running.
    pub async fn start(self) -> Result<StartOutcome> {
        let _lock = process::lock_file_async(&self.stack.start_lock_path(Self::NAME)).await?;
        if let Some(pid) = self.pid() {
            return Ok(StartOutcome::AlreadyRunning { pid });
        }
        let tools = tools::ensure_rabbitmq().await?;
        process::wait_port_free(self.stack.ports.amqp, PORT_RELEASE_TIMEOUT, "RabbitMQ").await?;
        self.stack.prepare_dirs()?;
        self.write_config()?;
        let mut command = self.command(&tools.server()).into_std();
        command.env(OWNER_ENV, self.stack.owner_tag(Self::NAME));
        self.stack.mark_log(Self::NAME, "starting")?;
        let pid = process::spawn_detached(command, &self.stack.log_path(Self::NAME), &self.stack.pid_path(Self::NAME))?;
        Ok(StartOutcome::Spawned { pid })
    }

    /// Waits for the AMQP listener to greet (it opens last during boot), then
    /// confirms with `rabbitmqctl await_startup`.
    pub async fn wait_ready(self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let address = SocketAddr::from(([127, 0, 0, 1], self.stack.ports.amqp));
        loop {
            let Some(pid) = self.pid() else {
                return Err(self.stack.not_ready_error(Self::NAME, None, "is not running (exited during startup?)"));
            };
            if amqp_greets(address).await.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(self.stack.not_ready_error(
                    Self::NAME,
                    Some(pid),
                    &format!("does not speak AMQP on {address} after {timeout:?}"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(10));
        let output = self
            .ctl(&["await_startup", "--timeout", &remaining.as_secs().to_string()], remaining + Duration::from_secs(30))
            .await?;
        if !output.status.success() {
            return Err(self.stack.not_ready_error(
                Self::NAME,
                self.pid(),
                &format!("failed `rabbitmqctl -n {} await_startup`: {}", self.node_name(), describe_output(&output)),
            ));
        }
        Ok(())
    }

    /// Runs `rabbitmqctl -n <node> <args>` with the node's environment.
    pub async fn ctl(self, args: &[&str], timeout: Duration) -> Result<Output> {
        let tools = tools::locate_rabbitmq()?;
        let node = self.node_name();
        let mut command = self.command(&tools.ctl());
        command.arg("-n").arg(&node).args(args).kill_on_drop(true);
        let description = format!("rabbitmqctl -n {node} {}", args.join(" "));
        tokio::time::timeout(timeout, command.output())
            .await
            .map_err(|_| anyhow!("`{description}` did not finish within {timeout:?}"))?
            .with_context(|| format!("running `{description}`"))
    }

    /// `rabbitmqctl shutdown` (stops the node and waits for its OS process),
    /// falling back to SIGTERM.
    pub async fn stop(self) -> Result<()> {
        let Some(pid) = self.pid() else {
            return process::remove_pid_file(&self.stack.pid_path(Self::NAME));
        };
        let shutdown = self.ctl(&["shutdown"], STOP_TIMEOUT).await;
        let graceful = matches!(&shutdown, Ok(output) if output.status.success());
        if !graceful || !process::wait_for_exit(&[pid], Duration::from_secs(30)).await {
            let reason = match shutdown {
                Ok(output) => describe_output(&output),
                Err(error) => format!("{error:#}"),
            };
            eprintln!("rabbitmqctl shutdown did not stop {} ({reason}); sending SIGTERM", self.node_name());
            self.stack.terminate_owned(Self::NAME, Duration::from_secs(30)).await?;
        }
        self.stack.mark_log(Self::NAME, "stopped")?;
        process::remove_pid_file(&self.stack.pid_path(Self::NAME))
    }

    /// Simulates a crash: SIGKILL to the whole group (script, beam.smp,
    /// helpers). `Ok(false)` if the node was not running.
    pub async fn kill(self) -> Result<bool> {
        self.stack.kill_owned(Self::NAME).await
    }

    pub async fn restart(self) -> Result<u32> {
        self.stop().await?;
        let outcome = self.start().await?;
        self.wait_ready(RABBITMQ_READY_TIMEOUT).await?;
        self.repair_quorum_queues().await;
        Ok(outcome.pid())
    }

    /// Where [`RabbitMq::repair_quorum_queues`] notes each repair it made.
    pub fn repairs_log_path(self) -> PathBuf {
        self.stack.log_path(QUORUM_REPAIRS_LOG)
    }

    /// Re-attaches quorum queues whose Raft server RabbitMQ 3.10 lost in an
    /// unclean stop (xtask/src/rabbitmq/repair_quorum_queues.erl): without
    /// it, a queue SIGKILLed young never gets a leader again and confirms
    /// nothing. Run after each start this runner makes; a repair is noted
    /// in `logs/rabbitmq-repairs.log` (the chaos report names each as a
    /// broker defect). Failing to run it is reported, never fatal: the
    /// broker works for every queue it did not lose.
    pub async fn repair_quorum_queues(self) {
        let script: String = REPAIR_QUORUM_QUEUES
            .lines()
            .filter(|line| !line.trim_start().starts_with("%%"))
            .collect::<Vec<_>>()
            .join("\n");
        let outcome = match self.ctl(&["eval", &script], Duration::from_secs(60)).await {
            Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            Ok(output) => {
                eprintln!("rabbitmq: the quorum-queue repair failed: {}", describe_output(&output));
                return;
            }
            Err(error) => {
                eprintln!("rabbitmq: the quorum-queue repair did not run: {error:#}");
                return;
            }
        };
        if outcome == "[]" {
            return;
        }
        let outcome = outcome.split_whitespace().collect::<Vec<_>>().join(" ");
        eprintln!("rabbitmq: re-attached quorum queues lost in an unclean stop: {outcome}");
        let line = format!("{} {outcome}\n", chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.repairs_log_path())
            .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
        if let Err(error) = written {
            eprintln!("rabbitmq: noting the repair in {}: {error}", self.repairs_log_path().display());
        }
    }
}

/// The log of [`RabbitMq::repair_quorum_queues`], beside the broker's.
pub const QUORUM_REPAIRS_LOG: &str = "rabbitmq-repairs";

const REPAIR_QUORUM_QUEUES: &str = include_str!("../rabbitmq/repair_quorum_queues.erl");

/// Opens an AMQP 0-9-1 connection far enough to receive `Connection.Start`.
async fn amqp_greets(address: SocketAddr) -> Result<()> {
    let attempt = async {
        let mut stream = TcpStream::connect(address).await.context("connecting")?;
        stream.write_all(b"AMQP\x00\x00\x09\x01").await.context("sending protocol header")?;
        let mut frame_header = [0_u8; 7];
        stream.read_exact(&mut frame_header).await.context("reading Connection.Start")?;
        // Frame type 1 (method) on channel 0: the broker's Connection.Start.
        if frame_header[0] != 1 || frame_header[1..3] != [0, 0] {
            bail!("unexpected AMQP greeting {frame_header:?}");
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt).await.map_err(|_| anyhow!("AMQP greeting timed out"))?
}
