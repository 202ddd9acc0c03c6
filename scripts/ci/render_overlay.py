"""Renders a kustomize overlay of this repository (resources + strategic-merge patches,
the subset deploy/kubernetes uses) to one multi-document YAML on stdout, so CI can
validate what `kubectl apply -k` would apply without kustomize installed.

    python scripts/ci/render_overlay.py deploy/kubernetes/overlays/gpu > gpu.yaml
"""
import copy
import pathlib
import sys

import yaml


def load_kustomization(folder: pathlib.Path):
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = []
    for res in k.get("resources", []):
        path = folder / res
        if path.is_dir():
            docs.extend(load_kustomization(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in k.get("patches", []):
        p = yaml.safe_load((folder / patch["path"]).read_text())
        target = next(
            (d for d in docs if d["kind"] == p["kind"] and d["metadata"]["name"] == p["metadata"]["name"]), None
        )
        if target is None:
            sys.exit(f"{folder}: patch {patch['path']} matches no resource")
        merge(target, p)
    return docs


def merge(base, patch):
    """Strategic merge for maps and for lists of named items (containers, env, ports)."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), list) and all(
            isinstance(v, dict) and "name" in v for v in value + base[key]
        ):
            by_name = {item["name"]: item for item in base[key]}
            for item in value:
                if item["name"] in by_name:
                    merge(by_name[item["name"]], item)
                else:
                    base[key].append(copy.deepcopy(item))
        else:
            base[key] = copy.deepcopy(value)


if __name__ == "__main__":
    print(yaml.safe_dump_all(load_kustomization(pathlib.Path(sys.argv[1])), sort_keys=False))
