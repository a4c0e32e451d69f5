#!/usr/bin/env python3
"""Test helper: creates AES keys on a PyKMIP server with PyKMIP's own client.

usage: kmip_admin.py HOST PORT CERT KEY CA create [--inactive]
Prints the new key's Unique Identifier. Keys are owned by the client certificate's CN.
"""
import sys
import warnings

warnings.filterwarnings("ignore")

from kmip import enums  # noqa: E402
from kmip.pie.client import ProxyKmipClient  # noqa: E402


def main():
    host, port, cert, key, ca, cmd = sys.argv[1:7]
    flags = sys.argv[7:]
    client = ProxyKmipClient(
        hostname=host, port=int(port), cert=cert, key=key, ca=ca,
        ssl_version="PROTOCOL_TLSv1_2", config_file="/dev/null",
    )
    with client:
        if cmd == "create":
            uid = client.create(
                enums.CryptographicAlgorithm.AES, 256,
                cryptographic_usage_mask=[
                    enums.CryptographicUsageMask.ENCRYPT,
                    enums.CryptographicUsageMask.DECRYPT,
                ],
            )
            if "--inactive" not in flags:
                client.activate(uid)
            print(uid)
        else:
            sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
