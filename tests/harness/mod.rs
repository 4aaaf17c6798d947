//! Runs the real `mispd` binary for integration tests: a temporary directory, a config written
//! from a template, a real `NOTIFY_SOCKET` listener, and a small HTTP/1.1 client on the real
//! query socket. Every wait is bounded.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mispd");
pub const CTL: &str = env!("CARGO_BIN_EXE_mispctl");

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    /// Filled by a thread that drains the notify socket all the time, as systemd does: the
    /// kernel queues only `net.unix.max_dgram_qlen` datagrams (10 by default) and then the
    /// daemon's next `sd_notify` blocks.
    received: Arc<Mutex<Vec<String>>>,
    drain_stop: Arc<AtomicBool>,
    /// Every notification received so far, in order (updated by [`Daemon::wait_notify`]).
    pub notifications: Vec<String>,
    pub log: PathBuf,
}

/// Write `config` (with `{dir}` replaced by `dir`) and start mispd on it.
pub fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
    let config_path = dir.join("mispd.toml");
    std::fs::write(&config_path, config.replace("{dir}", dir.to_str().unwrap())).unwrap();
    start_with(dir, &config_path, env)
}

pub fn start_with(dir: &Path, config_path: &Path, env: &[(&str, &str)]) -> Daemon {
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let log = dir.join(format!(
        "mispd-{}.log",
        Instant::now().elapsed().as_nanos() ^ std::process::id() as u128 ^ rand_suffix()
    ));
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config_path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("MISPD_LOG", "info")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start mispd");
    let received = Arc::new(Mutex::new(Vec::new()));
    let drain_stop = Arc::new(AtomicBool::new(false));
    {
        let received = received.clone();
        let stop = drain_stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = notify.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                    received.lock().unwrap().push(msg);
                }
            }
        });
    }
    Daemon {
        child,
        dir: dir.to_path_buf(),
        socket: dir.join("query.sock"),
        config: config_path.to_path_buf(),
        received,
        drain_stop,
        notifications: Vec::new(),
        log,
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl Daemon {
    /// Wait until a notification (any received so far, in order) satisfies `pred`, or the
    /// timeout passes, or the daemon has exited and nothing more can come.
    pub fn wait_notify(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.notifications = self.received.lock().unwrap().clone();
            if let Some(n) = self.notifications.iter().find(|n| pred(n)) {
                return Some(n.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                // Let the drain thread pick up what was sent just before the exit.
                std::thread::sleep(Duration::from_millis(150));
                self.notifications = self.received.lock().unwrap().clone();
                return self.notifications.iter().find(|n| pred(n)).cloned();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        http(&self.socket, "GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        http(&self.socket, "POST", path, Some(body))
    }

    pub fn status(&self) -> Value {
        self.get("/v1/status").1
    }

    /// Poll `/v1/status` until `pred` holds; panics with the log on timeout.
    pub fn wait_status(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if self.socket.exists() {
                if let Ok((200, v)) = try_http(&self.socket, "GET", "/v1/status", None) {
                    if pred(&v) {
                        return v;
                    }
                    if Instant::now() > deadline {
                        panic!(
                            "status condition not met in {timeout:?}: {v}\nlog:\n{}",
                            self.log_text()
                        );
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("daemon never answered status\nlog:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn source_state(&self, name: &str) -> String {
        source(&self.status(), name)["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
            + &std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }

    /// SIGTERM and wait (bounded) for exit.
    pub fn stop(mut self) -> (ExitStatus, String, Vec<String>) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.wait_notify(Duration::from_millis(200), |_| false);
                return (st, self.log_text(), self.notifications.clone());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("mispd did not stop in 20 s\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.drain_stop.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn source<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

pub fn http(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    try_http(socket, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn try_http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let (status, raw) = raw_http(
        socket,
        method,
        path,
        body.map(|b| b.to_string().into_bytes()),
    )?;
    let v = serde_json::from_slice(&raw)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&raw)))?;
    Ok((status, v))
}

/// One request with `Connection: close`; returns status and the (de-chunked) body.
pub fn raw_http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Vec<u8>), String> {
    let mut s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(&body).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header end")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let mut rest = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        rest = dechunk(&rest);
    }
    Ok((status, rest))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

/// Run mispctl with arguments; returns (exit code, stdout, stderr).
pub fn ctl(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(CTL);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
