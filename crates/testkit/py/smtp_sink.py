"""A real SMTP server for healthchecker's tests (aiosmtpd).

Usage: smtp_sink.py PORT MAILDIR MODE
  MODE accept   - accept every message; write it to MAILDIR/<n>.eml
  MODE tempfail - answer 451 to DATA (a temporary failure)
  MODE reject   - answer 554 to DATA (a permanent failure)
  MODE hang     - accept the connection and the envelope, never answer DATA
AUTH (PLAIN/LOGIN) is allowed without TLS; the login is recorded in
MAILDIR/<n>.auth next to the message. Prints "ready" once listening.
"""
import asyncio
import email
import email.policy
import os
import sys
import warnings

warnings.simplefilter("ignore")

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self, maildir, mode):
        self.maildir = maildir
        self.mode = mode
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "tempfail":
            return "451 4.3.0 try again later"
        if self.mode == "reject":
            return "554 5.7.1 rejected"
        if self.mode == "hang":
            await asyncio.sleep(3600)
        self.count += 1
        base = os.path.join(self.maildir, "%04d" % self.count)
        with open(base + ".tmp", "wb") as f:
            f.write(b"X-Envelope-To: " + ", ".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.original_content or envelope.content)
        if session.auth_data is not None:
            login = session.auth_data.login
            with open(base + ".auth", "wb") as f:
                f.write(login if isinstance(login, bytes) else str(login).encode())
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain",))
        with open(base + ".txt", "w") as f:
            f.write(part.get_content() if part is not None else "")
        os.rename(base + ".tmp", base + ".eml")
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True, auth_data=auth_data)


def main():
    port, maildir, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.makedirs(maildir, exist_ok=True)
    controller = Controller(
        Sink(maildir, mode),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()  # run until the test closes our stdin or kills us
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
