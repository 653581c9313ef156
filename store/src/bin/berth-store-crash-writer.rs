//! A test helper for the embedded store's crash test (tests/embedded.rs): opens the store in DIR
//! and writes from 16 concurrent tasks until it is killed, printing one line per write the store
//! has acknowledged:
//!
//!     ack REVISION put|del KEY VALUE
//!
//! The test kills it with SIGKILL at a random moment, reopens the store and checks that every
//! acknowledged write is there. With `--compact` it also compacts every few milliseconds.
//!
//! Usage: berth-store-crash-writer DIR ROUND [--compact]

use std::collections::HashMap;
use std::time::Duration;

use berth_store::{EmbeddedConfig, EmbeddedStore, KeyValue, Store, StoreError};
use bytes::Bytes;

const TASKS: usize = 16;
const KEYS_PER_TASK: u64 = 8;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: berth-store-crash-writer DIR ROUND [--compact]";
    let dir = args.next().ok_or(usage)?;
    let round: u64 = args.next().ok_or(usage)?.parse()?;
    let compact = args.next().as_deref() == Some("--compact");
    let mut config = EmbeddedConfig::new(&dir);
    config.compaction_interval = None;
    // Small thresholds so checkpoints and compaction steps happen often, and a kill can land
    // in the middle of them.
    config.checkpoint_pages = 64;
    config.compaction_step = 64;
    let store = EmbeddedStore::open(config).await?;
    if compact {
        let s = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                if let Ok(r) = s.current_revision().await {
                    let _ = s.compact((r - 300).max(0)).await;
                }
            }
        });
    }
    let tasks: Vec<_> = (0..TASKS).map(|t| tokio::spawn(write_forever(store.clone(), round, t))).collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn write_forever(store: EmbeddedStore, round: u64, task: usize) -> Result<(), StoreError> {
    let mut known: HashMap<String, Option<KeyValue>> = HashMap::new();
    let padding = "x".repeat(200);
    for n in 0u64.. {
        let key = format!("/registry/crash/t{task}/k{}", n % KEYS_PER_TASK);
        let value = format!("r{round}-t{task}-n{n}-{padding}");
        let state = match known.get(&key) {
            Some(s) => s.clone(),
            None => store.get(&key, None).await?,
        };
        match state {
            None => match store.create(&key, Bytes::from(value.clone()), None).await {
                Ok(kv) => {
                    println!("ack {} put {key} {value}", kv.mod_revision);
                    known.insert(key, Some(kv));
                }
                Err(StoreError::AlreadyExists { .. }) => {
                    known.remove(&key);
                }
                Err(e) => return Err(e),
            },
            Some(kv) if n % 5 == 4 => {
                let d = store.delete(&key, Some(kv.mod_revision)).await?;
                println!("ack {} del {key} -", d.revision);
                known.insert(key, None);
            }
            Some(kv) => {
                let kv = store.update(&key, Bytes::from(value.clone()), kv.mod_revision, None).await?;
                println!("ack {} put {key} {value}", kv.mod_revision);
                known.insert(key, Some(kv));
            }
        }
    }
    Ok(())
}
