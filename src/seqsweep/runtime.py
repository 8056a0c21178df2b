"""The runtime of a training stage: how its repeats train besides their params, decided once and
handed explicitly to every place a cell trains.

A `Runtime` holds the engine (fit or fused), the Keras backend it runs on, the platform and device the
cells train on, and whether kernels are deterministic. `Runtime.env(...)` is the one environment that
makes a process train that way (Keras's backend, TensorFlow's and XLA's deterministic flags, quiet
logs, JAX's persistent compilation cache and, for a worker, its share of the machine: threads or
device memory). It is computed from the runtime's fields and the user's own XLA_FLAGS and
JAX_COMPILATION_CACHE_DIR captured once, never from whatever the environment holds at that moment,
so applying it twice or in another order gives the same process.

Who applies it:
- the stage process: `resolve` (below), before Keras, TensorFlow or Ray is imported;
- each local pool worker: its initializer, with the worker's share (workers.py);
- each Ray task: as the task's runtime environment (workers.py);
- `tools/rerun`: `Runtime.recorded(tags)`, the runtime a repeat's MLflow run recorded.

JAX must know its XLA flags before it starts, and the platform (is there a GPU?) is only known by
starting it; so `resolve` applies the flags that do not depend on the choice first, then asks JAX (or
the Ray cluster) for the platform, then chooses the engine and sets the backend. Every training
process records what it actually ran with (`seen`), and the tests read that back from MLflow."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from importlib import metadata

from seqsweep import paths, stopping

DETERMINISTIC_XLA = "--xla_gpu_deterministic_ops=true"
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false"  # XLA's own flag; one Eigen thread for CPU ops
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")

# JAX's persistent compilation cache: every program JAX compiles is written to a folder and loaded, not
# compiled, by any later process that compiles the same program with the same flags and versions (JAX
# keys it on all of them; a loaded program is the compiled one, so results do not change). The plan's
# calibration compiles what the stage then loads; so do a rerun after a crash, a grown grid, each pool
# worker and Ray task. Every compilation is kept, not only those over a second (JAX's default): a stage
# compiles some forty small programs (Keras's initialisers, a few tenths of a second each) besides its
# training program. JAX_COMPILATION_CACHE_DIR, if the user set it, is the folder; otherwise seqsweep's
# in the user's cache (paths.user_cache), on a Ray node that node's own (Ray expands ${HOME} there).
# JAX_ENABLE_COMPILATION_CACHE=false turns it off.
COMPILATION_CACHE_BYTES = 4 * 1024**3  # beyond this, JAX evicts the least recently used programs
RAY_NODE_COMPILATION_CACHE = "${HOME}/.cache/seqsweep/jax"


@dataclass(frozen=True)
class Runtime:
    """How the cells of one stage train; the same for every cell, wherever it runs."""

    engine: str  # fit | fused
    backend: str  # the Keras backend: tensorflow | jax
    platform: str  # where cells train: cpu | gpu | tpu
    deterministic: bool
    device: str = ""  # the device kind, e.g. `cpu` or `gpu:NVIDIA H200`, when known to the stage
    reason: str = ""  # why this engine (printed when it was not asked for)
    user_xla_flags: str = ""  # XLA_FLAGS as the user set them, kept in front of ours
    user_compilation_cache: str = ""  # JAX_COMPILATION_CACHE_DIR as the user set it

    def env(
        self, *, threads: int | None = None, gpu_memory_fraction: float | None = None, on_ray_node: bool = False
    ) -> dict[str, str]:
        """The environment of a process that trains with this runtime; `threads` (a CPU worker's
        cores) or `gpu_memory_fraction` (a worker's share of one GPU) for a worker; `on_ray_node` for
        a Ray task, which may run on another machine."""
        env = {"KERAS_BACKEND": self.backend, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        ours = RAY_NODE_COMPILATION_CACHE if on_ray_node else str(paths.user_cache() / "jax")
        env["JAX_COMPILATION_CACHE_DIR"] = self.user_compilation_cache or ours
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(COMPILATION_CACHE_BYTES)
        xla = self.user_xla_flags.split()
        if self.deterministic:
            env["TF_DETERMINISTIC_OPS"] = "1"
            xla.append(DETERMINISTIC_XLA)
        if threads is not None:
            env.update({name: str(threads) for name in THREAD_VARIABLES})
            env["TF_NUM_INTEROP_THREADS"] = "1"
            if threads == 1:
                xla.append(SINGLE_THREAD_XLA)
        if gpu_memory_fraction is not None:
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{gpu_memory_fraction:g}"
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        env["XLA_FLAGS"] = " ".join(dict.fromkeys(xla))  # each flag once, in order
        return env

    def apply(self, **share) -> None:
        """Make this process train with this runtime (before Keras, TensorFlow or JAX is imported)."""
        os.environ.update(self.env(**share))
        if not self.deterministic:  # env() only sets it; an inherited one must go
            os.environ.pop("TF_DETERMINISTIC_OPS", None)

    def versions(self) -> str:
        """The library versions that decide this runtime's results: Keras, and JAX + jaxlib or TensorFlow."""
        return " ".join(f"{name}-{_installed(name)[1]}" for name in libraries(self.backend))

    def key(self) -> str:
        """What of the runtime enters every reuse key: versions, backend, device, engine, determinism."""
        device = self.device or self.platform
        return f"{self.versions()} {self.backend} {device} {self.engine} det{int(self.deterministic)}"

    def tags(self) -> dict[str, str]:
        return {"engine": self.engine, "backend": self.backend, "runtime": self.key()}

    @classmethod
    def recorded(cls, tags: dict[str, str], platform: str) -> Runtime:
        """The runtime a repeat's MLflow run recorded (its engine, backend and determinism), on `platform`."""
        return cls(
            engine=tags.get("engine", "fit"),
            backend=tags.get("backend", "tensorflow"),
            platform=platform,
            deterministic=tags.get("deterministic", "true") == "true",
            reason="as recorded",
            user_xla_flags=_user_xla_flags(),
            user_compilation_cache=_user_compilation_cache(),
        )


def libraries(backend: str) -> tuple[str, ...]:
    """The libraries whose versions decide what a model trained on `backend` computes."""
    return ("keras", "jax", "jaxlib") if backend == "jax" else ("keras", "tensorflow")


def requirements(backend: str) -> list[str]:
    """The pip requirements of a model trained on `backend` in this process, pinned as installed: its
    libraries and NumPy. A model logged with them loads with what trained it; without them MLflow would
    infer them by loading the model in a second process: 13-19 CPU-s per model here against 3-7, and on
    JAX it missed jaxlib (bench/bench_log_model.py)."""
    installed = [_installed(name) for name in (*libraries(backend), "numpy")]
    return [f"{name}=={version}" for name, version in installed if version != "none"]


def _installed(library: str) -> tuple[str, str]:
    """(distribution, version) of `library` as installed (TensorFlow may be its CPU-only build), or
    (library, 'none')."""
    for name in {"tensorflow": ("tensorflow", "tensorflow-cpu")}.get(library, (library,)):
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return library, "none"


def _user_compilation_cache() -> str:
    return os.environ.get("JAX_COMPILATION_CACHE_DIR", "")


def _user_xla_flags() -> str:
    ours = {DETERMINISTIC_XLA, SINGLE_THREAD_XLA}
    return " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f not in ours)


def decide(requested: str, deterministic: bool, models: list[str], on_ray: bool) -> dict[str, Runtime]:
    """The runtime of each of `models` ('har:lstm', ...), decided from the same facts and applied to no
    one: train.engine resolved (see engines.choose) on the platform the cells will train on (this
    machine's JAX, or the Ray cluster's GPUs). The deterministic flags and the compilation cache are set
    in this process first, because asking JAX for the platform starts it and XLA reads its flags once."""
    from seqsweep import engines

    flags_only = Runtime(
        "",
        os.environ.get("KERAS_BACKEND") or "tensorflow",
        "",
        deterministic,
        user_xla_flags=_user_xla_flags(),
        user_compilation_cache=_user_compilation_cache(),
    )
    pending = flags_only.env()
    pending.pop("KERAS_BACKEND")
    os.environ.update(pending)  # before JAX starts in the next lines
    found = engines.here()
    if on_ray:
        from seqsweep import workers

        platform = workers.cluster_platform()
    else:
        platform = found.jax or "cpu"
    out = {}
    for model in models:
        choice = engines.choose(requested, platform, model, found)
        runtime = replace(
            flags_only, engine=choice.engine, backend=choice.backend, platform=platform, reason=choice.reason
        )
        out[model] = replace(runtime, device=_device(runtime, on_ray))
    return out


def resolve(requested: str, deterministic: bool, model: str, on_ray: bool) -> Runtime:
    """The stage's runtime for `model` ('har:lstm'), applied to this process (see `decide`)."""
    runtime = decide(requested, deterministic, [model], on_ray)[model]
    runtime.apply()
    return runtime


def _device(runtime: Runtime, on_ray: bool) -> str:
    """The device kind cells train on, as far as the stage can tell: `cpu`, or a local GPU's kind."""
    if runtime.platform == "cpu" or on_ray or "jax" not in sys.modules:
        return runtime.platform
    import jax

    return f"{runtime.platform}:{jax.devices()[0].device_kind}"


def seen() -> dict[str, str]:
    """What the training code in this process actually runs with: Keras's backend, and the
    deterministic and thread flags as this process's TensorFlow and XLA read them."""
    from seqsweep.models import import_keras

    keras = import_keras()
    flags = os.environ.get("XLA_FLAGS", "").split()
    deterministic = DETERMINISTIC_XLA in flags and os.environ.get("TF_DETERMINISTIC_OPS") == "1"
    return {
        "backend": keras.backend.backend(),
        "deterministic": str(deterministic).lower(),
        "xla_flags": " ".join(flags),
    }


# TensorFlow's C++ runtime logs this at error level on every fit (Keras's tf.data input pipeline sets
# an attribute the installed op definition lacks, and TF ignores it), preceded by absl's notice that it
# logs to stderr: nothing a user did or can fix. These two lines, and only these, are dropped.
TF_NOISE = (
    b"NodeDef mentions attribute use_unbounded_threadpool",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
)


def drop_stderr_lines(needles: tuple[bytes, ...] = TF_NOISE) -> None:
    """Forward this process's stderr (file descriptor 2, where C++ logs go) through a filter that drops
    exactly the lines containing one of `needles`; everything else passes at once (progress bars
    included). Undone at exit, after the last line has been forwarded."""
    import atexit
    import threading

    read_fd, write_fd = os.pipe()
    original = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    starts = (b"E0000", b"WARNING: All log")  # only a line that may be one of them is held until complete

    def keep(line: bytes) -> bool:
        return not any(needle in line for needle in needles)

    def clean(line: bytes) -> bytes:
        """The line with its newline, or, for a noise line, only what came before the noise started
        (the tail of a progress bar's redraw that the noise was appended to)."""
        if keep(line):
            return line + b"\n"
        return line[: min((i for s in starts if (i := line.find(s)) >= 0), default=0)]

    def pump() -> None:
        pending = b""
        with os.fdopen(read_fd, "rb", buffering=0) as source:
            while chunk := source.read(1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                out = b"".join(clean(line) for line in lines)
                if pending and not any(pending.startswith(s) or s.startswith(pending) for s in starts):
                    out, pending = out + pending, b""
                _write_all(original, out)
        if keep(pending):
            _write_all(original, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last writer: the pump drains it and stops
        thread.join(timeout=5)

    atexit.register(restore)
    stopping.before_exit_now(restore)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
