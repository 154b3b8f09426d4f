"""Registers a fresh user on the server under test and prints its access token.

Usage: python conformance_user.py URL
"""
import json
import secrets
import sys
import urllib.request

url = sys.argv[1].rstrip("/")
body = json.dumps({
    "username": "conformance" + secrets.token_hex(6),
    "password": secrets.token_hex(12),
    "auth": {"type": "m.login.dummy"},
}).encode()
request = urllib.request.Request(url + "/_matrix/client/v3/register", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
with urllib.request.urlopen(request) as response:
    print(json.load(response)["access_token"])
