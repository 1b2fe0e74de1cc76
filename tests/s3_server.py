"""A real S3-compatible server for tests: moto's standalone server (`python -m moto.server`), in
its own process on a private port, as s3fs's own test suite runs it.

Why a process and not moto's in-process mock: the mock patches botocore inside the test process
only, so a subprocess (a `weakly ingest` CLI run, a Ray worker, a writer killed mid-upload)
would not see it. A server on a port is reached the way a real endpoint is, from any process,
through the standard AWS_ENDPOINT_URL variable.

Fixture `s3_server` (module scope): one server per test module that asks for it. With
pytest-xdist each worker process runs its own fixtures, so parallel workers never share a server
or a port (ports come from `ports.free_ports`, below the ephemeral range). For the module's
duration os.environ names the server (`S3Server.env`), so plain `Store.at("s3://b/x")` and
subprocesses started with the default environment reach it; the variables are restored after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from ports import free_ports

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"

# Variables that would break or redirect the ones we set: a profile (it may be missing here,
# which stops botocore outright, or name its own endpoint and region), a session token (sent
# along with our keys), a service-specific endpoint (it wins over AWS_ENDPOINT_URL).
SHADOWING = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
)

# `python -m moto.server ARGS`, except that it dies with the test process that started it
# (PR_SET_PDEATHSIG), even when that one is SIGKILLed and never runs its teardown.
SERVE = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("the test process is gone")
from moto.server import main
main(sys.argv[2:])
"""


class S3Server:
    """moto's server on 127.0.0.1:`port`; start()/stop(), or use it as a context manager."""

    def __init__(self, log_dir: Path | None = None):
        (self.port,) = free_ports(1)
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="moto-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The variables a process needs to use this server through the standard AWS chain.
        AWS_EC2_METADATA_DISABLED: without keys botocore would ask the EC2 metadata service."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    @property
    def storage_options(self) -> dict:
        """s3fs options naming this server and its keys, independent of the environment."""
        return {
            "endpoint_url": self.endpoint,
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"region_name": REGION},
        }

    # -- process -------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        log = open(self.log_dir / "moto.log", "wb")
        args = ["-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(os.getpid()), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_server_env(),
            start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, which stops us
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not start on {self.endpoint}:\n{self.log()}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            with _no_proxy().open(f"{self.endpoint}/moto-api/data.json", timeout=2) as reply:
                return reply.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """SIGTERM (moto exits cleanly on it), SIGKILL after a grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return (self.log_dir / "moto.log").read_text(errors="replace")[-3000:]

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for tests ---------------------------------------------------------------------

    def client(self, service: str = "s3", **credentials):
        """A boto3 client on this server (for what Store does not do: buckets, uploads, IAM)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=credentials.get("key", ACCESS_KEY),
            aws_secret_access_key=credentials.get("secret", SECRET_KEY),
        )

    def bucket(self, name: str) -> str:
        """Create bucket `name` (if missing) and return its URL, `s3://name`."""
        s3 = self.client()
        try:
            s3.create_bucket(Bucket=name)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        return f"s3://{name}"

    @contextmanager
    def environ(self) -> Iterator[S3Server]:
        """os.environ names this server (and no AWS profile) inside the block, restored after.
        fsspec reuses filesystem instances across stores with equal options, and an instance
        keeps the endpoint and keys it resolved first: the cache is cleared on both edges."""
        saved = {k: os.environ.get(k) for k in (*self.env, *SHADOWING)}
        for name in SHADOWING:
            os.environ.pop(name, None)
        os.environ.update(self.env)
        _clear_s3fs_instances()
        try:
            yield self
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _clear_s3fs_instances()

    def read_only_options(self, user: str) -> dict:
        """Storage options for a new IAM user who may read and list any bucket but not write:
        only meaningful inside `enforce_auth()`, since moto ignores permissions by default."""
        iam = self.client("iam")
        iam.create_user(UserName=user)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
                    "Resource": "*",
                }
            ],
        }
        iam.put_user_policy(
            UserName=user, PolicyName="read-only", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return {**self.storage_options, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}

    @contextmanager
    def enforce_auth(self) -> Iterator[None]:
        """Inside the block moto checks every request's keys and IAM policies (server-wide, so
        the default keys stop working too); permissive again after, even if the block fails."""
        self._set_auth_after(0)
        try:
            yield
        finally:
            self._set_auth_after(float("inf"))

    def _set_auth_after(self, requests: float) -> None:
        """moto's switch: enforce permissions after this many more requests ("inf": never)."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=str(requests).encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form body would reach moto empty
        )
        with _no_proxy().open(request, timeout=10) as reply:
            assert reply.status == 200, reply.read()


def _server_env() -> dict[str, str]:
    """moto's own environment: none of the caller's AWS settings leak into the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("MOTO_PORT", None)  # moto takes it from -p
    return env


def _no_proxy() -> urllib.request.OpenerDirector:
    """urllib honours http_proxy; the server is on loopback."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _clear_s3fs_instances() -> None:
    try:
        import s3fs
    except ImportError:
        return
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A moto S3 server for this module, named by os.environ for the module's duration."""
    with S3Server(tmp_path_factory.mktemp("moto")) as server, server.environ():
        yield server
