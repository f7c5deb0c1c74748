"""Linux Landlock from Python (ctypes; no third-party import, so a process can confine
itself before anything starts a thread).

`landlock_restrict_self` confines the calling thread and the threads and processes it starts
afterwards, never threads that already exist: call `restrict_to_reading` while the process has
one thread (`thread_count() == 1`), and again (narrower) before starting the threads that must
be narrower. Rulesets stack: a later call can only take rights away.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable
from pathlib import Path


class SandboxUnavailable(RuntimeError):
    """The kernel cannot confine the process (no Landlock): refuse rather than run unconfined."""


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


# linux/landlock.h; the syscall numbers are the same on x86_64 and aarch64.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH = 1
_FS_READ_FILE, _FS_READ_DIR = 1 << 2, 1 << 3
#: All filesystem rights known to each ABI (1: 13 rights; 2: REFER; 3: TRUNCATE; 5: IOCTL_DEV).
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_NET_ALL = (1 << 0) | (1 << 1)  # BIND_TCP, CONNECT_TCP (ABI 4)
_SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract unix sockets, signals (ABI 6)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none)."""
    if not sys.platform.startswith("linux"):
        return 0
    r = _libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(r), 0)


#: Files DuckDB reads when it starts (CPU count and cgroup limits; found with strace: without
#: them `duckdb.connect` aborts). Read-only, and they name no data.
SYSTEM_FILES = (
    "/proc/self/cgroup",
    "/proc/stat",
    "/proc/meminfo",
    "/sys/devices/system/cpu/online",
    "/sys/fs/cgroup",
)


def restrict_to_reading(paths: Iterable[Path | str]) -> None:
    """Confine this process for good: read files beneath `paths` (folders, or single files),
    nothing else on any path; no TCP, no signals or abstract sockets outside (where the ABI
    knows them). Paths that do not exist are skipped."""
    abi = landlock_abi()
    if abi < 1:
        raise SandboxUnavailable(
            "the SQL sandbox needs Linux Landlock (kernel 5.13 or later, not blocked by "
            "seccomp); free SQL is refused rather than run unconfined"
        )
    libc = _libc()
    attr = _RulesetAttr(_FS_BY_ABI.get(abi, (1 << 16) - 1), 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net, size = _NET_ALL, 16
    if abi >= 6:
        attr.scoped, size = _SCOPE_ALL, 24
    fd = libc.syscall(
        _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
    )
    if fd < 0:
        raise SandboxUnavailable(f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        for p in paths:
            try:
                dfd = os.open(p, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                folder = os.path.isdir(f"/proc/self/fd/{dfd}")
                rule = _PathBeneath(_FS_READ_FILE | (_FS_READ_DIR if folder else 0), dfd)
                if libc.syscall(_SYS_ADD_RULE, fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0):
                    raise SandboxUnavailable(
                        f"landlock_add_rule: {os.strerror(ctypes.get_errno())}"
                    )
            finally:
                os.close(dfd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
            raise SandboxUnavailable(f"no_new_privs: {os.strerror(ctypes.get_errno())}")
        if libc.syscall(_SYS_RESTRICT_SELF, fd, 0):
            raise SandboxUnavailable(f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
