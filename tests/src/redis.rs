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
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> anyhow::Result<RedisServer> {
        let port = crate::harness::closed_port().port();
        let mut server = RedisServer { child: None, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
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
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
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

    /// True if a PING gets its PONG.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
        else {
            return false;
        };
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
