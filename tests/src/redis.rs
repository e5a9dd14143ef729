//! A real `redis-server` for the tests of the shared store: started on a free port of
//! 127.0.0.1 with no persistence, stopped by its PID when dropped. `tests/run.sh` installs
//! Debian's `redis-server` when it is missing.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// With TLS: the certificate and key it serves, and the CAs whose client certificates it
    /// takes (none are asked for).
    tls: Option<[std::path::PathBuf; 3]>,
    /// `--requirepass`, if any.
    password: Option<String>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> anyhow::Result<RedisServer> {
        RedisServer::start_with(None, None)
    }

    /// Starts one that speaks only TLS (`cert`, `key`, `ca` are PEM files) and, with
    /// `password`, wants it.
    pub fn start_with(
        tls: Option<[std::path::PathBuf; 3]>,
        password: Option<&str>,
    ) -> anyhow::Result<RedisServer> {
        let port = crate::harness::closed_port().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = RedisServer { child: None, addr, tls, password: password.map(str::to_owned) };
        server.resume()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Stops it (SIGKILL: gone at once, as a crash or a partition would be).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let port = self.addr.port().to_string();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"]);
        match &self.tls {
            Some([cert, key, ca]) => {
                command.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"]);
                command.arg("--tls-cert-file").arg(cert).arg("--tls-key-file").arg(key);
                command.arg("--tls-ca-cert-file").arg(ca);
            }
            None => {
                command.args(["--port", &port]);
            }
        }
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run redis-server (tests/run.sh installs it)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not answer within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// True if a PING gets its PONG (over TLS or with a password: if it accepts connections).
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
        else {
            return false;
        };
        if self.tls.is_some() || self.password.is_some() {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
