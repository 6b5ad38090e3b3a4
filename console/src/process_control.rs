//! Kill, stop and restart a component through the local runner that owns
//! it (`xtask --stack <stack> kill|stop|restart <name>`), so the console
//! controls processes exactly as a developer's terminal does. A deployment
//! the runner does not own (compose) has no runner: every action is
//! refused with the reason.

use crate::config::{INFRASTRUCTURE, RunnerConfig, SERVICES};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A restart waits until the component is ready (60 s for a service).
const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL, like a crash.
    Kill,
    /// SIGTERM, a graceful stop.
    Stop,
    /// Stop if running, start, wait until ready.
    Restart,
}

impl std::str::FromStr for Action {
    type Err = ControlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kill" => Ok(Action::Kill),
            "stop" => Ok(Action::Stop),
            "restart" => Ok(Action::Restart),
            other => Err(ControlError::UnknownAction(other.to_owned())),
        }
    }
}

impl Action {
    fn subcommand(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no component {0:?}: expected one of order, stock, payment, shipping, email, loyalty, postgres, rabbitmq, kafka"
    )]
    UnknownComponent(String),
    #[error("no action {0:?}: expected kill, stop or restart")]
    UnknownAction(String),
    #[error("{0}")]
    NotOwned(String),
    #[error("{0} is already being acted on; wait for that to finish")]
    Busy(String),
    #[error("the runner failed to {action} {component}: {output}")]
    Failed { action: &'static str, component: String, output: String },
}

#[derive(Clone)]
pub struct ProcessControl {
    runner: Option<RunnerConfig>,
    busy: Arc<Mutex<BTreeSet<String>>>,
}

/// Why the buttons are disabled on a deployment the runner does not own.
pub const NOT_OWNED: &str = "this console does not own the processes (CONSOLE_RUNNER is not set: a deployment such as \
                             docker compose is controlled by its own tools)";

impl ProcessControl {
    pub fn new(runner: Option<RunnerConfig>) -> Self {
        Self { runner, busy: Arc::default() }
    }

    /// `None` when actions can be taken; otherwise why not.
    pub fn unavailable_reason(&self) -> Option<&'static str> {
        self.runner.is_none().then_some(NOT_OWNED)
    }

    pub async fn act(&self, component: &str, action: Action) -> Result<String, ControlError> {
        if !SERVICES.contains(&component) && !INFRASTRUCTURE.contains(&component) {
            return Err(ControlError::UnknownComponent(component.to_owned()));
        }
        let runner = self.runner.as_ref().ok_or_else(|| ControlError::NotOwned(NOT_OWNED.to_owned()))?;
        let _claim = self.claim(component)?;
        let mut command = tokio::process::Command::new(&runner.program);
        command
            .args(["--stack", &runner.stack, action.subcommand(), component])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        tracing::info!(component, action = action.subcommand(), stack = %runner.stack, "acting on a component");
        let output = match tokio::time::timeout(ACTION_TIMEOUT, command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(ControlError::NotOwned(format!("cannot run the runner {}: {e}", runner.program.display())));
            }
            Err(_) => {
                return Err(ControlError::Failed {
                    action: action.subcommand(),
                    component: component.to_owned(),
                    output: format!("no answer within {ACTION_TIMEOUT:?}"),
                });
            }
        };
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
            .trim()
            .to_owned();
        if output.status.success() {
            Ok(text)
        } else {
            Err(ControlError::Failed { action: action.subcommand(), component: component.to_owned(), output: text })
        }
    }

    /// One action per component at a time: a kill during a restart would
    /// race the runner's own start.
    fn claim(&self, component: &str) -> Result<Claim, ControlError> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(component.to_owned()) {
            return Err(ControlError::Busy(component.to_owned()));
        }
        Ok(Claim { busy: self.busy.clone(), component: component.to_owned() })
    }
}

struct Claim {
    busy: Arc<Mutex<BTreeSet<String>>>,
    component: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.component);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_names_and_unowned_deployments_are_refused_with_the_reason() {
        let control = ProcessControl::new(None);
        assert!(matches!(control.act("mysql", Action::Kill).await, Err(ControlError::UnknownComponent(_))));
        assert!(matches!(control.act("email", Action::Kill).await, Err(ControlError::NotOwned(_))));
        assert!("explode".parse::<Action>().is_err());
    }

    #[tokio::test]
    async fn the_runner_is_asked_with_the_stack_and_its_failure_is_reported() {
        let control = ProcessControl::new(Some(RunnerConfig { program: "/bin/echo".into(), stack: "test".into() }));
        assert_eq!(control.act("email", Action::Stop).await.unwrap(), "--stack test stop email");
        let failing = ProcessControl::new(Some(RunnerConfig { program: "/bin/false".into(), stack: "dev".into() }));
        assert!(matches!(failing.act("kafka", Action::Kill).await, Err(ControlError::Failed { .. })));
    }

    #[test]
    fn one_action_at_a_time_per_component() {
        let control = ProcessControl::new(None);
        let claim = control.claim("email").unwrap();
        assert!(matches!(control.claim("email"), Err(ControlError::Busy(_))));
        assert!(control.claim("stock").is_ok());
        drop(claim);
        assert!(control.claim("email").is_ok());
    }
}
