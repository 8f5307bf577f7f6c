#!/usr/bin/env python3
"""A small HTTP/1.1 server with scripted faults, for frameq's fetch and upload tests.

    fault_server.py --port 0 --dir DIR --port-file F

Serves files from DIR on 127.0.0.1 and writes the chosen port to F (atomically). Path
prefixes select the behaviour:

  /ok/<file>                 the file
  /404/..., /500/...         that status
  /429/<secs>/...            429 with Retry-After: <secs>
  /429date/...               429 with Retry-After as an HTTP-date 120 s ahead
  /stall/<file>              headers (full Content-Length), a few bytes, then nothing
  /short/<file>              Content-Length of the whole file, half the body, then close
  /big/<file>                Content-Length of 1 TiB, then the file, then close
  /chunked/<file>            the file with Transfer-Encoding: chunked (no Content-Length)
  /redirect/<n>/<file>       a chain of n 302 hops, then the file
  /redirect-loop/<x>         302 to itself, forever
  /redirect-to/<url-encoded target>   one 302 to the target
  /flaky/<n>/<key>/<file>    500 for the first n requests of <key>, then the file
  /slow/<ms>/<file>          the file after <ms> milliseconds (a distant server's first byte)
  PUT /upload/<path>         stores the body under DIR/uploads/<path> (201)
  PUT /put500/...            500 (for upload failure tests)
  /counts                    JSON: {"<path>": requests, ...}

Python 3 standard library only. Threaded, quiet, exits on SIGTERM.
"""

import argparse
import email.utils
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTS = {}
FLAKY = {}
LOCK = threading.Lock()
ROOT = "."


def safe_join(base, rel):
    """DIR/rel, refusing anything that escapes DIR."""
    rel = urllib.parse.unquote(rel).lstrip("/")
    path = os.path.realpath(os.path.join(base, rel))
    if path != os.path.realpath(base) and not path.startswith(os.path.realpath(base) + os.sep):
        return None
    return path


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault_server/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def count(self):
        with LOCK:
            COUNTS[self.path] = COUNTS.get(self.path, 0) + 1

    def reply(self, status, body=b"", headers=None, close=False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def read_file(self, rel):
        path = safe_join(ROOT, rel)
        if path is None or not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()

    def serve_file(self, rel):
        data = self.read_file(rel)
        if data is None:
            self.reply(404, b"no such file\n")
            return
        self.reply(200, data, {"Content-Type": "application/octet-stream"})

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.count()
        parts = self.path.split("?", 1)[0].split("/")[1:]
        kind = parts[0] if parts else ""
        rest = "/".join(parts[1:])
        if kind == "counts":
            with LOCK:
                body = json.dumps(COUNTS).encode()
            self.reply(200, body, {"Content-Type": "application/json"})
        elif kind == "ok":
            self.serve_file(rest)
        elif kind == "404":
            self.reply(404, b"not found\n")
        elif kind == "500":
            self.reply(500, b"server error\n")
        elif kind == "429":
            secs = parts[1] if len(parts) > 1 else "1"
            self.reply(429, b"slow down\n", {"Retry-After": secs})
        elif kind == "429date":
            when = email.utils.formatdate(time.time() + 120, usegmt=True)
            self.reply(429, b"slow down\n", {"Retry-After": when})
        elif kind == "stall":
            data = self.read_file(rest) or b"x" * 4096
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:16])
            self.wfile.flush()
            # Hold the connection without sending more until the client gives up.
            for _ in range(600):
                time.sleep(0.1)
                try:
                    self.connection.getpeername()
                except OSError:
                    break
            self.close_connection = True
        elif kind == "short":
            data = self.read_file(rest) or b"x" * 4096
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif kind == "big":
            data = self.read_file(rest) or b"x" * 4096
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError:
                pass
            self.close_connection = True
        elif kind == "chunked":
            data = self.read_file(rest)
            if data is None:
                self.reply(404, b"no such file\n")
                return
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for i in range(0, len(data), 16384):
                    piece = data[i : i + 16384]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.close_connection = True
        elif kind == "redirect":
            try:
                n = int(parts[1])
            except (IndexError, ValueError):
                self.reply(400, b"bad redirect count\n")
                return
            tail = "/".join(parts[2:])
            target = "/redirect/%d/%s" % (n - 1, tail) if n > 1 else "/ok/" + tail
            self.reply(302, b"", {"Location": target})
        elif kind == "redirect-loop":
            self.reply(302, b"", {"Location": self.path})
        elif kind == "redirect-to":
            self.reply(302, b"", {"Location": urllib.parse.unquote(rest)})
        elif kind == "slow":
            if len(parts) < 3 or not parts[1].isdigit():
                self.reply(400, b"bad delay\n")
                return
            time.sleep(int(parts[1]) / 1000.0)
            self.serve_file("/".join(parts[2:]))
        elif kind == "flaky":
            try:
                n = int(parts[1])
                key = parts[2]
                tail = "/".join(parts[3:])
            except (IndexError, ValueError):
                self.reply(400, b"bad flaky path\n")
                return
            with LOCK:
                seen = FLAKY.get(key, 0)
                FLAKY[key] = seen + 1
            if seen < n:
                self.reply(500, b"flaky\n")
            else:
                self.serve_file(tail)
        else:
            self.reply(404, b"unknown fault path\n")

    def do_PUT(self):
        self.count()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path.startswith("/put500/"):
            self.reply(500, b"cannot store\n")
            return
        if path.startswith("/put403/"):
            self.reply(403, b"forbidden\n")
            return
        if not path.startswith("/upload/"):
            self.reply(404, b"PUT only under /upload/\n")
            return
        dest = safe_join(os.path.join(ROOT, "uploads"), path[len("/upload/"):])
        if dest is None:
            self.reply(400, b"bad path\n")
            return
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = dest + ".tmp-%d" % threading.get_ident()
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, dest)
        self.reply(201, b"")


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients hanging up mid-response are the point of several faults: stay quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


def main():
    global ROOT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    ROOT = os.path.abspath(args.dir)

    server = QuietServer(("127.0.0.1", args.port), Handler)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    else:
        print(port, flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
