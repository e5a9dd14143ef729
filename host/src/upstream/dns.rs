//! Backends named by DNS: `host:port` resolved to every address the name has now, and until
//! when that answer holds (its records' TTL), through hickory's resolver on the system's name
//! servers or on `[resolver] nameservers`. An IP literal resolves to itself without a query.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// Resolves backend names.
pub struct Resolver {
    inner: TokioResolver,
}

/// What a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Every address, sorted.
    pub addrs: Vec<SocketAddr>,
    /// When the answer's TTL runs out; `None` for an IP literal.
    pub valid_until: Option<Instant>,
}

impl Resolver {
    /// A resolver on `nameservers` (UDP, then TCP), or on the system's (`/etc/resolv.conf`,
    /// and `/etc/hosts`) when there are none.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Resolver, String> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system's resolver config: {e}"))?
        } else {
            let servers = nameservers
                .iter()
                .map(|server| {
                    let mut config = NameServerConfig::udp_and_tcp(server.ip());
                    for connection in &mut config.connections {
                        connection.port = server.port();
                    }
                    config
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        // IPv6 only for names with no IPv4 address: `localhost` is 127.0.0.1, not also ::1.
        options.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        // The gateway looks again itself, at the TTL or its own interval.
        options.cache_size = 0;
        let inner = builder.build().map_err(|e| e.to_string())?;
        Ok(Resolver { inner })
    }

    /// The addresses of `address` (`host:port`).
    pub async fn resolve(&self, address: &str) -> Result<Resolved, String> {
        if let Ok(addr) = address.parse::<SocketAddr>() {
            return Ok(Resolved { addrs: vec![addr], valid_until: None });
        }
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("`{address}` is not host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let lookup =
            self.inner.lookup_ip(host).await.map_err(|e| format!("cannot resolve `{address}`: {e}"))?;
        let mut addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        addrs.sort_unstable();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(format!("`{address}` has no address"));
        }
        Ok(Resolved { addrs, valid_until: Some(lookup.valid_until()) })
    }
}
