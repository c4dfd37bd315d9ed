"""The tutorial's chat (examples/chat, docs/tutorial.rst): its own tests pass as a project of
their own (``pytest`` in its folder, importing ``app`` from there), and the app runs as the
tutorial deploys it: two gunicorn gevent workers on a Redis backplane behind nginx, every
message reaching every subscriber of its room and no one else."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import requests

from flask_rtbroker.testing import ReadTimeout, SSEClient
from tests.jsrun import JS_DIR, require_node
from tests.live import HOST, ROOT, free_port
from tests.netns import kill_group, wait_tcp
from tests.redis_server import RedisServer

CHAT = ROOT / "examples" / "chat"
TUTORIAL = (ROOT / "docs" / "tutorial.rst").read_text()
NGINX_MAIN = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/chat.conf;
}}
"""


def test_the_tutorials_tests_pass_in_their_own_folder() -> None:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=CHAT, env=environment,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0 and "5 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


def started(command: list[str], cwd: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def chat_behind_nginx(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    """The tutorial's deployment on loopback: gunicorn ``-w 2`` on Redis, nginx in front; its URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        pytest.fail("nginx is not installed (scripts/test.sh installs it)")
    app_port, nginx_port = free_port(), free_port()
    gunicorn = started(
        [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2", "--preload", "--graceful-timeout", "1",
         "-b", f"{HOST}:{app_port}", "app:create_app()"],
        CHAT, tmp_path / "gunicorn.log",
        {"CHAT_SECRET_KEY": "tutorial", "CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
         "RTBROKER_BACKPLANE": redis_server.url, "RTBROKER_TRUSTED_PROXY_HEADERS": '["X-Real-IP"]',
         "RTBROKER_HEARTBEAT": "0"},
    )
    site = (CHAT / "nginx.conf").read_text()
    assert "server 127.0.0.1:8000;" in site and "listen 8080;" in site
    site = site.replace("server 127.0.0.1:8000;", f"server {HOST}:{app_port};")
    (tmp_path / "chat.conf").write_text(site.replace("listen 8080;", f"listen {HOST}:{nginx_port};"))
    (tmp_path / "nginx.conf").write_text(NGINX_MAIN.format(dir=tmp_path))
    proxy = started([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)], tmp_path, tmp_path / "nginx.log", {})
    try:
        wait_tcp(HOST, app_port, 30, gunicorn, "gunicorn")
        wait_tcp(HOST, nginx_port, 10, proxy, "nginx")
        yield f"http://{HOST}:{nginx_port}"
    finally:
        kill_group(proxy, 15)
        kill_group(gunicorn, 15)
        print((tmp_path / "gunicorn.log").read_text(errors="replace")[-3000:])


def test_two_workers_on_redis_behind_nginx_deliver_every_message_to_its_room(chat_behind_nginx: str) -> None:
    url = chat_behind_nginx
    port = int(url.rsplit(":", 1)[1])
    token = {name: requests.post(f"{url}/api/login", json={"name": name}, timeout=10).json()["token"]
             for name in ("alice", "bob", "carol")}
    readers = {name: SSEClient.connect(HOST, port) for name in ("alice", "bob", "carol", "guest")}
    try:
        for name, stream in readers.items():
            rooms = ["room/general", "room/staff"] if name in ("alice", "bob") else ["room/general"]
            headers = {"Authorization": token[name]} if name in token else {}
            answer = requests.post(f"{url}/api/realtime", json={"clientId": stream.client_id, "subscriptions": rooms},
                                   headers=headers, timeout=10)
            assert answer.status_code == 204, answer.text
        refused = requests.post(f"{url}/api/realtime", json={"clientId": readers["carol"].client_id,
                                "subscriptions": ["room/staff"]}, headers={"Authorization": token["carol"]}, timeout=10)
        assert refused.status_code == 403

        texts = [f"hello {n}" for n in range(6)]
        for text in texts:  # through nginx to either worker
            posted = requests.post(f"{url}/api/rooms/general/messages", json={"text": text},
                                   headers={"Authorization": token["carol"]}, timeout=10)
            assert posted.status_code == 201, posted.text
        requests.post(f"{url}/api/rooms/staff/messages", json={"text": "psst"},
                      headers={"Authorization": token["alice"]}, timeout=10).raise_for_status()
        for name, stream in readers.items():
            expected = [("room/general", text) for text in texts]
            if name in ("alice", "bob"):
                expected.append(("room/staff", "psst"))
            received = []
            for _ in expected:
                event = stream.next_event(timeout=10)
                received.append((event.name, json.loads(event.data)["record"]["text"]))
            assert received == expected, name
        for stream in (readers["carol"], readers["guest"]):
            with pytest.raises(ReadTimeout):
                stream.next_event(timeout=0.3)  # the private room's message did not reach them
    finally:
        for stream in readers.values():
            stream.close()


def tutorial_javascript(url: str) -> str:
    """The tutorial's JS SDK snippet, pointed at *url*."""
    block = TUTORIAL.split(".. code-block:: javascript\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    script = "\n".join(lines)
    assert '"http://127.0.0.1:8080"' in script
    return script.replace('"http://127.0.0.1:8080"', json.dumps(url))


def test_the_tutorials_js_snippet_signs_in_follows_a_private_room_and_writes(
    chat_behind_nginx: str, tmp_path: Path,
) -> None:
    node = require_node()
    (tmp_path / "node_modules").symlink_to(JS_DIR / "node_modules")
    (tmp_path / "snippet.mjs").write_text(tutorial_javascript(chat_behind_nginx))
    snippet = subprocess.Popen([node, "snippet.mjs"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert snippet.stdout is not None
        printed = select.select([snippet.stdout], [], [], 15)[0] and snippet.stdout.readline()
    finally:
        snippet.terminate()
        errors = snippet.communicate(timeout=10)[1]
    assert printed == "alice hello\n", f"stdout: {printed!r}\nstderr: {errors[-3000:]}"
