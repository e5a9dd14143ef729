//! round-robin: sends each request to the next healthy backend of a group, in config order,
//! skipping the backends health checks hold out.

use serde::Deserialize;
use wasmgate_sdk::{Backend, Plugin, Request, Upstream, UpstreamChoice, log};

/// The plugin's table in the gateway config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The group to balance; the route's own group if unset.
    #[serde(default)]
    group: Option<String>,
}

#[derive(Debug)]
struct RoundRobin {
    group: Option<String>,
    /// How many choices this instance has made. Each pooled instance counts on its own, so the
    /// rotation is per instance, not global (see the README).
    turn: usize,
}

#[wasmgate_sdk::plugin]
impl Plugin for RoundRobin {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.group.as_deref().is_some_and(str::is_empty) {
            return Err("`group` must not be empty: leave it out to use the route's group".to_owned());
        }
        Ok(RoundRobin { group: config.group, turn: 0 })
    }

    fn select_upstream(&mut self, _req: &Request, upstream: &Upstream) -> UpstreamChoice {
        let backends = match &self.group {
            None => upstream.backends(),
            Some(group) => match upstream.backends_of(group) {
                Some(backends) => backends,
                None => {
                    log::warn!("no upstream group {group:?}: leaving the choice to the route");
                    return UpstreamChoice::Default;
                }
            },
        };
        // None healthy: the host's own policy for an all-unhealthy group decides.
        let Some(index) = pick(&backends, self.turn) else {
            return UpstreamChoice::Default;
        };
        self.turn = self.turn.wrapping_add(1);
        match &self.group {
            None => UpstreamChoice::Backend(index),
            Some(group) => UpstreamChoice::GroupBackend(group.clone(), index),
        }
    }
}

/// The index, in the full list, of the `turn`-th healthy backend (cycling), if any is healthy.
fn pick(backends: &[Backend], turn: usize) -> Option<u32> {
    let healthy = backends.iter().filter(|backend| backend.healthy).count();
    if healthy == 0 {
        return None;
    }
    let (index, _) =
        backends.iter().enumerate().filter(|(_, backend)| backend.healthy).nth(turn % healthy)?;
    u32::try_from(index).ok()
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`.

    use super::*;

    fn backends(health: &[bool]) -> Vec<Backend> {
        health
            .iter()
            .enumerate()
            .map(|(i, &healthy)| Backend {
                address: format!("10.0.0.{i}:80"),
                weight: 1,
                healthy,
                ejected: false,
            })
            .collect()
    }

    #[test]
    fn cycles_through_the_healthy_backends_by_full_index() {
        let list = backends(&[true, false, true, true]);
        let picks: Vec<_> = (0..7).map(|turn| pick(&list, turn)).collect();
        assert_eq!(picks, [Some(0), Some(2), Some(3), Some(0), Some(2), Some(3), Some(0)]);
    }

    #[test]
    fn picks_nothing_when_none_is_healthy() {
        assert_eq!(pick(&backends(&[false, false]), 0), None);
        assert_eq!(pick(&[], 5), None);
    }

    #[test]
    fn refuses_an_empty_group_name() {
        let error = RoundRobin::new(Config { group: Some(String::new()) }).expect_err("empty group");
        assert!(error.starts_with("`group` must not be empty"), "{error}");
        assert!(RoundRobin::new(Config { group: None }).is_ok());
    }
}
