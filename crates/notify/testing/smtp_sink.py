#!/usr/bin/python3
"""A real SMTP server on loopback for Lifeboat's mail tests (aiosmtpd).

Listens on 127.0.0.1 on a free port and prints "LISTENING <port>", then one
JSON line per received mail: envelope, decoded headers and text body, the
login and AUTH mechanism used, and whether the session was encrypted.

  smtp_sink.py --mode starttls|tls|none [--cert PEM --key PEM]
               [--user U --password P] [--exclude-mech PLAIN]
"""
import argparse
import asyncio
import email
import email.policy
import json
import logging
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["starttls", "tls", "none"], required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--exclude-mech", action="append", default=[])
    args = ap.parse_args()
    # aiosmtpd warns about its own deprecated attribute on every AUTH.
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    context = None
    if args.mode != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == args.user
            and auth_data.password.decode() == args.password
        )
        if ok:
            session.lifeboat_mechanism = mechanism
        if not ok:
            # handled=False: aiosmtpd answers "535 ... credentials invalid" itself.
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data.login.decode())

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
            body = msg.get_body(preferencelist=("plain",))
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "subject": str(msg["Subject"]),
                "from": str(msg["From"]),
                "to": str(msg["To"]),
                "body": body.get_content() if body is not None else "",
                "auth_user": session.auth_data if session.authenticated else None,
                "auth_mechanism": getattr(session, "lifeboat_mechanism", None),
                "encrypted": args.mode == "tls" or session.ssl is not None,
                "attachments": [
                    {
                        "filename": part.get_filename(),
                        "content_type": part.get_content_type(),
                        "text": part.get_content() if part.get_content_maintype() == "text" else None,
                        "size": len(part.get_payload(decode=True) or b""),
                    }
                    for part in msg.iter_attachments()
                ],
            }
            print(json.dumps(record), flush=True)
            return "250 OK"

    def factory():
        kwargs = dict(hostname="localhost", auth_exclude_mechanism=args.exclude_mech)
        if args.user:
            kwargs.update(authenticator=authenticator, auth_required=True)
        if args.mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        if args.mode == "tls":
            # The whole session is TLS already; aiosmtpd only knows about STARTTLS.
            kwargs.update(auth_require_tls=False)
        return SMTP(Handler(), **kwargs)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(factory, host="127.0.0.1", port=0, ssl=context if args.mode == "tls" else None)
    )
    print("LISTENING %d" % server.sockets[0].getsockname()[1], flush=True)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
