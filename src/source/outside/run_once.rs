//! When an asyncio loop's current iteration began, read straight from the interpreter's
//! memory: `_run_once`'s `end_time` local (`loop.time()` just after the selector returned).
//!
//! py-spy's library reads frame locals only all at once (every local of every frame of every
//! thread, each name and repr: about three plain reads' worth of CPU), and keeps CPython's
//! structures private. This reader follows one thread's frame chain down to `_run_once`, and
//! reads one slot and one float: a handful of `process_vm_readv` calls. The few offsets it
//! needs are per CPython minor version (x86-64/aarch64 release builds, 3.9-3.13); the
//! `_run_once` code object and its `end_time` slot are found by name once and then known by
//! address. Anything unexpected (a torn read, a pointer that does not lead where it should,
//! an unknown version) gives no answer, never a wrong one: the float's type is checked, and
//! the caller checks the time against what else it knows.

use std::collections::{HashMap, HashSet};

/// Where the current frame hangs off a thread state.
#[derive(Debug, Clone, Copy)]
enum FrameRef {
    /// `tstate->frame` (3.9, 3.10) or `tstate->current_frame` (3.13).
    Direct(usize),
    /// `tstate->cframe->current_frame` (3.11, 3.12): the cframe pointer's offset, then the
    /// current frame's offset in the cframe.
    ViaCFrame(usize, usize),
}

/// The offsets this reader needs in one CPython minor version (64-bit release build).
#[derive(Debug)]
struct Layout {
    /// `PyInterpreterState`: the head of its thread-state list.
    threads_head: usize,
    /// `PyThreadState`: `next`, `thread_id` (the pthread id py-spy reports), the frame.
    ts_next: usize,
    ts_thread_id: usize,
    ts_frame: FrameRef,
    /// The frame (`PyFrameObject` before 3.11, `_PyInterpreterFrame` after): the caller's
    /// frame, the code object, where the locals start, and (3.12+) the owner byte, whose
    /// value 3 marks a C-stack shim.
    frame_back: usize,
    frame_code: usize,
    frame_localsplus: usize,
    frame_owner: Option<usize>,
    /// `PyCodeObject`: its name, file, and the names of its locals in slot order
    /// (`co_varnames` before 3.11, `co_localsplusnames` after).
    code_name: usize,
    code_filename: usize,
    code_local_names: usize,
    /// Where a compact ASCII string's characters start (`sizeof(PyASCIIObject)`).
    ascii_data: usize,
}

const V3_9: Layout = Layout {
    threads_head: 8,
    ts_next: 8,
    ts_thread_id: 176,
    ts_frame: FrameRef::Direct(24),
    frame_back: 24,
    frame_code: 32,
    frame_localsplus: 360,
    frame_owner: None,
    code_name: 112,
    code_filename: 104,
    code_local_names: 72,
    ascii_data: 48,
};
const V3_10: Layout = Layout {
    frame_localsplus: 352,
    ..V3_9
};
const V3_11: Layout = Layout {
    threads_head: 16,
    ts_next: 8,
    ts_thread_id: 152,
    ts_frame: FrameRef::ViaCFrame(56, 8),
    frame_back: 48,
    frame_code: 32,
    frame_localsplus: 72,
    frame_owner: None,
    code_name: 120,
    code_filename: 112,
    code_local_names: 96,
    ascii_data: 48,
};
const V3_12: Layout = Layout {
    threads_head: 72,
    ts_thread_id: 136,
    ts_frame: FrameRef::ViaCFrame(56, 0),
    frame_back: 8,
    frame_code: 0,
    frame_owner: Some(70),
    ascii_data: 40,
    ..V3_11
};
const V3_13: Layout = Layout {
    threads_head: 7344,
    ts_thread_id: 152,
    ts_frame: FrameRef::Direct(72),
    ..V3_12
};

/// `_frameowner`'s `FRAME_OWNED_BY_CSTACK` (3.12, 3.13): a shim, not a Python frame.
const OWNED_BY_CSTACK: u8 = 3;
/// Bounds on what is followed or read: a torn read may point anywhere.
const MAX_DEPTH: usize = 1024;
const MAX_THREADS: usize = 4096;
const MAX_LOCALS: usize = 512;
const MAX_NAME: usize = 4096;
/// Reads of a thread before its answer is taken to be unknown.
const READ_ATTEMPTS: usize = 3;
/// Code objects remembered as not `_run_once`; forgotten all at once past this.
const MAX_OTHERS: usize = 4096;

/// What one read found on a thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IterationRead {
    /// `_run_once` runs, and its iteration began at this CLOCK_MONOTONIC time.
    Started(f64),
    /// `_run_once` runs, but has not set `end_time` yet: the loop is in its selector or
    /// handling its events, i.e. free, at the time of the read.
    NotStarted,
    /// No `_run_once` on the thread's stack (or nothing could be read).
    Unknown,
}

/// What a `float` object read held.
enum Float {
    Value(f64),
    Freed,
}

/// Reads `_run_once`'s `end_time` of any thread of one interpreter.
#[derive(Debug)]
pub struct IterationReader {
    pid: libc::pid_t,
    layout: &'static Layout,
    interpreter: usize,
    /// Thread-state addresses by pthread id, found by walking the list; checked at each use.
    tstates: HashMap<u64, usize>,
    /// `_run_once` code objects and the slot of their `end_time` local.
    run_once: HashMap<usize, usize>,
    /// Code objects known not to be `_run_once`.
    others: HashSet<usize>,
    /// `PyFloat_Type`, once a float was seen.
    float_type: Option<usize>,
}

impl IterationReader {
    /// A reader for CPython `major.minor` whose `PyInterpreterState` is at `interpreter`;
    /// `None` for a version without a known layout.
    pub fn new(pid: u32, major: u64, minor: u64, interpreter: usize) -> Option<Self> {
        let layout = match (major, minor) {
            (3, 9) => &V3_9,
            (3, 10) => &V3_10,
            (3, 11) => &V3_11,
            (3, 12) => &V3_12,
            (3, 13) => &V3_13,
            _ => return None,
        };
        // Offsets are for 64-bit builds.
        if std::mem::size_of::<usize>() != 8 || interpreter == 0 {
            return None;
        }
        Some(IterationReader {
            pid: pid as libc::pid_t,
            layout,
            interpreter,
            tstates: HashMap::new(),
            run_once: HashMap::new(),
            others: HashSet::new(),
            float_type: None,
        })
    }

    /// Reads the iteration start of the loop running on the Python thread `thread_id` (the
    /// pthread id py-spy reports as `thread_id`).
    pub fn read(&mut self, thread_id: u64) -> IterationRead {
        // A read races the thread: a frame popped meanwhile, or (3.11, 3.12) the C stack that
        // held the thread's cframe reused, gives a pointer to nowhere or a freed float (its
        // type no longer `float`). Each attempt is a few small reads: try again at once.
        (0..READ_ATTEMPTS)
            .find_map(|_| self.try_read(thread_id))
            .unwrap_or(IterationRead::Unknown)
    }

    fn try_read(&mut self, thread_id: u64) -> Option<IterationRead> {
        let layout = self.layout;
        let tstate = self.tstate(thread_id)?;
        let mut frame = match layout.ts_frame {
            FrameRef::Direct(off) => self.ptr(tstate + off)?,
            FrameRef::ViaCFrame(cframe, current) => {
                self.ptr(self.ptr(tstate + cframe)? + current)?
            }
        };
        let header = layout.frame_localsplus;
        let mut buf = Vec::new();
        for _ in 0..MAX_DEPTH {
            if frame == 0 {
                return Some(IterationRead::Unknown);
            }
            // The frame with its locals up to the last `end_time` slot known, in one read:
            // the code a slot is read for is the code of that same moment.
            let slots = self.run_once.values().max().map_or(0, |s| s + 1);
            buf.resize(header + 8 * slots, 0);
            if !read(self.pid, frame, &mut buf) {
                return None;
            }
            let code = word(&buf, layout.frame_code);
            let back = word(&buf, layout.frame_back);
            let shim = layout
                .frame_owner
                .is_some_and(|off| buf[off] == OWNED_BY_CSTACK);
            if !shim && code != 0 {
                if !self.run_once.contains_key(&code) && !self.others.contains(&code) {
                    self.classify(code);
                    if self.run_once.contains_key(&code) {
                        // Read it again with its `end_time` slot.
                        continue;
                    }
                }
                if let Some(&slot) = self.run_once.get(&code) {
                    return match word(&buf, header + 8 * slot) {
                        0 => Some(IterationRead::NotStarted),
                        value => match self.float(value)? {
                            Float::Value(start) => Some(IterationRead::Started(start)),
                            // The frame let go of it after the slot was read: that iteration
                            // ended, and the loop was between iterations since.
                            Float::Freed => Some(IterationRead::NotStarted),
                        },
                    };
                }
            }
            frame = back;
        }
        None
    }

    /// The thread state of `thread_id`: the one remembered if it still is that thread's, else
    /// found by walking the interpreter's list.
    fn tstate(&mut self, thread_id: u64) -> Option<usize> {
        let off = self.layout.ts_thread_id;
        if let Some(&known) = self.tstates.get(&thread_id)
            && self.ptr(known + off) == Some(thread_id as usize)
        {
            return Some(known);
        }
        self.tstates.remove(&thread_id);
        let mut tstate = self.ptr(self.interpreter + self.layout.threads_head)?;
        for _ in 0..MAX_THREADS {
            if tstate == 0 {
                return None;
            }
            if self.ptr(tstate + off)? == thread_id as usize {
                self.tstates.insert(thread_id, tstate);
                return Some(tstate);
            }
            tstate = self.ptr(tstate + self.layout.ts_next)?;
        }
        None
    }

    /// Learns whether `code` is asyncio's `_run_once` (by name and file), and where its
    /// `end_time` lives. A code object that cannot be read is not remembered either way.
    fn classify(&mut self, code: usize) {
        let layout = self.layout;
        let Some(name) = self
            .ptr(code + layout.code_name)
            .and_then(|p| self.ascii(p))
        else {
            self.others.insert(code);
            return;
        };
        let slot = (name == "_run_once")
            .then(|| {
                self.ptr(code + layout.code_filename)
                    .and_then(|p| self.ascii(p))
            })
            .flatten()
            .filter(|file| file.ends_with("base_events.py"))
            .and_then(|_| self.local_slot(code, "end_time"));
        match slot {
            Some(slot) => {
                self.run_once.insert(code, slot);
            }
            None => {
                if self.others.len() >= MAX_OTHERS {
                    self.others.clear();
                }
                self.others.insert(code);
            }
        }
    }

    /// The slot of the local named `wanted` in `code`'s frames.
    fn local_slot(&self, code: usize, wanted: &str) -> Option<usize> {
        let names = self.ptr(code + self.layout.code_local_names)?;
        // A tuple: its size, then its items.
        let count = self.ptr(names + 16)?;
        if count > MAX_LOCALS {
            return None;
        }
        let mut items = vec![0u8; 8 * count];
        if !read(self.pid, names + 24, &mut items) {
            return None;
        }
        (0..count).find(|&i| self.ascii(word(&items, 8 * i)).as_deref() == Some(wanted))
    }

    /// A compact ASCII `str` (every identifier and most paths), or `None`.
    fn ascii(&self, object: usize) -> Option<String> {
        let mut head = [0u8; 40];
        if object == 0 || !read(self.pid, object, &mut head) {
            return None;
        }
        let len = word(&head, 16);
        let state = u32::from_ne_bytes(head[32..36].try_into().ok()?);
        // `state`: interned (2 bits), kind (3), compact (1), ascii (1).
        let compact_ascii = state & (1 << 5) != 0 && state & (1 << 6) != 0;
        if !compact_ascii || len > MAX_NAME {
            return None;
        }
        let mut text = vec![0u8; len];
        read(self.pid, object + self.layout.ascii_data, &mut text)
            .then(|| String::from_utf8(text).ok())
            .flatten()
    }

    /// A `float`'s value; the object's type must be `float`, or its count of references 0 (it
    /// was freed: a float's free list links through its type field). `None` for anything
    /// else (memory already used again, or a torn pointer).
    fn float(&mut self, object: usize) -> Option<Float> {
        let mut obj = [0u8; 24];
        if !read(self.pid, object, &mut obj) {
            return None;
        }
        let ty = word(&obj, 8);
        match self.float_type {
            Some(known) if known == ty => {}
            Some(_) if word(&obj, 0) == 0 => return Some(Float::Freed),
            Some(_) => return None,
            None => {
                // `tp_name` follows the type's `PyVarObject` head.
                let name = self.ptr(ty + 24)?;
                let mut text = [0u8; 6];
                if !read(self.pid, name, &mut text) || &text != b"float\0" {
                    return None;
                }
                self.float_type = Some(ty);
            }
        }
        Some(Float::Value(f64::from_ne_bytes(
            obj[16..24].try_into().ok()?,
        )))
    }

    fn ptr(&self, address: usize) -> Option<usize> {
        let mut value = [0u8; 8];
        read(self.pid, address, &mut value).then(|| usize::from_ne_bytes(value))
    }
}

/// The pointer-sized word at `offset` of `buf`.
fn word(buf: &[u8], offset: usize) -> usize {
    buf.get(offset..offset + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, usize::from_ne_bytes)
}

/// Fills `buf` from the target's memory at `address`; false unless all of it was read.
pub fn read(pid: libc::pid_t, address: usize, buf: &mut [u8]) -> bool {
    if address == 0 || buf.is_empty() {
        return buf.is_empty();
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: address as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local iovec points at `buf`, which outlives the call; the remote one is only
    // read by the kernel, which checks it against the target's mappings.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    n == buf.len() as isize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    /// A callback that prints its iteration's `end_time` (found through its own frames) and
    /// blocks the loop until a line arrives; then the loop waits in its selector. A thread
    /// beside it never runs a loop.
    const LOOP: &str = r#"
import asyncio, sys, threading
def block():
    f = sys._getframe()
    while f.f_code.co_name != "_run_once":
        f = f.f_back
    print(threading.get_ident(), repr(f.f_locals["end_time"]), other.ident, flush=True)
    sys.stdin.readline()
async def main():
    asyncio.get_running_loop().call_soon(block)
    await asyncio.sleep(3600)
other = threading.Thread(target=threading.Event().wait, daemon=True)
other.start()
asyncio.run(main())
"#;

    /// Kills the target however the test ends (an assertion that fails included).
    struct Target(std::process::Child);

    impl Drop for Target {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Every pyenv CPython 3.9-3.13 installed here, and the default python3.
    fn pythons() -> Vec<String> {
        let root = std::env::var("PYENV_ROOT").unwrap_or_else(|_| "/root/.pyenv".into());
        let mut found = vec!["python3".to_string()];
        for v in ["3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0"] {
            let exe = format!("{root}/versions/{v}/bin/python3");
            if std::path::Path::new(&exe).exists() {
                found.push(exe);
            } else {
                eprintln!("skipping Python {v}: {exe} is not installed");
            }
        }
        found
    }

    #[test]
    fn reads_the_same_end_time_the_loop_has_and_none_while_it_waits() {
        for python in pythons() {
            let mut target = Target(
                Command::new(&python)
                    .args(["-c", LOOP])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("python runs"),
            );
            let child = &mut target.0;
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (loop_id, end_time, other_id): (u64, f64, u64) = (
                fields[0].parse().unwrap(),
                fields[1].parse().unwrap(),
                fields[2].parse().unwrap(),
            );
            let pid = child.id();
            let spy = py_spy::PythonSpy::new(pid as py_spy::Pid, &py_spy::Config::default())
                .expect("an interpreter");
            let mut reader = IterationReader::new(
                pid,
                spy.version.major,
                spy.version.minor,
                spy.addresses.interpreter_address,
            )
            .unwrap_or_else(|| panic!("{python}: a layout for {}", spy.version));
            // Blocked in the callback: exactly the loop's own value, read twice (the second
            // time from what the first one learnt).
            for _ in 0..2 {
                assert_eq!(
                    reader.read(loop_id),
                    IterationRead::Started(end_time),
                    "{python}"
                );
            }
            assert_eq!(reader.read(other_id), IterationRead::Unknown, "{python}");
            assert_eq!(reader.read(12345), IterationRead::Unknown, "{python}");
            // Let the loop go: it waits in its selector, inside `_run_once` before `end_time`.
            child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
            let mut seen = reader.read(loop_id);
            for _ in 0..100 {
                if seen == IterationRead::NotStarted {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                seen = reader.read(loop_id);
            }
            drop(target);
            assert_eq!(seen, IterationRead::NotStarted, "{python}");
        }
    }
}
