//! Known devices, their one live session each, and which of them can be drawn into a cohort.
//!
//! Until devices prove who they are (device identity), the registry defends itself: a second
//! join of an id revokes the first session; an id that joins but never checks in stays
//! *pending* (not drawn, not stored) and expires; a device that declines a task or misses a
//! deadline is *benched* (not drawn) until it checks in anew; and the registry holds at most
//! `limit` devices, evicting the oldest pending one to make room.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::ServerError;

/// New ids between two sweeps of expired pending devices: sweeps stay O(1) per join.
const SWEEP_EVERY: usize = 1024;

/// What the server knows of one device.
#[derive(Debug)]
struct Device {
    /// The session token it holds now, if any.
    token: Option<String>,
    /// Capabilities sent with a join not yet followed by a check-in (`None`: counted).
    pending: Option<String>,
    /// Declined a task or missed a deadline since its last check-in.
    benched: bool,
    /// When it last joined.
    joined: Instant,
    /// The LoRA rank it said it trains when it last joined (0: the global adapter's).
    lora_rank: usize,
}

/// A live session: who holds the token and when it was last used.
#[derive(Debug)]
struct Session {
    client_id: String,
    last_used: Instant,
}

/// What a check-in changed for its device.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// First check-in after a join: the device now counts, with these capabilities (to store).
    pub counted: Option<String>,
    /// The device was benched and can be drawn again.
    pub unbenched: bool,
}

/// Devices (sorted, so cohort sampling is reproducible) and their sessions.
#[derive(Debug)]
pub(crate) struct Registry {
    devices: BTreeMap<String, Device>,
    sessions: HashMap<String, Session>,
    limit: usize,
    /// New ids since pending devices were last swept (a sweep walks every device).
    since_sweep: usize,
}

impl Registry {
    /// Registry of devices known from an earlier run (their tokens are gone: they re-join).
    /// They count at once: they checked in before.
    pub fn with_clients(clients: impl IntoIterator<Item = String>, limit: usize) -> Self {
        let now = Instant::now();
        let devices = clients
            .into_iter()
            .map(|id| {
                let device = Device {
                    token: None,
                    pending: None,
                    benched: false,
                    joined: now,
                    lora_rank: 0,
                };
                (id, device)
            })
            .collect();
        Registry {
            devices,
            sessions: HashMap::new(),
            limit: limit.max(1),
            since_sweep: 0,
        }
    }

    /// Opens a session for `client_id`, revoking the one it held. A new id is pending until
    /// it checks in. Refused when the registry is full of devices that checked in.
    pub fn join(
        &mut self,
        client_id: &str,
        capabilities: String,
        ttl: Duration,
    ) -> Result<String, ServerError> {
        let now = Instant::now();
        if !self.devices.contains_key(client_id) {
            self.since_sweep += 1;
            if self.since_sweep >= SWEEP_EVERY || self.devices.len() >= self.limit {
                self.expire_pending(ttl, now);
            }
            if self.devices.len() >= self.limit && !self.evict_oldest_pending() {
                return Err(ServerError::RegistryFull(self.limit));
            }
        }
        let mut raw = [0u8; 16];
        rand::rng().fill_bytes(&mut raw);
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let device = self
            .devices
            .entry(client_id.to_string())
            .or_insert_with(|| Device {
                token: None,
                pending: Some(capabilities),
                benched: false,
                joined: now,
                lora_rank: 0,
            });
        device.joined = now;
        if let Some(old) = device.token.replace(token.clone()) {
            self.sessions.remove(&old);
        }
        self.sessions.insert(
            token.clone(),
            Session {
                client_id: client_id.to_string(),
                last_used: now,
            },
        );
        Ok(token)
    }

    /// The client holding `token`, refreshing its expiry; unknown, revoked or expired tokens
    /// are refused.
    pub fn authenticate(&mut self, token: &str, ttl: Duration) -> Result<String, ServerError> {
        let now = Instant::now();
        let session = self
            .sessions
            .get_mut(token)
            .ok_or(ServerError::Unauthenticated("unknown session token"))?;
        if now.duration_since(session.last_used) > ttl {
            self.sessions.remove(token);
            return Err(ServerError::Unauthenticated(
                "session token expired; join again",
            ));
        }
        session.last_used = now;
        Ok(session.client_id.clone())
    }

    /// Records a check-in of `client`: a pending device now counts, a benched one is back.
    pub fn check_in(&mut self, client: &str) -> Seen {
        let Some(device) = self.devices.get_mut(client) else {
            return Seen::default();
        };
        Seen {
            counted: device.pending.take(),
            unbenched: std::mem::take(&mut device.benched),
        }
    }

    /// Records the LoRA rank `client` trains (sent with each join).
    pub fn set_lora_rank(&mut self, client: &str, rank: usize) {
        if let Some(device) = self.devices.get_mut(client) {
            device.lora_rank = rank;
        }
    }

    /// The LoRA rank `client` trains (0: the global adapter's, or an unknown device).
    pub fn lora_rank(&self, client: &str) -> usize {
        self.devices.get(client).map_or(0, |d| d.lora_rank)
    }

    /// Keeps `client` out of cohorts until it checks in anew.
    pub fn bench(&mut self, client: &str) {
        if let Some(device) = self.devices.get_mut(client) {
            device.benched = true;
        }
    }

    /// Devices that count (have checked in), pending ones excluded.
    pub fn len(&self) -> usize {
        self.devices
            .values()
            .filter(|d| d.pending.is_none())
            .count()
    }

    /// Devices that can be drawn into a cohort, in sorted order.
    pub fn eligible(&self) -> impl Iterator<Item = &String> {
        self.devices
            .iter()
            .filter(|(_, d)| d.pending.is_none() && !d.benched)
            .map(|(id, _)| id)
    }

    /// Drops pending devices (and their sessions) that joined longer than `ttl` ago.
    fn expire_pending(&mut self, ttl: Duration, now: Instant) {
        self.since_sweep = 0;
        let stale: Vec<String> = self
            .devices
            .iter()
            .filter(|(_, d)| d.pending.is_some() && now.duration_since(d.joined) > ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.remove(&id);
        }
        self.sessions
            .retain(|_, s| now.duration_since(s.last_used) <= ttl);
    }

    /// Makes room by dropping the pending device that joined first; false when none is.
    fn evict_oldest_pending(&mut self) -> bool {
        let oldest = self
            .devices
            .iter()
            .filter(|(_, d)| d.pending.is_some())
            .min_by_key(|(_, d)| d.joined)
            .map(|(id, _)| id.clone());
        oldest.map(|id| self.remove(&id)).is_some()
    }

    fn remove(&mut self, id: &str) {
        if let Some(token) = self.devices.remove(id).and_then(|d| d.token) {
            self.sessions.remove(&token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn joined(r: &mut Registry, id: &str) -> String {
        r.join(id, "{}".into(), TTL).expect("join")
    }

    #[test]
    fn tokens_authenticate_expire_and_rejoin() {
        let mut r = Registry::with_clients([], 10);
        let token = joined(&mut r, "phone");
        assert_eq!(r.authenticate(&token, TTL).unwrap(), "phone");
        assert!(matches!(
            r.authenticate("forged", TTL),
            Err(ServerError::Unauthenticated(_))
        ));
        std::thread::sleep(Duration::from_millis(5));
        let err = r
            .authenticate(&token, Duration::from_millis(1))
            .unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(
            r.authenticate(&token, TTL).is_err(),
            "an expired token stays dead"
        );
        let again = joined(&mut r, "phone");
        assert_ne!(again, token);
        assert_eq!(r.check_in("phone").counted.as_deref(), Some("{}"));
        assert_eq!(r.len(), 1);
    }

    /// A second join of a live id revokes the first session: one id, one session.
    #[test]
    fn a_second_join_revokes_the_first_session() {
        let mut r = Registry::with_clients(["phone".to_string()], 10);
        let first = joined(&mut r, "phone");
        let second = joined(&mut r, "phone");
        assert!(
            r.authenticate(&first, TTL).is_err(),
            "first session revoked"
        );
        assert_eq!(r.authenticate(&second, TTL).unwrap(), "phone");
        assert_eq!(r.sessions.len(), 1);
    }

    /// A joined id is not drawn, counted or kept until it checks in; one that never does
    /// expires, and a full registry evicts the oldest pending id but refuses beyond devices
    /// that count.
    #[test]
    fn pending_devices_expire_and_the_registry_is_bounded() {
        let mut r = Registry::with_clients(["a".to_string()], 3);
        let _ = joined(&mut r, "fake-1");
        let _ = joined(&mut r, "fake-2");
        assert_eq!(r.len(), 1);
        assert_eq!(r.eligible().collect::<Vec<_>>(), ["a"]);
        // Full: the oldest pending id makes room.
        let t3 = joined(&mut r, "fake-3");
        assert_eq!(r.devices.len(), 3);
        assert!(!r.devices.contains_key("fake-1"));
        assert_eq!(r.check_in("fake-3").counted.as_deref(), Some("{}"));
        assert_eq!(r.authenticate(&t3, TTL).unwrap(), "fake-3");
        // Pending ids expire after the session lifetime.
        std::thread::sleep(Duration::from_millis(5));
        r.expire_pending(Duration::from_millis(1), Instant::now());
        assert!(!r.devices.contains_key("fake-2"));
        assert_eq!(r.len(), 2);
        // Full of counted devices: refused, naming the limit.
        let _ = joined(&mut r, "b");
        r.check_in("b");
        let e = r.join("c", "{}".into(), TTL).unwrap_err();
        assert!(matches!(e, ServerError::RegistryFull(3)), "{e}");
    }

    /// A benched device is not drawn until it checks in anew.
    #[test]
    fn benched_devices_are_not_drawn_until_they_check_in() {
        let mut r = Registry::with_clients(["a".to_string(), "b".to_string()], 10);
        r.bench("a");
        assert_eq!(r.eligible().collect::<Vec<_>>(), ["b"]);
        assert_eq!(r.len(), 2);
        let seen = r.check_in("a");
        assert!(seen.unbenched && seen.counted.is_none());
        assert_eq!(r.eligible().count(), 2);
        assert_eq!(r.check_in("a"), Seen::default());
    }
}
