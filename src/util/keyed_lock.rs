//! Async locks by key, so that concurrent work on the same thing (a blob, a layer) runs once
//! while work on different things runs in parallel. Entries are dropped when unused.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyedLock {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while working on one key; releasing it lets the next waiter in.
pub struct KeyGuard<'a> {
    owner: &'a KeyedLock,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLock {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = m.lock_owned().await;
        KeyGuard { owner: self, key: key.to_string(), guard: Some(guard) }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.owner.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Only this map and no guard hold it: nobody waits, forget the key.
        if map.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn serialises_same_key_only() {
        let l = Arc::new(KeyedLock::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = vec![];
        for _ in 0..8 {
            let (l, inside) = (l.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = l.lock("a").await;
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        let _other = l.lock("b").await; // a different key is not blocked
        drop(_other);
        for t in tasks {
            t.await.unwrap();
        }
        assert!(l.locks.lock().unwrap().is_empty());
    }
}
