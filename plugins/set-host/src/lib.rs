//! set-host: sets the `Host` header of the request sent upstream to a configured value, for
//! backends that route on it (virtual hosts, CDNs, TLS front ends).

use serde::Deserialize;
use wasmgate_sdk::{Action, Plugin, Request, log};

/// The plugin's table in the gateway config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `name` or `name:port`, e.g. `example.org` or `[2001:db8::1]:8443`.
    host: String,
}

#[derive(Debug)]
struct SetHost {
    host: String,
}

#[wasmgate_sdk::plugin]
impl Plugin for SetHost {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        validate(&config.host).map_err(|why| format!("invalid `host` {:?}: {why}", config.host))?;
        Ok(SetHost { host: config.host })
    }

    fn on_upstream_request(&mut self, req: &mut Request) -> Action {
        if let Err(error) = req.set_header("host", &self.host) {
            log::warn!("host {:?} not set: {error}", self.host);
        }
        Action::Continue
    }
}

/// Checks that `value` is a `Host` header value: a DNS name, IPv4 address or bracketed IPv6
/// address, with an optional port.
fn validate(value: &str) -> Result<(), &'static str> {
    let port = if let Some(rest) = value.strip_prefix('[') {
        let (address, after) = rest.split_once(']').ok_or("an IPv6 address needs its closing `]`")?;
        if !is_ipv6_ish(address) {
            return Err("not an IPv6 address between `[` and `]`");
        }
        if after.is_empty() {
            return Ok(());
        }
        after.strip_prefix(':').ok_or("only `:port` may follow `]`")?
    } else {
        let (name, port) = match value.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        };
        validate_name(name)?;
        match port {
            Some(port) => port,
            None => return Ok(()),
        }
    };
    // `u16::from_str` alone would take `+80`.
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
        return Err("the port must be a number from 0 to 65535");
    }
    Ok(())
}

/// A DNS name or IPv4 address: dot-separated labels of letters, digits, `-` and `_`.
fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > 253 {
        return Err("the name is longer than 253 characters");
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // A trailing dot marks a fully qualified name.
    if !name.strip_suffix('.').unwrap_or(name).split('.').all(label_ok) {
        return Err("expected a DNS name or an IP address (letters, digits, `-`, `_` and dots)");
    }
    Ok(())
}

/// Loosely an IPv6 address (hex digits and colons, maybe a dotted IPv4 tail): enough to keep
/// anything that could break the header out.
fn is_ipv6_ish(address: &str) -> bool {
    address.contains(':') && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`.

    use super::*;

    fn new(host: &str) -> Result<SetHost, String> {
        SetHost::new(Config { host: host.to_owned() })
    }

    #[test]
    fn accepts_names_addresses_and_ports() {
        for host in [
            "example.org",
            "example.org.",
            "api-v2.example.org:8443",
            "localhost",
            "10.0.0.1:80",
            "[2001:db8::1]",
            "[::1]:8080",
        ] {
            assert!(new(host).is_ok(), "{host}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_host_naming_it() {
        assert_eq!(new("").expect_err("empty").as_str(), r#"invalid `host` "": the name is empty"#);
        assert_eq!(
            new("exa mple.org").expect_err("space").as_str(),
            concat!(
                r#"invalid `host` "exa mple.org": "#,
                "expected a DNS name or an IP address (letters, digits, `-`, `_` and dots)"
            )
        );
        for host in [
            "example.org\r\nx-evil: 1",
            "example.org/path",
            "user@example.org",
            "example..org",
            "example.org:",
            "example.org:99999",
            "example.org:8o",
            "[::1",
            "[::1]x",
            "[]",
            "a:b:c",
        ] {
            assert!(new(host).is_err(), "{host:?} should be refused");
        }
    }
}
