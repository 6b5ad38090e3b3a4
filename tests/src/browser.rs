//! A real browser for the console's tests: Debian's headless Chromium,
//! driven over WebDriver (its chromedriver) with fantoccini. Never a
//! browser a tool downloads; `cargo xtask test` installs the Debian
//! packages when they are missing.

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One headless Chromium with a fresh profile, and its driver.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempdir::Profile,
}

mod tempdir {
    /// A fresh `--user-data-dir`, removed at the end.
    pub struct Profile(pub std::path::PathBuf);

    impl Profile {
        pub fn new() -> std::io::Result<Self> {
            let dir = std::env::temp_dir().join(format!("ordermesh-chromium-{:08x}", rand::random::<u32>()));
            std::fs::create_dir_all(&dir)?;
            Ok(Self(dir))
        }
    }

    impl Drop for Profile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of 1400×900.
    pub async fn start() -> Result<Self> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(binary).exists() {
                bail!("{binary} is missing: `cargo xtask test` installs Debian's chromium and chromium-driver");
            }
        }
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let profile = tempdir::Profile::new()?;
        // Without the networking flags Chromium keeps trying to reach
        // Google's hosts, which this machine's closed network refuses.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            "--window-size=1400,900",
        ];
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.0.display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::rustls()
                .context("TLS set-up of the WebDriver client")?
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                // chromedriver takes a moment to listen.
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => bail!("no WebDriver session from chromedriver on port {port} within 30 s: {e}"),
            }
        };
        Ok(Self { client, driver, _profile: profile })
    }

    pub async fn open(&self, url: &str) -> Result<()> {
        self.client.goto(url).await.with_context(|| format!("opening {url}"))
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.client.execute(script, args).await.context("running a script in the page")
    }

    /// Polls `script` until it returns something truthy, for at most
    /// `timeout`; the error says what was awaited and what was last seen.
    pub async fn wait_for(&self, what: &str, script: &str, args: Vec<Value>, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.eval(script, args.clone()).await {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => value,
                Err(e) => Value::String(format!("{e:#}")),
            };
            if Instant::now() >= deadline {
                bail!("waited {timeout:?} for {what}; last seen: {last}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        let element = self.client.find(Locator::Css(css)).await.with_context(|| format!("finding {css}"))?;
        element.click().await.with_context(|| format!("clicking {css}"))
    }

    /// Saves a PNG of the page under `dir`, named `name`.png.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let png = self.client.screenshot().await.context("taking a screenshot")?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}
