//! Where a route's requests go: one upstream group, or several sharing them by weight
//! (`backends`), a client kept on one side by a header or the gateway's own cookie
//! (`sticky`). Picking a side is an atomic step through a table built at load: no lock, no
//! allocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;

use crate::config::Sticky;
use crate::upstream::{Group, UpstreamClient, hash_key};

/// One side: a group and its client.
pub(crate) struct Target {
    pub(crate) group: Arc<Group>,
    pub(crate) client: Arc<UpstreamClient>,
    /// What the sticky cookie says for this side (a hash of the group's name, not the name).
    token: String,
    /// 0: drained, the cookie no longer keeps a client here.
    weight: u32,
    /// `Set-Cookie` for this side, on a route whose sticky key is a cookie.
    set_cookie: Option<HeaderValue>,
}

/// The sides of a route and how a request is given one.
pub(crate) struct Split {
    sides: Vec<Target>,
    /// A side index per weight unit, interleaved (smooth weighted round robin): stepping
    /// through it gives each side its share, spread out.
    schedule: Box<[u16]>,
    next: AtomicUsize,
    sticky: Option<StickyBy>,
}

enum StickyBy {
    Header(HeaderName),
    Cookie(String),
}

/// The side a request got, and whether its response should set the sticky cookie.
pub(crate) struct Pick<'a> {
    pub(crate) target: &'a Target,
    pub(crate) set_cookie: Option<&'a HeaderValue>,
}

impl Split {
    /// `sides` with their weights (which the config check bounded), kept on one side by
    /// `sticky`. Empty on a route that answers itself.
    pub(crate) fn new(sides: Vec<(Arc<Group>, Arc<UpstreamClient>, u32)>, sticky: Option<&Sticky>) -> Self {
        let sticky = sticky.and_then(|s| match (&s.header, &s.cookie) {
            (Some(name), _) => HeaderName::from_bytes(name.as_bytes()).ok().map(StickyBy::Header),
            (None, Some(name)) => Some(StickyBy::Cookie(name.clone())),
            (None, None) => None,
        });
        let weights: Vec<u32> = sides.iter().map(|(_, _, w)| *w).collect();
        let sides = sides
            .into_iter()
            .map(|(group, client, weight)| {
                let token = format!("{:016x}", hash_key(group.name().as_bytes()));
                let set_cookie = match &sticky {
                    Some(StickyBy::Cookie(name)) => {
                        HeaderValue::try_from(format!("{name}={token}; Path=/; HttpOnly; SameSite=Lax")).ok()
                    }
                    _ => None,
                };
                Target { group, client, token, weight, set_cookie }
            })
            .collect();
        Split { sides, schedule: schedule(&weights), next: AtomicUsize::new(0), sticky }
    }

    /// The side for `request`; `None` on a route without sides.
    pub(crate) fn pick(&self, request: &Parts) -> Option<Pick<'_>> {
        if let [only] = self.sides.as_slice() {
            return Some(Pick { target: only, set_cookie: None });
        }
        let by_turn = || {
            let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len().max(1);
            self.side(slot)
        };
        match &self.sticky {
            None => Some(Pick { target: by_turn()?, set_cookie: None }),
            Some(StickyBy::Header(name)) => {
                let target = match request.headers.get(name) {
                    Some(value) => {
                        let slot = (hash_key(value.as_bytes()) % self.schedule.len().max(1) as u64) as usize;
                        self.side(slot)?
                    }
                    None => by_turn()?,
                };
                Some(Pick { target, set_cookie: None })
            }
            Some(StickyBy::Cookie(name)) => {
                let kept = cookie(request, name)
                    .and_then(|token| self.sides.iter().find(|s| s.token == token && s.weight > 0));
                match kept {
                    Some(target) => Some(Pick { target, set_cookie: None }),
                    None => {
                        let target = by_turn()?;
                        Some(Pick { target, set_cookie: target.set_cookie.as_ref() })
                    }
                }
            }
        }
    }

    fn side(&self, slot: usize) -> Option<&Target> {
        self.sides.get(usize::from(*self.schedule.get(slot)?))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(request: &'a Parts, name: &str) -> Option<&'a str> {
    request
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Smooth weighted round robin over `weights`, one full cycle: each side appears as often as
/// its weight, and no side runs long while another waits.
fn schedule(weights: &[u32]) -> Box<[u16]> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .filter_map(|_| {
            for (c, &w) in current.iter_mut().zip(weights) {
                *c += i64::from(w);
            }
            let (best, _) = current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))?;
            current[best] -= total;
            u16::try_from(best).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::schedule;

    #[test]
    fn the_schedule_gives_each_side_its_weight_spread_out() {
        let s = schedule(&[9, 1]);
        assert_eq!(s.len(), 10);
        assert_eq!(s.iter().filter(|&&i| i == 1).count(), 1);
        let s = schedule(&[2, 2, 0]);
        assert_eq!(&*s, &[0, 1, 0, 1]);
        let s = schedule(&[3, 1]);
        assert_ne!(&s[..3], &[0, 0, 0], "spread, not in a run: {s:?}");
    }

    #[test]
    fn a_cookie_is_found_among_others() {
        let request = http::Request::builder()
            .header("cookie", "a=1; split=abc")
            .header("cookie", "other=2")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        assert_eq!(super::cookie(&request, "split"), Some("abc"));
        assert_eq!(super::cookie(&request, "spli"), None);
        assert_eq!(super::cookie(&request, "other"), Some("2"));
    }
}
