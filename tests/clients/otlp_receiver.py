"""An OTLP/HTTP logs receiver for tests/ship.rs.

Decodes each POST /v1/logs (JSON encoding) with the official protobuf definitions
(PyPI opentelemetry-proto: ExportLogsServiceRequest through
google.protobuf.json_format.Parse, which refuses unknown fields and wrong types), then
appends one line per log record to OUT and only then answers 200, so an answer means
the records are in the file:

    HOST <TAB> SEQ <TAB> BODY

HOST is the resource's host.name, SEQ the record's mreg.seq intValue, BODY its
stringValue body. A request that does not decode is answered 400 and logged to stderr.

    python otlp_receiver.py PORT OUT     (PORT 0: any free port)

Prints "listening PORT" on stdout once it accepts connections.
"""

import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)

MAX_BODY = 16 << 20


def attribute(attrs, key):
    for kv in attrs:
        if kv.key == key:
            return kv.value
    raise ValueError(f"attribute {key} missing")


def lines_of(request):
    out = []
    for rl in request.resource_logs:
        host = attribute(rl.resource.attributes, "host.name").string_value
        service = attribute(rl.resource.attributes, "service.name").string_value
        if not host or service != "mreg":
            raise ValueError(f"bad resource: host {host!r}, service {service!r}")
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                seq = attribute(rec.attributes, "mreg.seq")
                if seq.WhichOneof("value") != "int_value":
                    raise ValueError("mreg.seq is not an intValue")
                if rec.time_unix_nano == 0 or not rec.severity_text:
                    raise ValueError("timeUnixNano or severityText missing")
                body = rec.body.string_value
                if not body or "\t" in body or "\n" in body:
                    raise ValueError(f"unexpected body {body!r}")
                out.append(f"{host}\t{seq.int_value}\t{body}\n")
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != "/v1/logs" or not 0 < length <= MAX_BODY:
            self.answer(404 if self.path != "/v1/logs" else 400, '{"error":"bad request"}')
            return
        body = self.rfile.read(length)
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self.answer(415, '{"error":"expected application/json"}')
            return
        try:
            request = ExportLogsServiceRequest()
            json_format.Parse(body, request)
            lines = lines_of(request)
        except Exception as e:  # noqa: BLE001 - any decoding problem is a 400
            print(f"otlp_receiver: refused a request: {e}", file=sys.stderr, flush=True)
            self.answer(400, '{"error":"cannot decode"}')
            return
        with open(self.server.out, "a", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
        self.answer(200, "{}")

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    server = HTTPServer(("127.0.0.1", port), Handler)
    server.out = out
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
