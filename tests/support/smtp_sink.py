"""Loopback SMTP sink for the mailer integration tests (driven by tests/mailer.rs).

    smtp_sink.py OUT_DIR [--user U --password P] [--tls {none,starttls,implicit}]

Listens on 127.0.0.1 with a port chosen by the OS (no race with other tests) and writes that
port to OUT_DIR/port once it accepts connections. With --tls it first writes a throwaway CA
(trustme) to OUT_DIR/ca.pem and serves a certificate for 127.0.0.1 signed by it; with
--tls starttls it refuses mail until STARTTLS, so a client that skips the upgrade fails.
With --user it requires AUTH (PLAIN/LOGIN) with exactly those credentials.

Every accepted message becomes OUT_DIR/msg-N.json: the envelope, the AUTH login, whether the
connection was encrypted, and headers and bodies as decoded by Python's email package, so the
test asserts what a real mail client would see rather than raw MIME.
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import ssl

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def write_atomically(path, text):
    # The Rust side polls for these files; a rename means it never reads half a file.
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_login": session.auth_data,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
        }
        self.count += 1
        write_atomically(os.path.join(self.out_dir, f"msg-{self.count}.json"), json.dumps(record))
        return "250 OK"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    return authenticate


def server_tls_context(out_dir):
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(os.path.join(out_dir, "ca.pem"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--user")
    parser.add_argument("--password", default="")
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    args = parser.parse_args()

    ctx = server_tls_context(args.out_dir) if args.tls != "none" else None
    smtp_kwargs = {
        "auth_required": args.user is not None,
        # With STARTTLS, AUTH must wait for the upgrade, as on a real relay. Plaintext mode exists
        # to test AUTH without TLS (loopback only); with implicit TLS aiosmtpd cannot tell the
        # connection is encrypted, so its check has to be off there too.
        "auth_require_tls": args.tls == "starttls",
        "authenticator": authenticator_for(args.user, args.password) if args.user else None,
    }
    if args.tls == "starttls":
        smtp_kwargs.update(tls_context=ctx, require_starttls=True)

    handler = Sink(args.out_dir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, **smtp_kwargs),
        "127.0.0.1",
        0,
        ssl=ctx if args.tls == "implicit" else None,
    )
    port = server.sockets[0].getsockname()[1]
    write_atomically(os.path.join(args.out_dir, "port"), str(port))
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
