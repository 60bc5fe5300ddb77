"""A fork server for the recipe tests: `audiovae` commands without paying torch's import each time.

Every stage of a recipe is a fresh `audiovae` process, and importing torch costs
about 5 s of CPU on the CI machines, which would make the recipe tests several
times slower than the work they check. The server imports the package once;
each command then runs in a forked child of it, with the client's own stdin,
stdout, stderr (passed over a Unix socket), working folder, environment and
arguments, and the client exits with the child's exit status. What runs is the
real command line (``audiovae.cli.main``), exactly as ``python -m audiovae``.

    server:  python tests/avserver.py serve SOCKET          (the tests start it)
    client:  python tests/avserver.py SOCKET ARGS...         (AUDIOVAE="python tests/avserver.py SOCKET")

The server never computes anything itself, so its children start with clean
thread pools (fork after an OpenMP region would not be safe).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("client went away")
        buf += chunk
    return buf


def client(path: str, argv: list[str]) -> int:
    msg = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        socket.send_fds(s, [struct.pack(">I", len(msg))], [0, 1, 2])
        s.sendall(msg)
        return struct.unpack(">i", _recv_exact(s, 4))[0]


def _child(conn: socket.socket, fds: list[int], req: dict) -> None:
    """In the forked child: become the command and exit with its status."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = ["audiovae", *req["argv"]]
        from audiovae.cli import cli

        try:
            cli.main(args=req["argv"], prog_name="audiovae", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - print like the interpreter would, then exit non-zero
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(path: str) -> None:
    import audiovae.cli  # noqa: F401  the heavy imports, once
    import audiovae.data.features  # noqa: F401
    import audiovae.tasks.evaluate  # noqa: F401
    import audiovae.tasks.generate  # noqa: F401
    import audiovae.training  # noqa: F401

    for mod in ("audiovae.data.corpora", "audiovae.data.download", "audiovae.audio._cpu_kernels", "audiovae.audio.pghi",
                "audiovae.models.conv", "audiovae.models.dense", "audiovae.models.image", "librosa", "scipy.signal"):
        try:
            __import__(mod)
        except ImportError:
            pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        head, fds, _, _ = socket.recv_fds(conn, 4, 3)
        if len(head) < 4:
            head += _recv_exact(conn, 4 - len(head))
        req = json.loads(_recv_exact(conn, struct.unpack(">I", head)[0]))
        if os.fork() == 0:  # a waiter forks the command and reports its status; the server accepts the next one
            srv.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            pid = os.fork()
            if pid == 0:
                _child(conn, fds, req)
            for fd in fds:
                os.close(fd)
            _, status, usage = os.wait4(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if os.environ.get("AVSERVER_RUSAGE"):  # CPU seconds of each command (and its children), for timing
                with open(os.environ["AVSERVER_RUSAGE"], "a") as fh:
                    fh.write(f"{usage.ru_utime + usage.ru_stime:.2f}\t{' '.join(req['argv'][:2])}\n")
            try:
                conn.sendall(struct.pack(">i", code if code >= 0 else 128 - code))
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)
        conn.close()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # no zombies from the waiters
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[1], sys.argv[2:]))
