"""An FTP server for Rota's tests (pyftpdlib), on 127.0.0.1 only.

Serves one directory, read-only, to one user. With --cert and --key it is
an FTPS server that requires TLS on the control and data connections; with
--no-mlsd it does not offer MLSD/MLST, so clients must parse LIST. It binds
the port given (a free one by default) and prints "listening on PORT" once
it accepts connections.
"""

import argparse
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--no-mlsd", action="store_true")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()

    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, args.dir, perm="elr")

    base = TLS_FTPHandler if args.cert else FTPHandler

    class Handler(base):
        pass

    Handler.authorizer = authorizer
    Handler.banner = "rota test ftpd ready"
    if args.cert:
        Handler.certfile = args.cert
        Handler.keyfile = args.key
        Handler.tls_control_required = True
        Handler.tls_data_required = True
    if args.no_mlsd:
        Handler.proto_cmds = {
            k: v for k, v in base.proto_cmds.items() if k not in ("MLSD", "MLST")
        }

    server = FTPServer(("127.0.0.1", args.port), Handler)
    port = server.socket.getsockname()[1]
    print(f"listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
