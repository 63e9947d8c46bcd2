#!/usr/bin/env python3
"""Stand-ins for `docker`, `kind` and `kubectl` (symlinked under those names): each call is
appended to $FAKE_LOG, and the world they would change (containers, networks, clusters, node
files, ConfigMaps, builders) lives in the JSON file $FAKE_STATE, so a second `make kind-up` sees
what the first one made."""

import json
import os
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_STATE"])
tool, args = Path(sys.argv[0]).name, sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(" ".join([tool, *args]) + "\n")
state = json.loads(STATE.read_text()) if STATE.exists() else {}
containers = state.setdefault("containers", {})
clusters = state.setdefault("clusters", [])
files = state.setdefault("files", {})
configmaps = state.setdefault("configmaps", [])
builders = state.setdefault("builders", {})


def done(code=0, out=""):
    STATE.write_text(json.dumps(state))
    if out:
        print(out)
    sys.exit(code)


def value(flag):
    return args[args.index(flag) + 1]


if tool == "kind":
    if args[:2] == ["get", "clusters"]:
        done(out="\n".join(clusters))
    if args[:2] == ["get", "nodes"]:
        done(out=f"{value('--name')}-control-plane" if value("--name") in clusters else "")
    if args[:2] == ["create", "cluster"]:
        clusters.append(value("--name"))
        state["cluster_config"] = Path(value("--config")).read_text()
        done()
    if args[:2] == ["delete", "cluster"]:
        clusters.remove(value("--name"))
        done()
if tool == "docker":
    if args[:2] == ["container", "inspect"]:
        name = args[-1]
        if name not in containers:
            done(1)
        if "{{.State.Running}}" in args:
            done(out="true" if containers[name]["running"] else "false")
        if "{{json .NetworkSettings.Networks.kind}}" in args:
            done(out='{"NetworkID": "kind"}' if "kind" in containers[name]["networks"] else "null")
        done(out="{}")
    if args[0] == "run":
        containers[value("--name")] = {"running": True, "networks": ["bridge"], "args": args}
        done()
    if args[0] == "start":
        containers[args[1]]["running"] = True
        done()
    if args[:2] == ["rm", "-f"]:
        containers.pop(args[2])
        done()
    if args[:2] == ["network", "connect"]:
        containers[args[3]]["networks"].append(args[2])
        done()
    if args[0] == "exec":
        rest = [a for a in args[1:] if a != "-i"]
        node, command = rest[0], rest[1:]
        if command[0] == "cat":
            done(0, files[command[1]]) if command[1] in files else done(1)
        if command[:2] == ["mkdir", "-p"]:
            done()
        if command[:2] == ["cp", "/dev/stdin"]:
            files[command[2]] = sys.stdin.read().rstrip("\n")
            done()
    if args[:2] == ["buildx", "inspect"]:
        done(0 if args[2] in builders else 1)
    if args[:2] == ["buildx", "create"]:
        builders[value("--name")] = {"driver": value("--driver"), "opt": value("--driver-opt")}
        done()
    if args[:2] == ["buildx", "rm"]:
        builders.pop(args[2])
        done()
if tool == "kubectl":
    if "get" in args and "configmap" in args:
        done(0 if args[-1] in configmaps else 1)
    if "apply" in args:
        document = sys.stdin.read()
        state["applied"] = document
        configmaps.append("local-registry-hosting")
        done()
sys.exit(f"fake {tool}: unexpected call {args}")
