//! A headless Chromium (Debian's `chromium` and `chromium-driver`) driven through W3C WebDriver on a free
//! loopback port: enough of the protocol for the console's tests (navigate, find, type, click, read,
//! run a script, cookies, screenshots).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::process::{ServerProcess, free_port, require, temp_dir};
use crate::{Error, Result};

const NAME: &str = "chromedriver";
/// WebDriver's key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser window (a WebDriver session) and its driver process.
pub struct Browser {
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    _process: ServerProcess,
}

impl Browser {
    /// A new headless window `width`×`height` px, with its own empty profile.
    pub async fn start(width: u32, height: u32) -> Result<Self> {
        let bin = require(NAME)?;
        require("chromium")?;
        let dir = temp_dir(NAME)?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--port={}", addr.port()))
            .arg("--allowed-ips=127.0.0.1");
        let mut process = ServerProcess::spawn(NAME, cmd, &dir.path().join("chromedriver.log"))?;
        process
            .wait_ready(Duration::from_secs(30), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| failed("an HTTP client", e))?;
        let profile = dir.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-default-apps",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let root = format!("http://{addr}");
        let created = send(
            &http,
            reqwest::Method::POST,
            &format!("{root}/session"),
            Some(caps),
        )
        .await?;
        let id = created["sessionId"]
            .as_str()
            .ok_or_else(|| failed("a session", format!("no session id in {created}")))?;
        Ok(Self {
            base: format!("{root}/session/{id}"),
            http,
            dir,
            _process: process,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        send(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// Resizes the window (e.g. to phone width).
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await
        .map(drop)
    }

    pub async fn url(&self) -> Result<String> {
        let v = self.call(reqwest::Method::GET, "/url", None).await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The first element matching CSS `selector`, if any.
    pub async fn find(&self, selector: &str) -> Result<Option<String>> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await?;
        Ok(found
            .as_array()
            .and_then(|a| a.first())
            .and_then(|e| e[ELEMENT].as_str())
            .map(str::to_string))
    }

    async fn element(&self, selector: &str) -> Result<String> {
        self.find(selector)
            .await?
            .ok_or_else(|| failed("an element", format!("nothing matches {selector}")))
    }

    /// Replaces the text of the input matching `selector`.
    pub async fn type_into(&self, selector: &str, text: &str) -> Result<()> {
        let e = self.element(selector).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .map(drop)
    }

    pub async fn click(&self, selector: &str) -> Result<()> {
        let e = self.element(selector).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// The rendered text of the first element matching `selector` (`None`: no such element).
    pub async fn text(&self, selector: &str) -> Result<Option<String>> {
        let Some(e) = self.find(selector).await? else {
            return Ok(None);
        };
        let v = self
            .call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await?;
        Ok(Some(v.as_str().unwrap_or_default().to_string()))
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns its value.
    pub async fn script(&self, script: &str, args: Value) -> Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Chooses the option of the select `selector` whose text contains `label`.
    pub async fn choose(&self, selector: &str, label: &str) -> Result<()> {
        let chosen = self
            .script(
                "const s = document.querySelector(arguments[0]);
                 const o = s && [...s.options].find((o) => o.text.includes(arguments[1]));
                 if (o) { s.value = o.value; s.dispatchEvent(new Event('change', {bubbles: true})); }
                 return !!o;",
                json!([selector, label]),
            )
            .await?;
        match chosen.as_bool() {
            Some(true) => Ok(()),
            _ => Err(failed(
                "an option",
                format!("{selector} has no option {label:?}"),
            )),
        }
    }

    /// The cookies the page's origin has (`name` → `value`), HttpOnly ones included.
    pub async fn cookies(&self) -> Result<Vec<(String, String)>> {
        let v = self.call(reqwest::Method::GET, "/cookie", None).await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (s("name"), s("value"))
            })
            .collect())
    }

    /// Writes a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| failed("a screenshot", e))?;
        std::fs::write(path, png).map_err(|e| Error::Io {
            server: NAME,
            what: format!("writing {}", path.display()),
            source: e,
        })
    }

    /// The driver's log (for failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session so chromium exits with its driver; failures only leave a process the
        // driver's exit (PR_SET_PDEATHSIG) ends anyway.
        let (http, url) = (self.http.clone(), self.base.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let _ = std::thread::spawn(move || {
                rt.block_on(async { http.delete(url).send().await.map(drop) })
            })
            .join();
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Command {
        server: NAME,
        command: what.to_string(),
        output: e.to_string(),
    }
}

/// One WebDriver command; its `value`, or the driver's error message.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut r = http.request(method, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.map_err(|e| failed(url, e))?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| failed(url, e))?;
    if !status.is_success() {
        return Err(failed(
            url,
            format!(
                "{status}: {} {}",
                v["value"]["error"].as_str().unwrap_or_default(),
                v["value"]["message"].as_str().unwrap_or_default()
            ),
        ));
    }
    Ok(v["value"].clone())
}
