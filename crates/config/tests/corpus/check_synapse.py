"""Loads each corpus deployment with Synapse's own config parser (signing keys stubbed)."""
import os, sys
from signedjson.key import generate_signing_key
from synapse.config import key as keymod
from synapse.config.homeserver import HomeServerConfig

keymod.KeyConfig.read_signing_keys = lambda self, path, name: [generate_signing_key("a_stub")]
corpus = sys.argv[1]
ok = True
for deployment in sorted(os.listdir(corpus)):
    d = os.path.join(corpus, deployment)
    if not os.path.isdir(d):
        continue
    args = []
    for line in open(os.path.join(d, "ARGS")).read().split():
        args += ["-c", os.path.join(d, line)]
    try:
        config = HomeServerConfig.load_config("check", args)
        print(f"{deployment}: Synapse loads it (server_name {config.server.server_name})")
    except BaseException as e:
        ok = False
        print(f"{deployment}: Synapse REFUSES it: {type(e).__name__}: {e}")
sys.exit(0 if ok else 1)
