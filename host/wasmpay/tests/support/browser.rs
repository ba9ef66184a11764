//! A real browser for the console's test: Debian's headless Chromium driven through its
//! ChromeDriver over the W3C WebDriver protocol (JSON over HTTP), with nothing between.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};

/// How long one WebDriver command may take.
const COMMAND_BOUND: Duration = Duration::from_secs(30);
/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A ChromeDriver process and one session of a headless Chromium; both end when dropped,
/// the test passed or not.
pub struct Browser {
    driver: Child,
    session: String,
}

impl Drop for Browser {
    /// Kills the driver's process group: Chromium and its helpers are in it, and outlive the
    /// driver otherwise (each left polling a console whose node is gone).
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts `chromedriver` on a free port and a headless Chromium session; panics, never
    /// skips, when either is missing (`.ci/run` installs Debian's `chromium-driver`).
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            // A group of its own, which Chromium joins: dropping the browser kills it whole.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed: .ci/run installs it");
        let mut browser = Browser { driver, session: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        while browser.call(Method::GET, "/status", None).await.is_err() {
            assert!(started.elapsed() < COMMAND_BOUND, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The flags the machine needs: no sandbox as root, and no background connections to
        // hosts this closed network refuses.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1800",
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let session = browser.call(Method::POST, "/session", Some(capabilities)).await.expect("a Chromium session");
        let id = session["sessionId"].as_str().expect("a session id").to_owned();
        browser.session = format!("{}/session/{id}", browser.session);
        browser
    }

    /// One WebDriver command; its `value`, or the driver's error.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.session);
        let (status, text) = wasmpay_node::client::http_call_within(method, &url, "", body, COMMAND_BOUND, None)
            .await
            .map_err(|error| error.to_string())?;
        let answer: Value = serde_json::from_str(&text).map_err(|error| format!("{error}: {text}"))?;
        if status.is_success() { Ok(answer["value"].clone()) } else { Err(answer["value"].to_string()) }
    }

    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.call(method, path, body).await.unwrap_or_else(|error| panic!("WebDriver {path}: {error}"))
    }

    /// Opens `url`.
    pub async fn go(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn element(&self, css: &str) -> String {
        let found = self.command(Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}")).to_owned()
    }

    /// Types `text` into the element `css` selects, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.command(Method::POST, &format!("/element/{element}/value"), Some(json!({"text": text}))).await;
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.command(Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    /// What the page's `script` (a function body) returns.
    pub async fn script(&self, script: &str) -> Value {
        self.command(Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Waits until `script` returns a value other than `null` or `false`, and returns it.
    pub async fn wait_for(&self, what: &str, script: &str, bound: Duration) -> Value {
        let started = Instant::now();
        loop {
            let value = self.script(script).await;
            if !(value.is_null() || value == Value::Bool(false)) {
                return value;
            }
            let status = self.script("return document.querySelector('#status')?.textContent").await;
            assert!(started.elapsed() < bound, "the console never showed {what} (status line: {status})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves what the browser shows as a PNG at `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.command(Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}
