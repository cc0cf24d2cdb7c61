//! Process memory hygiene, applied once at start on Linux: no core dumps
//! (`RLIMIT_CORE` 0 and `PR_SET_DUMPABLE` 0, which also keeps other
//! processes of the same user from reading this one's memory through
//! ptrace or /proc), and the process's pages locked in memory (`mlockall`)
//! where the memory-lock limit allows, so key pages never reach swap.
//!
//! All through rustix's safe wrappers: no unsafe code here.

use rustix::mm::{MlockAllFlags, mlockall};
use rustix::process::{DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior, setrlimit};

/// What [`harden`] managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// Core dumps are off.
    pub core_dumps_off: bool,
    /// Pages are locked in memory.
    pub memory_locked: bool,
}

/// CAP_IPC_LOCK lifts the memory-lock limit.
fn has_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Turns core dumps off and, when `lock_memory`, locks pages in memory.
/// Logs one clear line for whatever it could not do; never fails the start.
pub fn harden(lock_memory: bool) -> Hardening {
    let core_limit = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) });
    let dumpable = set_dumpable_behavior(DumpableBehavior::NotDumpable);
    let core_dumps_off = core_limit.is_ok() && dumpable.is_ok();
    if let Err(e) = core_limit.and(dumpable) {
        tracing::warn!(error = %e, "could not turn core dumps off; a crash could write key material to disk");
    }

    let mut memory_locked = false;
    if lock_memory {
        let limit = getrlimit(Resource::Memlock);
        if limit.current.is_none() || has_ipc_lock() {
            match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT) {
                Ok(()) => memory_locked = true,
                Err(e) => tracing::warn!(error = %e, "mlockall failed; key pages may be swapped out"),
            }
        } else {
            tracing::warn!(
                memlock_limit_bytes = limit.current.unwrap_or(0),
                "not locking key pages in memory: RLIMIT_MEMLOCK is limited and CAP_IPC_LOCK is missing; set \
                 LimitMEMLOCK=infinity (systemd) or grant CAP_IPC_LOCK, or set memory.lock_keys = false to silence this"
            );
        }
    }
    tracing::info!(core_dumps_off, memory_locked, "process memory hygiene applied");
    Hardening { core_dumps_off, memory_locked }
}
