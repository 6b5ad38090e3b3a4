#!/usr/bin/env python3
"""Preview server for the console's pages, stdlib only.

Serves the assets at the paths the Rust console uses and answers the JSON API
from the fixtures in api/ (see make_fixtures.py), with a little life added:
times are shifted to "now", consumer lag on the email edges grows, placed
orders appear in the list, traffic runs progress, and kill/stop/restart change
the component's state (restart takes a few seconds, like the real one).

    python3 serve.py                         # http://127.0.0.1:18999/
    python3 serve.py --token s3cret          # admin actions need the token
    python3 serve.py --control-disabled "the console does not own these processes"
    python3 serve.py --no-sample             # /api/map before the first sample
    python3 serve.py --fail /api/orders      # 503 with an error body for a path prefix
"""

import argparse
import copy
import datetime
import json
import os
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.dirname(HERE)
API = os.path.join(HERE, "api")
STARTED = time.time()

ASSET_TYPES = {
    "console.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "map.js": "text/javascript; charset=utf-8",
    "journey.js": "text/javascript; charset=utf-8",
}
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
COMPLETE_ID = "0193e8a4-5b1c-7d2e-9f4a-8c31d7e60b52"

lock = threading.Lock()
placed_orders = []  # newest first: {"order_id", "first_seen" (epoch s)}
overrides = {}  # component name -> (state, detail)
traffic = {"running": False, "per_second": 0, "seconds": 0, "placed": 0, "failed": 0, "target": 0, "last_error": None,
           "started": None, "stopped_at": None}


def load(name):
    with open(os.path.join(API, name)) as f:
        return json.load(f)


def iso(epoch):
    t = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def error_body(code, message):
    return {"error": {"code": code, "message": message}}


def traffic_status():
    """Progress of the simulated run, computed from the clock."""
    t = traffic
    if t["started"] is not None:
        end = t["stopped_at"] or time.time()
        done = min(t["target"], int((end - t["started"]) * t["per_second"]))
        t["failed"] = done // 40  # one in forty fails, to show the failure counter
        t["placed"] = done - t["failed"]
        t["last_error"] = "order service answered 503: database is restarting" if t["failed"] else None
        if done >= t["target"] or t["stopped_at"]:
            t["running"] = False
    return {k: v for k, v in t.items() if k not in ("started", "stopped_at")}


class Handler(BaseHTTPRequestHandler):
    server_version = "ordermesh-preview/1"

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            super().log_message(fmt, *args)

    # ---------------------------------------------------------------- io

    def send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(data)

    def send_file(self, path, content_type):
        with open(path, "rb") as f:
            self.send(200, f.read(), content_type)

    def authorized(self):
        token = self.server.token
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self.send(401, error_body("unauthorized", "this action needs the admin token (Authorization: Bearer …)"))
            return False
        return True

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def failing(self, path):
        prefix = self.server.fail
        if prefix and path.startswith(prefix):
            self.send(503, error_body("service_unavailable", f"preview: {path} fails on purpose (--fail {prefix})"))
            return True
        return False

    # ------------------------------------------------------------ routes

    def do_GET(self):
        path = urlsplit(self.path).path
        if self.failing(path):
            return
        if path == "/":
            return self.send_file(os.path.join(ASSETS, "map.html"), "text/html; charset=utf-8")
        if path.startswith("/orders/"):
            return self.send_file(os.path.join(ASSETS, "journey.html"), "text/html; charset=utf-8")
        if path.startswith("/assets/"):
            name = path[len("/assets/"):]
            if name in ASSET_TYPES:
                return self.send_file(os.path.join(ASSETS, name), ASSET_TYPES[name])
            return self.send(404, b"no such asset", "text/plain")
        if path == "/api/map":
            return self.send(200, self.map())
        if path == "/api/orders":
            return self.send(200, self.orders())
        if path.startswith("/api/orders/"):
            return self.journey(path[len("/api/orders/"):])
        if path == "/api/traffic":
            with lock:
                return self.send(200, traffic_status())
        self.send(404, error_body("not_found", f"no page {path}"))

    def do_POST(self):
        path = urlsplit(self.path).path
        if self.failing(path) or not self.authorized():
            return
        if path == "/api/orders":
            order_id = str(uuid.uuid4())
            with lock:
                placed_orders.insert(0, {"order_id": order_id, "first_seen": time.time()})
            return self.send(202, {"order_id": order_id, "status": "PLACED", "journey": f"/orders/{order_id}"})
        if path == "/api/traffic":
            return self.start_traffic(self.read_json())
        m = re.fullmatch(r"/api/components/([^/]+)/([^/]+)", path)
        if m:
            return self.act(*m.groups())
        self.send(404, error_body("not_found", f"no page {path}"))

    def do_DELETE(self):
        path = urlsplit(self.path).path
        if self.failing(path) or not self.authorized():
            return
        if path == "/api/traffic":
            with lock:
                if traffic["running"]:
                    traffic["stopped_at"] = time.time()
                return self.send(200, traffic_status())
        self.send(404, error_body("not_found", f"no page {path}"))

    # ----------------------------------------------------------- answers

    def control(self):
        reason = self.server.control_disabled
        return {"enabled": reason is None, "reason": reason, "token_required": bool(self.server.token)}

    def map(self):
        if self.server.no_sample:
            return {"control": self.control()}
        sample = load("map.json")
        now = time.time()
        sample["sampled_at"] = iso(now - 0.35)
        sample["control"] = self.control()
        # email is down in the fixture: its lag grows while the preview runs.
        grow = int((now - STARTED) / 1.5)
        for edge in sample["edges"]:
            if edge["to"] == "email" and edge["waiting"]:
                edge["waiting"] += grow
        with lock:
            for component in sample["components"]:
                if component["name"] in overrides:
                    component["state"], component["detail"] = overrides[component["name"]]
                    if component["state"] == "down":
                        component.update(outbox=None, published_per_second=None, consumed_per_second=None)
                        # A dead broker: the console cannot tell what waits in it.
                        for edge in sample["edges"]:
                            if edge["broker"] == component["name"]:
                                edge.update(waiting=None, per_second=None)
        return sample

    def orders(self):
        listed = load("orders.json")["orders"]
        newest = max(datetime.datetime.fromisoformat(o["first_seen"].replace("Z", "+00:00")).timestamp() for o in listed)
        shift = time.time() - 3.0 - newest
        for o in listed:
            t = datetime.datetime.fromisoformat(o["first_seen"].replace("Z", "+00:00")).timestamp() + shift
            o["first_seen"] = iso(t)
        with lock:
            fresh = [{"order_id": p["order_id"], "first_seen": iso(p["first_seen"]),
                      "status": "COMPLETED" if time.time() - p["first_seen"] > 1 else "PLACED",
                      "services": ["order", "stock", "payment", "shipping", "email", "loyalty"], "spans": 41}
                     for p in placed_orders]
        return {"orders": (fresh + listed)[:30]}

    def journey(self, order_id):
        if not UUID_RE.match(order_id):
            return self.send(400, error_body("bad_request", f"id: `{order_id}` is not an order id (a UUID)"))
        path = os.path.join(API, "orders", f"{order_id.lower()}.json")
        if os.path.exists(path):
            return self.send(200, load(f"orders/{order_id.lower()}.json"))
        known = {o["order_id"] for o in self.orders()["orders"]}
        if order_id not in known:
            return self.send(404, error_body("not_found", f"no order {order_id}: no spans name it and the order service does not know it"))
        # Any other listed order: the complete journey under its id.
        body = load(f"orders/{COMPLETE_ID}.json")
        text = json.dumps(body).replace(COMPLETE_ID, order_id)
        return self.send(200, json.loads(text))

    def start_traffic(self, request):
        per_second = request.get("per_second")
        seconds = request.get("seconds")
        if not isinstance(per_second, (int, float)) or not 0 < per_second <= 50:
            return self.send(400, error_body("invalid_parameter", "per_second: must be above 0 and at most 50"))
        if not isinstance(seconds, int) or not 1 <= seconds <= 600:
            return self.send(400, error_body("invalid_parameter", "seconds: must be from 1 to 600"))
        with lock:
            traffic.update(running=True, per_second=per_second, seconds=seconds, placed=0, failed=0,
                           target=int(per_second * seconds), last_error=None, started=time.time(), stopped_at=None)
            return self.send(202, traffic_status())

    def act(self, name, action):
        known = {c["name"] for c in load("map.json")["components"]}
        if name not in known:
            return self.send(400, error_body("bad_request", f"unknown component `{name}`"))
        if action not in ("kill", "stop", "restart"):
            return self.send(400, error_body("invalid_parameter", f"action: `{action}` is not kill, stop or restart"))
        if self.server.control_disabled:
            return self.send(409, error_body("conflict", self.server.control_disabled))
        if action == "restart":
            time.sleep(4)  # the real one waits until the component is ready
            with lock:
                overrides[name] = ("ready", None)
            output = f"{name} restarted, ready in 3.9s"
        else:
            with lock:
                overrides[name] = ("down", "connection refused")
            signal = "SIGKILL" if action == "kill" else "SIGTERM"
            output = f"{name} (pid {4000 + len(name) * 37}) {'killed' if action == 'kill' else 'stopped'} with {signal} in 0.{len(name)}s"
        self.send(200, {"component": name, "action": action, "output": output})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=18999)
    parser.add_argument("--token", help="require this bearer token for actions")
    parser.add_argument("--control-disabled", metavar="REASON", help="answer control.enabled=false with this reason")
    parser.add_argument("--no-sample", action="store_true", help="/api/map answers only {control}")
    parser.add_argument("--fail", metavar="PREFIX", help="answer 503 for paths starting with PREFIX")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.token = args.token
    server.control_disabled = args.control_disabled
    server.no_sample = args.no_sample
    server.fail = args.fail
    server.quiet = args.quiet
    print(f"preview on http://127.0.0.1:{args.port}/  (journeys: /orders/{COMPLETE_ID})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
