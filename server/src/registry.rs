//! Known clients and their session tokens.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::ServerError;

/// A live session: who holds the token and when it was last used.
#[derive(Debug)]
struct Session {
    client_id: String,
    last_used: Instant,
}

/// Clients that have joined (kept sorted so cohort sampling is reproducible) and sessions.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    clients: BTreeSet<String>,
    sessions: HashMap<String, Session>,
}

impl Registry {
    /// Registry of clients known from an earlier run (their tokens are gone: they re-join).
    pub fn with_clients(clients: impl IntoIterator<Item = String>) -> Self {
        Registry {
            clients: clients.into_iter().collect(),
            sessions: HashMap::new(),
        }
    }

    /// Registers a client (if new) and opens a session. Returns the token and whether the
    /// client was new.
    pub fn join(&mut self, client_id: &str, ttl: Duration) -> (String, bool) {
        if self.sessions.len() > 2 * self.clients.len() + 1024 {
            self.expire(ttl);
        }
        let mut raw = [0u8; 16];
        rand::rng().fill_bytes(&mut raw);
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.sessions.insert(
            token.clone(),
            Session {
                client_id: client_id.to_string(),
                last_used: Instant::now(),
            },
        );
        (token, self.clients.insert(client_id.to_string()))
    }

    /// The client holding `token`, refreshing its expiry; unknown or expired tokens are refused.
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

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Registered client ids in sorted order.
    pub fn clients(&self) -> impl Iterator<Item = &String> {
        self.clients.iter()
    }

    /// Drops sessions unused for longer than `ttl`.
    fn expire(&mut self, ttl: Duration) {
        let now = Instant::now();
        self.sessions
            .retain(|_, s| now.duration_since(s.last_used) <= ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_expire_and_rejoin() {
        let mut r = Registry::default();
        let ttl = Duration::from_secs(60);
        let (token, new) = r.join("phone", ttl);
        assert!(new);
        assert_eq!(r.authenticate(&token, ttl).unwrap(), "phone");
        assert!(matches!(
            r.authenticate("forged", ttl),
            Err(ServerError::Unauthenticated(_))
        ));
        std::thread::sleep(Duration::from_millis(5));
        let err = r
            .authenticate(&token, Duration::from_millis(1))
            .unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(
            r.authenticate(&token, ttl).is_err(),
            "an expired token stays dead"
        );
        let (again, new) = r.join("phone", ttl);
        assert!(!new, "a re-join is the same client");
        assert_ne!(again, token);
        assert_eq!(r.len(), 1);
    }
}
