"""Token rotation on a real node: the gateway keeps working past the expiry
of the first projected ServiceAccount token its pod was given.

Installs the chart on the local plane's node as bench/rollout.py does, then
patches the Deployment so that its pods' token is a projected
``serviceAccountToken`` of ``--expiration`` seconds (600, the shortest the
API server accepts) at the usual path, in place of the default
``kube-api-access`` volume.  The plane's API server does not stretch
projected tokens (``--service-account-extend-token-expiration=false``), so
each token really expires when its ``exp`` says; the kubelet replaces it
once 80 % of its life has passed.  One single-attempt push goes through the
Service every ``--interval`` seconds, and the token file of each pod (read
from the kubelet's volume directory on the host) is sampled, until every
pod's first token is refused by the API server (checked with that token
itself, after its expiry) and ``--after`` seconds more.  It prints each
pod's tokens (issued, expiry, when the kubelet wrote the next one), the
pushes before and after the first expiry by answer, the readiness seen and
the restarts; the exit status is 0 when every push was accepted, every
pod's first token expired during the run and no pod restarted.

    PYTHONPATH=. .venv/bin/python -m bench.rotation
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from bench.rollout import FULLNAME, install
from bench.soak import single_push
from devtools.waiting import until

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 (a path)
VOLUME = "short-lived-token"


def claims(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified (the API server verified it)."""
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expiration", type=int, default=600, help="expirationSeconds")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between pushes")
    parser.add_argument("--after", type=float, default=60.0, help="seconds past the expiry")
    args = parser.parse_args()

    began = time.monotonic()

    def note(what: str) -> None:
        print(f"{time.monotonic() - began:7.1f}s  {what}", flush=True)

    release = install("rotation", {})
    ns = release.namespace
    try:
        patch = {"spec": {"template": {"spec": {
            "automountServiceAccountToken": False,
            "volumes": [{"name": VOLUME, "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": args.expiration}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "fieldPath": "metadata.namespace"}}]}},
            ]}}],
            "containers": [{"name": "gateway", "volumeMounts": [
                {"name": VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}
            ]}],
        }}}}  # fmt: skip
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(patch, f)
            f.flush()
            release.run("kubectl", "-n", ns, "patch", f"deployment/{FULLNAME}", "--patch-file",
                        f.name)  # fmt: skip
        release.run("kubectl", "-n", ns, "rollout", "status", f"deployment/{FULLNAME}",
                    "--timeout", "5m")  # fmt: skip
        until(
            lambda: len(release.ready_pods()) == 2 and len(release.pods()) == 2,
            "two ready replicas with the short-lived token",
            300,
        )
        pods = {p.metadata.name: p.metadata.uid for p in release.pods()}
        host, port = release.service()
        note(f"2 replicas ready with {args.expiration} s tokens; Service {host}:{port}")
        kubelet = release.plane.state_dir / "node" / "kubelet" / "pods"

        def token_of(uid: str) -> str:
            path = kubelet / uid / "volumes" / "kubernetes.io~projected" / VOLUME / "token"
            return path.read_text()

        context = ssl.create_default_context(cafile=str(release.plane.state_dir / "ca.crt"))

        def refused(token: str) -> bool:
            """Whether the API server now refuses ``token`` (401)."""
            request = urllib.request.Request(  # noqa: S310 (the plane's https URL)
                release.api.configuration.host + "/api",
                headers={"Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, context=context, timeout=10):  # noqa: S310
                    return False
            except urllib.error.HTTPError as e:
                return e.code == 401

        seen: dict[str, list[dict[str, Any]]] = {name: [] for name in pods}
        first: dict[str, str] = {name: token_of(uid) for name, uid in pods.items()}
        refused_at: dict[str, float] = {}
        written: dict[tuple[str, int], float] = {}
        answers: list[tuple[float, str]] = []
        readiness: Counter[int] = Counter()
        n = 0
        while True:
            now = time.time()
            for name, uid in pods.items():
                token = claims(token_of(uid))
                if not seen[name] or seen[name][-1]["iat"] != token["iat"]:
                    seen[name].append(token)
                    written[(name, token["iat"])] = now
                    if len(seen[name]) > 1:
                        note(f"{name}: the kubelet wrote a new token (issued {token['iat']})")
            for name, raw in first.items():
                if name not in refused_at and now > claims(raw)["exp"] and refused(raw):
                    refused_at[name] = now
                    note(f"{name}: its first token is refused by the API server now")
            answers.append((now, single_push(port, n, host)))
            n += 1
            readiness[len(release.ready_pods())] += 1
            if len(refused_at) == len(pods) and now > max(refused_at.values()) + args.after:
                break
            time.sleep(args.interval)
        restarts = {
            p.metadata.name: p.status.container_statuses[0].restart_count for p in release.pods()
        }
        print()
        print(f"projected token of {args.expiration} s, a push every {args.interval:g} s")
        for name, tokens in seen.items():
            for token in tokens:
                life = token["exp"] - token["iat"]
                print(
                    f"  {name}: token issued {time.strftime('%H:%M:%S', time.gmtime(token['iat']))}"
                    f" for {life} s, seen on disk at"
                    f" {time.strftime('%H:%M:%S', time.gmtime(written[(name, token['iat'])]))}"
                )
        for name, at in refused_at.items():
            expiry = claims(first[name])["exp"]
            print(
                f"  {name}: first token expired {time.strftime('%H:%M:%S', time.gmtime(expiry))},"
                f" refused by the API server from {time.strftime('%H:%M:%S', time.gmtime(at))}"
            )
        last = max(refused_at.values())
        before = Counter(code for at, code in answers if at <= last)
        after = Counter(code for at, code in answers if at > last)
        print(f"  pushes until both first tokens were refused: {dict(before)}")
        print(f"  pushes after that: {dict(after)}")
        print(f"  ready replicas at each push: {dict(readiness)}; restarts: {restarts}")
        rotated = all(len(tokens) > 1 for tokens in seen.values())
        ok = (
            rotated
            and set(before) | set(after) <= {"200"}
            and bool(after)
            and not any(restarts.values())
        )
        return 0 if ok else 1
    finally:
        release.remove()


if __name__ == "__main__":
    sys.exit(main())
