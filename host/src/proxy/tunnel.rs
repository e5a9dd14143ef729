//! WebSocket tunnels: once the backend accepts a handshake (101), the client's connection and
//! the backend's are joined and bytes copied both ways until either side closes or the tunnel
//! carries nothing for its idle timeout.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Background, ProxyBody, headers};
use crate::head;
use crate::upstream::InFlight;

/// The 101 for the client, with the backend's handshake headers; the tunnel starts once both
/// sides have switched. `in_flight` keeps the tunnel counted against its backend, and it runs
/// as the server's `background` work, so a draining gateway waits for it.
pub(super) fn open(
    client: OnUpgrade,
    mut response: Response<Incoming>,
    in_flight: InFlight,
    idle: Duration,
    background: &Background,
) -> Response<ProxyBody> {
    let backend = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    head::strip_hop_by_hop(&mut parts.headers);
    headers::request_websocket(&mut parts.headers);
    background.spawn(async move {
        let _in_flight = in_flight;
        match tokio::try_join!(client, backend) {
            Ok((client, backend)) => {
                let reason = copy(client, backend, idle).await;
                tracing::debug!(reason, "websocket tunnel closed");
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade did not complete"),
        }
    });
    Response::from_parts(parts, ProxyBody::local(Bytes::new()))
}

/// Copies both ways until a side closes, an error, or `idle` without a byte either way.
async fn copy(client: Upgraded, backend: Upgraded, idle: Duration) -> &'static str {
    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        // Both reads are cancel-safe: the one that loses the race has read nothing.
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                n = client.read(&mut up) => (true, n),
                n = backend.read(&mut down) => (false, n),
            }
        })
        .await;
        let (from_client, read) = match step {
            Err(_) => return "idle",
            Ok(step) => step,
        };
        let n = match read {
            Ok(0) => {
                // One side closed: pass the close on.
                let _ = if from_client { backend.shutdown().await } else { client.shutdown().await };
                return if from_client { "client closed" } else { "backend closed" };
            }
            Ok(n) => n,
            Err(_) => return if from_client { "client error" } else { "backend error" },
        };
        let written = if from_client {
            tokio::time::timeout(idle, backend.write_all(&up[..n])).await
        } else {
            tokio::time::timeout(idle, client.write_all(&down[..n])).await
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return "write error",
            Err(_) => return "idle",
        }
    }
}
