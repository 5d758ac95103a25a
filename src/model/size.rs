//! What a snapshot costs in memory, measured from what it holds: every vector's capacity
//! times its element size, and every string's capacity, down to the probe's events and await
//! chains. Bounded histories are sized by it, so it must not leave anything big out.

use super::*;
use std::mem::size_of;

/// Bytes held on the heap by a value (not counting the value itself).
pub trait HeapBytes {
    fn heap_bytes(&self) -> usize;
}

/// What the allocator takes for a block of `n` bytes: glibc's malloc adds an 8-byte header,
/// rounds to 16 and gives no less than 32 (a 7-byte task id costs 32 bytes, not 7).
fn block(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

impl HeapBytes for String {
    fn heap_bytes(&self) -> usize {
        block(self.capacity())
    }
}

impl<T: HeapBytes> HeapBytes for Option<T> {
    fn heap_bytes(&self) -> usize {
        self.as_ref().map_or(0, T::heap_bytes)
    }
}

impl<T: HeapBytes> HeapBytes for Vec<T> {
    fn heap_bytes(&self) -> usize {
        block(self.capacity() * size_of::<T>()) + self.iter().map(T::heap_bytes).sum::<usize>()
    }
}

/// Types whose values hold nothing on the heap.
macro_rules! flat {
    ($($t:ty),*) => {$(
        impl HeapBytes for $t {
            fn heap_bytes(&self) -> usize {
                0
            }
        }
    )*};
}
flat!(f64, Child, Dropped, LagStats, RuntimeMetrics);

/// A struct's heap bytes: the sum over the fields that hold any.
macro_rules! fields {
    ($t:ty: $($f:ident),*) => {
        impl HeapBytes for $t {
            fn heap_bytes(&self) -> usize {
                0 $(+ self.$f.heap_bytes())*
            }
        }
    };
}
fields!(Process: name, cmd);
fields!(Thread: name, wchan, runtime_name, stack);
fields!(Fd: target);
fields!(Socket: local, remote);
fields!(EventLoop: id, lag_history_ms, stalls);
fields!(Stall: stack, task);
fields!(Task: id, name, kind, await_chain, spawn_location, loop_id, parent, waiting_on, parked);
fields!(ProbeThread: name, stack);
fields!(Pool: id, kind, name, created_at);
fields!(ProbeChild: name);
fields!(ProbeEvent: subject, message, site);
fields!(ProbeData: runtime, runtime_version, probe_version, loops, tasks, threads, pools, children, events, missing);

impl HeapBytes for Snapshot {
    fn heap_bytes(&self) -> usize {
        // A BTreeMap node holds up to 11 entries in about 200 bytes; count a node per entry.
        let by_kind = self.fds.by_kind.len() * 200;
        self.source.heap_bytes()
            + self.process.heap_bytes()
            + self.threads.heap_bytes()
            + self.children.heap_bytes()
            + by_kind
            + self.fd_list.heap_bytes()
            + self.sockets.heap_bytes()
            + self.probe.heap_bytes()
            + self.notes.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_strings_and_chains_are_counted() {
        let empty = Snapshot::default().approx_bytes();
        let event = ProbeEvent {
            message: "x".repeat(10_000),
            site: vec!["a.py:1 in f".to_string(); 100],
            ..Default::default()
        };
        let with_events = Snapshot {
            probe: Some(ProbeData {
                events: vec![event; 100],
                ..Default::default()
            }),
            ..Default::default()
        };
        // 100 events of 10,000 bytes of message and 100 frames each: over a megabyte.
        assert!(with_events.approx_bytes() > empty + 100 * (10_000 + 100 * 11));
        let task = Task {
            await_chain: vec!["b.py:2 in g".repeat(10); 50],
            ..Default::default()
        };
        let with_tasks = Snapshot {
            probe: Some(ProbeData {
                tasks: vec![task; 1_000],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(with_tasks.approx_bytes() > empty + 1_000 * 50 * 110);
    }
}
