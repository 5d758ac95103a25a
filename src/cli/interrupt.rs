//! Ctrl-C (SIGINT) and SIGTERM as a flag, so long-running commands end with their summary.
//!
//! The flag is the signal's number, so `check` can say which one it was and exit 128+N, and
//! whether the terminal sent it (Ctrl-C reaches the whole foreground process group, the
//! command included, so `check` must not send it a second time).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static COUNT: AtomicU32 = AtomicU32::new(0);
static FROM_TERMINAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only atomic stores and a read of the kernel's siginfo: async-signal-safe.
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t (or null, checked).
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    FROM_TERMINAL.store(code == libc::SI_KERNEL, Ordering::SeqCst);
    // Counted before the signal is published: whoever sees this signal sees it counted.
    COUNT.fetch_add(1, Ordering::SeqCst);
    SIGNAL.store(signal, Ordering::SeqCst);
}

/// Installs the handlers (idempotent); poll [`interrupted`] or [`signal`] afterwards.
pub fn install() {
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_signal;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a valid handler, an empty mask and SA_RESTART (a
        // waitpid or read in progress goes on instead of failing with EINTR).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

pub fn interrupted() -> bool {
    signal().is_some()
}

/// The last SIGINT or SIGTERM received, and whether the terminal sent it (Ctrl-C).
pub fn signal() -> Option<crate::check::Interrupt> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(crate::check::Interrupt {
            signal,
            from_terminal: FROM_TERMINAL.load(Ordering::SeqCst),
            count: COUNT.load(Ordering::SeqCst),
        }),
    }
}
