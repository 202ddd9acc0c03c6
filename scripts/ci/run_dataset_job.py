"""Runs a dataset Job manifest's pods here, one after another, the way Kubernetes would:
the container's args and env from the YAML, JOB_INDEX set per completion index and
expanded into the other env values ($(VAR)), the volumes' mount paths replaced by local
folders. Then checks that the shards' indexes cover the input exactly once, all explained.

    python scripts/ci/run_dataset_job.py MANIFEST BINARY INPUT_DIR OUTPUT_DIR [--server URL]
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import yaml


def main() -> int:
    manifest, binary, input_dir, output_dir = (pathlib.Path(a) for a in sys.argv[1:5])
    server = sys.argv[sys.argv.index("--server") + 1] if "--server" in sys.argv else None
    job = yaml.safe_load(manifest.read_text())
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed", "the Job must be Indexed"
    n = spec["completions"]
    assert spec.get("parallelism", n) == n, "parallelism should equal completions"
    container = spec["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    local = {mounts["input"]: str(input_dir), mounts["output"]: str(output_dir)}

    def here(arg: str) -> str:
        for path, replacement in local.items():
            if arg == path or arg.startswith(path + "/"):
                return replacement + arg[len(path):]
        return arg

    for index in range(n):
        env = dict(os.environ)
        env["JOB_INDEX"] = str(index)
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
        if server is not None:
            assert "SCORECAM_SERVER" in env, "a client Job names the Service"
            env["SCORECAM_SERVER"] = server
        assert env.get("SCORECAM_SHARD") == f"{index}/{n}", f"pod {index} takes shard {env.get('SCORECAM_SHARD')}"
        args = [here(a) for a in container["args"]]
        print(f"pod {index}: scorecam {' '.join(args)} (SCORECAM_SHARD={env['SCORECAM_SHARD']})", flush=True)
        subprocess.run([str(binary), *args], env=env, check=True)

    seen = []
    for index in range(n):
        lines = (output_dir / f"index-{index}-of-{n}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        bad = [r for r in records if r["status"] != "ok"]
        assert not bad, f"failed images: {bad}"
        seen += [r["path"] for r in records]
    images = sorted(str(p.relative_to(input_dir)) for p in input_dir.rglob("*") if p.is_file())
    assert sorted(seen) == images, f"shards covered {sorted(seen)}, the input holds {images}"
    print(f"{manifest}: {n} pods covered {len(images)} images once each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
