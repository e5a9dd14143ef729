//! Binary upgrade: a running gateway hands its listening sockets to its successor over a Unix
//! socket, as file descriptors (SCM_RIGHTS), so no listen queue is ever closed and no
//! connection is refused while one process replaces the other.
//!
//! The running process listens on the upgrade socket (`[server] upgrade_socket`). A successor
//! that has already loaded and checked its config and plugins connects; the running process
//! answers with one message: a JSON list naming each socket (a listener or the admin listener,
//! and the address the config gave it), with the descriptors attached in the same order. The
//! successor serves on them, binds fresh any listener its predecessor did not have, takes the
//! upgrade socket's path over and writes `ready`. Only then does the running process stop
//! accepting and drain. A successor that goes away before `ready` changes nothing.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{UnixListener, UnixStream};

/// Sockets one hand-over carries at most (the kernel takes up to 253 descriptors a message).
const MAX_SOCKETS: usize = 64;
/// The descriptor list's largest size.
const MAX_MESSAGE: usize = 64 * 1024;
/// How long a successor that has its sockets may take to say it serves on them.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// What a passed socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A `[[listeners]]` entry.
    Listener,
    /// The `[admin]` listener.
    Admin,
}

/// A listening socket, named by its role and the address the config gave it (which may have
/// port 0: the successor finds it by what its own config says, not by the port bound).
#[derive(Debug)]
pub struct Socket {
    /// What it is for.
    pub role: Role,
    /// The address as configured.
    pub configured: SocketAddr,
    /// The listening socket.
    pub fd: OwnedFd,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    pid: u32,
    sockets: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    role: Role,
    configured: SocketAddr,
}

/// A hand-over that failed; the running process keeps serving whatever happened.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The upgrade socket could not be made, reached or used.
    #[error("upgrade socket {}: {source}", path.display())]
    Socket {
        /// `[server] upgrade_socket`.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another gateway already serves this upgrade socket.
    #[error(
        "another wasmgate serves upgrade socket {}; run this one with --upgrade to take over from it",
        path.display()
    )]
    InUse {
        /// `[server] upgrade_socket`.
        path: PathBuf,
    },
    /// The message from the other side did not make sense.
    #[error("upgrade socket {}: {reason}", path.display())]
    Protocol {
        /// `[server] upgrade_socket`.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

/// Where the upgrade socket is when `[server] upgrade_socket` is not set: under
/// `$XDG_RUNTIME_DIR/wasmgate/` (else `/tmp/wasmgate-<uid>/`), named after the config file's
/// full path, so gateways run from different configs never meet and `--upgrade` with the same
/// config finds the one running.
pub fn default_path(config_file: &Path) -> PathBuf {
    use sha2::Digest;
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("wasmgate"),
        _ => std::env::temp_dir().join(format!("wasmgate-{}", rustix::process::getuid().as_raw())),
    };
    let full = std::fs::canonicalize(config_file).unwrap_or_else(|_| config_file.to_path_buf());
    let digest = sha2::Sha256::digest(full.as_os_str().as_encoded_bytes());
    dir.join(format!("upgrade-{}.sock", &hex::encode(digest)[..16]))
}

/// The running process's side: the upgrade socket it listens on.
pub struct Offer {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode: on a plain stop the file is removed only if it is still ours.
    inode: u64,
}

impl Offer {
    /// Listens on `path` at start. A socket file left by a process that is gone is replaced;
    /// one a live gateway answers on is refused.
    pub fn bind(path: &Path) -> Result<Offer, HandoverError> {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(HandoverError::InUse { path: path.to_path_buf() });
        }
        Offer::replace(path)
    }

    /// Listens on `path` in place of whoever had it: a successor takes it over this way once
    /// it serves, so the next upgrade finds it.
    pub fn replace(path: &Path) -> Result<Offer, HandoverError> {
        let error = |source| HandoverError::Socket { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(error)?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(error(e)),
            _ => {}
        }
        let listener = UnixListener::bind(path).map_err(error)?;
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).map_err(error)?);
        Ok(Offer { listener, path: path.to_path_buf(), inode })
    }

    /// On a stop with no successor: removes the socket file, unless another process has
    /// taken the path since.
    pub fn remove(self) {
        let ours = std::fs::metadata(&self.path)
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == self.inode);
        if ours && let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(%error, path = %self.path.display(), "cannot remove the upgrade socket");
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a successor and hands it `sockets`; returns its process id once it says it
    /// serves on them. A successor that fails before that is logged and the next one awaited.
    pub async fn hand_over(&self, sockets: &[Socket]) -> u32 {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, path = %self.path.display(), "upgrade socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.serve(stream, sockets).await {
                Ok(pid) => return pid,
                Err(error) => {
                    tracing::warn!(%error, "a successor did not take over; this process keeps serving");
                }
            }
        }
    }

    async fn serve(&self, stream: UnixStream, sockets: &[Socket]) -> Result<u32, HandoverError> {
        let io = |source| HandoverError::Socket { path: self.path.clone(), source };
        let manifest = Manifest {
            pid: std::process::id(),
            sockets: sockets.iter().map(|s| Entry { role: s.role, configured: s.configured }).collect(),
        };
        let text = serde_json::to_vec(&manifest).map_err(|e| self.protocol(e.to_string()))?;
        if sockets.len() > MAX_SOCKETS || text.len() > MAX_MESSAGE {
            return Err(
                self.protocol(format!("{} sockets are more than one hand-over carries", sockets.len()))
            );
        }
        let fds: Vec<_> = sockets.iter().map(|s| s.fd.as_fd()).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(self.protocol("the descriptors do not fit one message".into()));
        }
        loop {
            stream.writable().await.map_err(io)?;
            let sent = stream.try_io(Interest::WRITABLE, || {
                rustix::net::sendmsg(&stream, &[IoSlice::new(&text)], &mut control, SendFlags::empty())
                    .map_err(std::io::Error::from)
            });
            match sent {
                Ok(n) if n == text.len() => break,
                Ok(n) => return Err(self.protocol(format!("sent {n} of {} bytes", text.len()))),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(io(e)),
            }
        }
        let mut line = String::new();
        let mut reader = BufReader::new(stream);
        match tokio::time::timeout(READY_WITHIN, reader.read_line(&mut line)).await {
            Ok(Ok(_)) if line.trim().starts_with("ready") => {
                let pid = line.trim().strip_prefix("ready").and_then(|p| p.trim().parse().ok());
                Ok(pid.unwrap_or(0))
            }
            Ok(Ok(_)) => Err(self.protocol("the successor went away before it was ready".into())),
            Ok(Err(e)) => Err(io(e)),
            Err(_) => Err(self.protocol(format!("the successor was not ready within {READY_WITHIN:?}"))),
        }
    }

    fn protocol(&self, reason: String) -> HandoverError {
        HandoverError::Protocol { path: self.path.clone(), reason }
    }
}

/// Sockets received from the predecessor; each is claimed once, by role and configured address.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<Socket>,
}

impl Inherited {
    /// Takes the first socket passed for `role` at `configured`, ready for tokio.
    pub fn claim(
        &mut self,
        role: Role,
        configured: SocketAddr,
    ) -> Option<std::io::Result<tokio::net::TcpListener>> {
        let at = self.sockets.iter().position(|s| s.role == role && s.configured == configured)?;
        let listener = std::net::TcpListener::from(self.sockets.swap_remove(at).fd);
        Some(listener.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(listener)))
    }

    /// Sockets nobody claimed: the predecessor had listeners this config drops. Dropping them
    /// closes this process's copy; the predecessor closes its own as it drains.
    pub fn unclaimed(&self) -> impl Iterator<Item = (Role, SocketAddr)> + '_ {
        self.sockets.iter().map(|s| (s.role, s.configured))
    }
}

/// The successor's side of a hand-over in progress.
pub struct Predecessor {
    stream: UnixStream,
    /// Its process id.
    pub pid: u32,
}

impl Predecessor {
    /// Connects to the gateway serving `path` and receives its sockets.
    pub async fn take(path: &Path) -> Result<(Predecessor, Inherited), HandoverError> {
        let io = |source| HandoverError::Socket { path: path.to_path_buf(), source };
        let protocol = |reason: String| HandoverError::Protocol { path: path.to_path_buf(), reason };
        let stream = UnixStream::connect(path).await.map_err(io)?;
        let mut text = vec![0u8; MAX_MESSAGE];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = loop {
            stream.readable().await.map_err(io)?;
            let got = stream.try_io(Interest::READABLE, || {
                rustix::net::recvmsg(
                    &stream,
                    &mut [IoSliceMut::new(&mut text)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)
            });
            match got {
                Ok(message) => break message.bytes,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(io(e)),
            }
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(passed) = message {
                fds.extend(passed);
            }
        }
        if received == 0 {
            return Err(protocol("the running gateway closed the connection without its sockets".into()));
        }
        let manifest: Manifest =
            serde_json::from_slice(&text[..received]).map_err(|e| protocol(format!("unreadable: {e}")))?;
        if manifest.sockets.len() != fds.len() {
            return Err(protocol(format!(
                "{} sockets named but {} passed",
                manifest.sockets.len(),
                fds.len()
            )));
        }
        let sockets = manifest
            .sockets
            .into_iter()
            .zip(fds)
            .map(|(e, fd)| Socket { role: e.role, configured: e.configured, fd })
            .collect();
        Ok((Predecessor { stream, pid: manifest.pid }, Inherited { sockets }))
    }

    /// Tells the predecessor this process serves: it stops accepting and drains.
    pub async fn ready(mut self) -> std::io::Result<()> {
        let line = format!("ready {}\n", std::process::id());
        self.stream.write_all(line.as_bytes()).await?;
        self.stream.flush().await
    }
}
