//! The confinement the sandbox process puts itself under, first thing in
//! `main`, before it reads a byte of the model:
//!
//! 1. it dies with its parent (`PR_SET_PDEATHSIG`);
//! 2. resource limits: no core files, no file growth (`RLIMIT_FSIZE` 0),
//!    private memory (`RLIMIT_DATA`) and CPU time (`RLIMIT_CPU`) bounded;
//! 3. started as root, it becomes an unprivileged user (default `nobody`);
//! 4. `no_new_privs`: nothing it runs can gain privileges;
//! 5. Landlock: the file system is read-only and limited to system
//!    libraries (the model and the batches come through shared memory,
//!    read by the host: no data file is readable); no file may be written,
//!    created, removed or renamed anywhere; no TCP port bound or connected;
//!    no signal sent or abstract socket reached outside the sandbox;
//! 6. seccomp: no sockets, no new processes or programs, no tracing other
//!    processes, no kernel interfaces a model has no use for (mounts,
//!    namespaces, BPF, keyrings, io_uring, modules, ...).
//!
//! Each layer holds on its own; together they leave a module's code able to
//! compute on the tensors it is given and nothing else.

// setuid/setgid/setgroups through libc: the calls have no safe wrapper.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use rustix::process::{Resource, Rlimit};
use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};

use crate::protocol::Policy;

/// What the confinement achieved, for the sandbox's first log line.
#[derive(Debug)]
pub struct Confinement {
    pub landlock: &'static str,
    pub uid: u32,
}

/// Confines the calling process (while it has one thread: Landlock and the
/// limits then cover every thread libtorch starts later).
pub fn confine(policy: &Policy) -> Result<Confinement, String> {
    limits(policy)?;
    let uid = drop_privileges(policy)?;
    // After the change of user: a change of credentials clears it.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("cannot tie the sandbox to its parent: {e}"))?;
    if rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
        return Err("the parent is gone".to_owned());
    }
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    let landlock = landlock(policy)?;
    seccomp()?;
    Ok(Confinement { landlock, uid })
}

fn limits(policy: &Policy) -> Result<(), String> {
    let set = |resource: Resource, value: u64, what: &str| {
        rustix::process::setrlimit(resource, Rlimit { current: Some(value), maximum: Some(value) })
            .map_err(|e| format!("cannot limit {what}: {e}"))
    };
    set(Resource::Core, 0, "core files")?;
    set(Resource::Fsize, 0, "file sizes")?;
    if policy.memory_bytes > 0 {
        set(Resource::Data, policy.memory_bytes, "memory")?;
    }
    if policy.cpu_seconds > 0 {
        set(Resource::Cpu, policy.cpu_seconds, "CPU time")?;
    }
    Ok(())
}

fn drop_privileges(policy: &Policy) -> Result<u32, String> {
    let euid = rustix::process::geteuid().as_raw();
    let Some((uid, gid)) = policy.run_as.filter(|_| euid == 0) else { return Ok(euid) };
    // SAFETY: plain system calls on this process's credentials; the process
    // has one thread (see `confine`), so no thread keeps the old ones.
    let failed =
        unsafe { libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 };
    if failed {
        return Err(format!("cannot switch to user {uid}:{gid}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(0) } == 0 {
        return Err("switched user but could regain root".to_owned());
    }
    Ok(uid)
}

/// Paths every process needs to read to run libtorch: shared libraries
/// (some are loaded lazily) and the CPU topology.
const SYSTEM_READ: &[&str] = &[
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/sys/devices/system/cpu",
    "/sys/devices/system/node",
    // libtorch's cpuinfo aborts the process when it cannot parse this.
    "/proc/cpuinfo",
    // A generator seeded for the first time reads entropy (and aborts
    // the process when it cannot).
    "/dev/urandom",
];

fn landlock(policy: &Policy) -> Result<&'static str, String> {
    let abi = ABI::V6;
    let error = |e: landlock::RulesetError| format!("cannot set up Landlock: {e}");
    let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
    read.extend(policy.library_dirs.iter().cloned());
    let cuda = policy.device.starts_with("cuda");
    let mut read_write: Vec<PathBuf> = Vec::new();
    if cuda {
        // The driver's device files (ioctl needs them open read-write) and
        // what it reads of the system.
        read.extend(["/proc/driver/nvidia", "/sys", "/proc/self"].map(PathBuf::from));
        read_write.extend(nvidia_devices());
    }
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(error)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(error)?
        .scope(Scope::from_all(abi))
        .map_err(error)?
        .create()
        .map_err(error)?
        .add_rules(path_beneath_rules(&read, AccessFs::from_read(abi)))
        .map_err(error)?
        .add_rules(path_beneath_rules(&read_write, AccessFs::from_read(abi) | AccessFs::WriteFile))
        .map_err(error)?
        .restrict_self()
        .map_err(error)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok("fully enforced"),
        RulesetStatus::PartiallyEnforced => Ok("partially enforced (an older kernel)"),
        RulesetStatus::NotEnforced if policy.require_landlock => {
            Err("this kernel cannot enforce Landlock (Linux 5.13 or later with Landlock enabled is needed); \
             uploaded models are not run without it (set sandbox_require_landlock = false to run them with \
             seccomp and resource limits only)"
                .to_owned())
        }
        RulesetStatus::NotEnforced => Ok("not available on this kernel"),
    }
}

fn nvidia_devices() -> Vec<PathBuf> {
    std::fs::read_dir("/dev")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("nvidia")))
                .collect()
        })
        .unwrap_or_default()
}

/// System calls the sandbox refuses (EPERM): networking, new processes,
/// other processes' memory, and kernel interfaces no model needs.
const DENIED: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_execve,
    libc::SYS_execveat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_fork,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_vfork,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_getfd,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_personality,
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setgroups,
    libc::SYS_memfd_create,
];

fn target_arch() -> seccompiler::TargetArch {
    #[cfg(target_arch = "x86_64")]
    return seccompiler::TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    return seccompiler::TargetArch::aarch64;
}

fn seccomp() -> Result<(), String> {
    fn error(e: impl std::fmt::Display) -> String {
        format!("cannot set up seccomp: {e}")
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|&call| (call, Vec::new())).collect();
    // Threads, yes (clone with CLONE_THREAD); new processes, no.
    let no_thread =
        SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64), 0)
            .map_err(error)?;
    rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![no_thread]).map_err(error)?]);
    let deny = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), target_arch())
        .map_err(error)?;
    // clone3 passes its flags in memory, out of a filter's sight: ENOSYS
    // makes glibc fall back to clone, which the rule above judges.
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        target_arch(),
    )
    .map_err(error)?;
    for filter in [deny, clone3] {
        let program: seccompiler::BpfProgram = filter.try_into().map_err(error)?;
        seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("cannot apply seccomp: {e}"))?;
    }
    Ok(())
}

/// The directory holding a loaded shared library whose file name starts
/// with `prefix` (libtorch's, found in this process's mappings).
#[must_use]
pub fn loaded_library_dir(prefix: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().filter_map(|line| line.split_whitespace().nth(5)).map(Path::new).find_map(|path| {
        path.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            .then(|| path.parent().map(Path::to_path_buf))?
    })
}
