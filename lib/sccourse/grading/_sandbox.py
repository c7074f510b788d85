"""The grading sandbox: a Jupyter kernel inside bubblewrap, without network, with resource limits.

The kernel sees a read-only view of the system (``/usr``, ``/etc``), the Python installation, the virtual
environment, the ``sccourse`` package and the course data (cache and a local mirror), a private ``/tmp``, and one
writable folder: the submission being graded. It does not see the course folder (``solutions/``, ``source/``,
``gradebook.db``, other students' submissions, the exchange). It runs in its own network namespace (no network,
not even the grader's loopback: the kernel talks to the grader over ZeroMQ ``ipc`` sockets in a private folder
bound into the sandbox), its own PID namespace, as an unprivileged user with no capabilities, under limits on
address space, processes and CPU time (``prlimit``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

KERNEL_EXTENSION = "sccourse.grading._kernel"


class SandboxUnavailableError(RuntimeError):
    """bubblewrap (or prlimit / setpriv) is missing, so a sandboxed kernel cannot be started."""


def missing_tools() -> list[str]:
    """Names of the programs the sandbox needs that are not on PATH."""
    return [t for t in ("bwrap", "prlimit", "setpriv") if shutil.which(t) is None]


def _package_root() -> Path:
    import sccourse

    return Path(sccourse.__file__).resolve().parents[1]


@dataclass
class Sandbox:
    """How a sandboxed kernel is started.

    Parameters
    ----------
    workdir
        The one writable folder (the submission's copy), also the kernel's working directory.
    memory_bytes, cpu_seconds, max_processes
        ``RLIMIT_AS``, ``RLIMIT_CPU`` (all threads together, for the whole notebook) and ``RLIMIT_NPROC``.
    readonly
        Extra folders to show read-only.
    env
        Extra environment variables for the kernel (the rest of the grader's environment is not passed on,
        except thread-count and data-location variables).
    """

    workdir: Path
    memory_bytes: int = 16 * 2**30
    cpu_seconds: int = 4 * 3600
    max_processes: int = 512
    readonly: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    PASS_ENV = (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "LANG",
        "LC_ALL",
        "TZ",
        "PYTHONHASHSEED",
    )

    def uid(self) -> int:
        """An unprivileged user id of this sandbox's own (so that process limits are not shared)."""
        digest = hashlib.sha256(str(self.workdir).encode()).digest()
        return 200_000 + int.from_bytes(digest[:4], "little") % 100_000

    def data_paths(self) -> tuple[list[Path], dict[str, str]]:
        from sccourse import datasets

        paths, env = [datasets._REGISTRY_PATH.resolve().parent], {}
        cache = datasets.cache_dir().resolve()
        env["SCCOURSE_DATA_DIR"] = str(cache)
        if cache.is_dir():
            paths.append(cache)
        mirror = datasets.mirror()
        if mirror and not mirror.startswith(("http://", "https://", "file://")) and Path(mirror).is_dir():
            paths.append(Path(mirror).resolve())
            env["SCCOURSE_DATA_MIRROR"] = str(Path(mirror).resolve())
        else:
            env["SCCOURSE_DATA_MIRROR"] = ""
        return paths, env

    def command(self, kernel_cmd: list[str], *, ipc_dir: Path) -> list[str]:
        """The full command: prlimit → bwrap → setpriv → the kernel."""
        if missing_tools():
            raise SandboxUnavailableError(
                f"the grading sandbox needs {', '.join(missing_tools())} (Debian/Ubuntu: "
                "`apt-get install bubblewrap util-linux`); to grade without a sandbox anyway, pass "
                "--SandboxedExecute.sandbox=False (not recommended: student code then runs with your rights)"
            )
        workdir = Path(self.workdir).resolve()
        made: set[str] = set()

        def parents(p: Path) -> list[str]:
            out = []
            for a in reversed(Path(p).parents):
                if str(a) == "/" or str(a) in made:
                    continue
                made.add(str(a))
                out += ["--perms", "0755", "--dir", str(a)]
            return out

        args = [
            "prlimit",
            f"--as={self.memory_bytes}",
            f"--cpu={self.cpu_seconds}",
            f"--nproc={self.max_processes}",
            "--",
            "bwrap",
            "--unshare-net",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--perms",
            "1777",
            "--tmpfs",
            "/dev/shm",
            "--perms",
            "1777",
            "--tmpfs",
            "/tmp",
            "--ro-bind",
            "/usr",
            "/usr",
            "--ro-bind",
            "/etc",
            "/etc",
        ]
        made |= {"/usr", "/etc", "/tmp"}
        for p in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(p):
                args += ["--symlink", os.readlink(p), p]
            elif os.path.isdir(p):
                args += ["--ro-bind", p, p]
        data, data_env = self.data_paths()
        shown = [
            Path(os.path.realpath(sys.base_prefix)),
            Path(sys.prefix).resolve(),
            _package_root(),
            *data,
            *map(Path, self.readonly),
        ]
        seen = set()
        for p in shown:
            if str(p) in seen or str(p).startswith("/usr/") or not p.exists():
                continue
            seen.add(str(p))
            args += parents(p) + ["--ro-bind", str(p), str(p)]
        for p in (ipc_dir, workdir):
            args += parents(p) + ["--bind", str(p), str(p)]
        env = {
            "HOME": "/tmp/home",
            "IPYTHONDIR": "/tmp/ipython",
            "MPLCONFIGDIR": "/tmp/matplotlib",
            "NUMBA_CACHE_DIR": "/tmp/numba",
            "XDG_CACHE_HOME": "/tmp/cache",
            "USER": "student",
            "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin",
            "PYTHONNOUSERSITE": "1",
            "NBGRADER_EXECUTION": "autograde",
            "SCCOURSE_GRADING": "1",
            "TQDM_DISABLE": "1",
        }
        env.update({k: os.environ[k] for k in self.PASS_ENV if k in os.environ})
        env.update(data_env)
        env.update(self.env)
        args += ["--clearenv"]
        for k, v in env.items():
            args += ["--setenv", k, v]
        uid = str(self.uid())
        args += [
            "--chdir",
            str(workdir),
            "--",
            "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
        return args + list(kernel_cmd) + [f"--IPKernelApp.extensions={KERNEL_EXTENSION}"]

    def grant(self) -> None:
        """Let the sandbox user write the working folder (called before the kernel starts)."""
        uid = self.uid()
        for root, _dirs, files in os.walk(self.workdir):
            os.chown(root, uid, uid)
            for f in files:
                os.chown(os.path.join(root, f), uid, uid, follow_symlinks=False)

    def reclaim(self) -> None:
        """Give the working folder back to the grader's user (called after the kernel stops)."""
        me, group = os.getuid(), os.getgid()
        for root, _dirs, files in os.walk(self.workdir):
            os.chown(root, me, group)
            for f in files:
                os.chown(os.path.join(root, f), me, group, follow_symlinks=False)


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager that starts its kernel inside a :class:`Sandbox`, talking over ``ipc`` sockets."""

    sandbox: Sandbox | None = None

    def __init__(self, *args, sandbox: Sandbox, **kwargs):
        self._ipc_dir = Path(tempfile.mkdtemp(prefix="sccourse-kernel-"))
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("ip", str(self._ipc_dir / "kernel"))
        kwargs.setdefault("connection_file", str(self._ipc_dir / "connection.json"))
        super().__init__(*args, **kwargs)
        self.sandbox = sandbox

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        uid = self.sandbox.uid()
        os.chown(self._ipc_dir, uid, uid)
        os.chmod(self._ipc_dir, 0o700)
        os.chown(self.connection_file, uid, uid)
        self.sandbox.grant()
        return self.sandbox.command(cmd, ipc_dir=self._ipc_dir)

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False):
        try:
            await super()._async_shutdown_kernel(now=now, restart=restart)
        finally:
            if not restart:
                self.sandbox.reclaim()
                shutil.rmtree(self._ipc_dir, ignore_errors=True)

    shutdown_kernel = _async_shutdown_kernel
