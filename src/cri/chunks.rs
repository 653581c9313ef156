//! Chunking for the CRI Stream* calls: a List result cut into messages of at least one item,
//! each item in exactly one message, in List order, each message far below the gRPC size
//! limit (16 MiB at the kubelet). No items, no messages: the stream just ends.
use prost::Message;

/// Encoded bytes one chunk may hold before the next item starts a new chunk.
const CHUNK_BYTES: usize = 1 << 20;

pub fn chunks<T: Message>(items: Vec<T>) -> Vec<Vec<T>> {
    chunks_of(items, CHUNK_BYTES)
}

fn chunks_of<T: Message>(items: Vec<T>, limit: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut size = 0;
    for item in items {
        // As a repeated field: one key byte, the length prefix, the item.
        let len = item.encoded_len();
        let len = 1 + prost::length_delimiter_len(len) + len;
        if !chunk.is_empty() && size + len > limit {
            out.push(std::mem::take(&mut chunk));
            size = 0;
        }
        size += len;
        chunk.push(item);
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::v1 as cri;

    fn pod(id: &str) -> cri::PodSandbox {
        cri::PodSandbox { id: id.into(), ..Default::default() }
    }

    #[test]
    fn nothing_to_send_is_no_message() {
        assert!(chunks(Vec::<cri::PodSandbox>::new()).is_empty());
    }

    #[test]
    fn every_item_once_in_order_and_chunks_stay_under_the_limit() {
        let items: Vec<_> = (0..100).map(|i| pod(&format!("{i:064}"))).collect();
        let one = items[0].encoded_len() + 2;
        let limit = one * 7 + 3;
        let got = chunks_of(items.clone(), limit);
        assert!(got.len() > 1, "{} chunks", got.len());
        for c in &got {
            assert!(!c.is_empty());
            let msg = cri::StreamPodSandboxesResponse { pod_sandboxes: c.clone() };
            assert!(msg.encoded_len() <= limit, "{} > {limit}", msg.encoded_len());
        }
        assert_eq!(got.into_iter().flatten().collect::<Vec<_>>(), items);
    }

    #[test]
    fn an_item_larger_than_the_limit_travels_alone() {
        let items = vec![pod("a"), pod(&"b".repeat(500)), pod("c")];
        let got = chunks_of(items, 100);
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1]);
    }

    #[test]
    fn small_lists_are_one_message() {
        let got = chunks((0..3).map(|i| pod(&i.to_string())).collect());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 3);
    }
}
