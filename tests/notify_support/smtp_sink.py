"""A real SMTP server for keyward's notification tests (aiosmtpd on loopback).

Usage: smtp_sink.py OUT_DIR PORT USER PASSWORD [CERT KEY [implicit]]
Listens on 127.0.0.1:PORT (0 = any free port), prints the port on the first line of
stdout, requires AUTH (LOGIN/PLAIN) with USER/PASSWORD, and writes each accepted message to
OUT_DIR/NNNN.json: envelope, headers, the decoded text body and the raw message. Without
CERT/KEY, AUTH is allowed in plain text (loopback tests); with them, the server requires
STARTTLS before anything else (and AUTH only after it); with `implicit` after them, the
listener itself speaks TLS from the first byte (port 465 style) and AUTH needs nothing more.
"""
import asyncio
import email
import email.policy
import itertools
import json
import os
import ssl
import sys
import warnings

# aiosmtpd warns on every connection that AUTH without TLS is risky: intended here (loopback).
warnings.filterwarnings("ignore")

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

OUT, PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
TLS = None
if len(sys.argv) > 6:
    TLS = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    TLS.load_cert_chain(sys.argv[5], sys.argv[6])
IMPLICIT = len(sys.argv) > 7 and sys.argv[7] == "implicit"
# Skip parsing each message (a faster receiver, for bench/notify.sh SINK_LIGHT=1).
LIGHT = bool(os.environ.get("SINK_LIGHT"))
COUNTER = itertools.count()


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == USER
        and auth_data.password.decode() == PASSWORD
    )
    return AuthResult(success=ok, auth_data=auth_data if ok else None)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if LIGHT:
            # bench/notify.sh SINK_LIGHT=1: no parsing, only what the bench counts.
            record = {"peer": "%s:%s" % tuple(session.peer[:2]), "raw": raw.decode("latin-1")}
            with open(os.path.join(OUT, "%04d.json" % next(COUNTER)), "w") as f:
                json.dump(record, f)
            return "250 OK"
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": (
                session.auth_data.login.decode()
                if isinstance(session.auth_data, LoginPassword)
                else None
            ),
            "subject": str(msg["Subject"]),
            "to": str(msg["To"]),
            "from": str(msg["From"]),
            "message_id": str(msg["Message-ID"]),
            "tls": IMPLICIT or session.ssl is not None,
            # The client's address and port: one per connection (the reuse tests count them).
            "peer": "%s:%s" % tuple(session.peer[:2]),
            "body": body.get_content() if body is not None else "",
            "raw": raw.decode("latin-1"),
        }
        n = next(COUNTER)
        path = os.path.join(OUT, "%04d.json" % n)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 OK"


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            Handler(),
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=TLS is not None and not IMPLICIT,
            tls_context=None if IMPLICIT else TLS,
            require_starttls=TLS is not None and not IMPLICIT,
        ),
        "127.0.0.1",
        PORT,
        ssl=TLS if IMPLICIT else None,
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
