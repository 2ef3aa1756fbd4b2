//! How many uploads the server receives at once, and the buffers they are received into.
//!
//! At most `slots` updates are staged at a time, each in a pooled model-sized buffer, so
//! server memory stays O(model) however many clients upload together; up to 4 × `slots` more
//! wait (their HTTP/2 stream windows park in memory), and beyond that an upload is refused
//! with [`ServerError::Busy`] and the client backs off.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::ServerError;

#[derive(Debug)]
pub(crate) struct UploadGate {
    /// One permit per upload being staged.
    slots: Semaphore,
    /// Uploads waiting for a permit: bounded, so parked streams cannot pile up.
    waiting: AtomicUsize,
    /// How many may wait.
    max_waiting: usize,
    /// Staging buffers reused across uploads (at most one per slot in use).
    free: Mutex<Vec<BytesMut>>,
}

impl UploadGate {
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        Self {
            slots: Semaphore::new(slots),
            waiting: AtomicUsize::new(0),
            max_waiting: 4 * slots,
            free: Mutex::new(Vec::new()),
        }
    }

    /// Waits for a staging slot; refuses when too many uploads already wait.
    pub async fn slot(&self) -> Result<SemaphorePermit<'_>, ServerError> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
        let permit = if waiting >= self.max_waiting {
            Err(ServerError::Busy)
        } else {
            self.slots
                .acquire()
                .await
                .map_err(|_| ServerError::ShuttingDown)
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit
    }

    /// A staging buffer: a returned one if there is one, else a new empty one.
    pub fn take_buffer(&self) -> BytesMut {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    /// Returns a payload's buffer to the pool once nothing else refers to it.
    pub fn give_buffer(&self, payload: Bytes) {
        if let Ok(buf) = payload.try_into_mut() {
            self.free
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(buf);
        }
    }
}
