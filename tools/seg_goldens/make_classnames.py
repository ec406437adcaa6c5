"""Write visionfm/pipelines/seg_classnames.json from the four references' ``configs/cls_<benchmark>.txt``.

Each list is read as that repository's ``get_cls_idx`` reads it: one class per line, synonyms split on the repo's
separator, ``'\\n'`` dropped (surrounding spaces are stripped here; CLIP's tokenizer ignores them). Identical lists are
stored once. Run after fetch_refs.py:

    python tools/seg_goldens/make_classnames.py [--out visionfm/pipelines/seg_classnames.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from ref_paths import REF_DIR, REFS, REPO_ROOT

#: how each repository splits a line into synonyms (its get_cls_idx)
SEPARATORS = {"sclip": ", ", "clearclip": ",", "naclip": ", ", "proxyclip": "; ", "trident": "; ", "corrclip": "; "}
#: visionfm's benchmark name -> the references' file stem
FILES = {"voc21": "voc21", "voc20": "voc20", "context60": "context60", "context59": "context59",
         "coco_object": "coco_object", "coco_stuff": "coco_stuff", "cityscapes": "city_scapes", "ade20k": "ade20k"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO_ROOT / "visionfm" / "pipelines" / "seg_classnames.json"))
    args = ap.parse_args()
    lists: dict[str, list[list[str]]] = {}
    use: dict[str, dict[str, str]] = {}
    seen: dict[str, str] = {}
    for method, sep in SEPARATORS.items():
        use[method] = {}
        for bench, stem in FILES.items():
            text = (REF_DIR / method / "src" / "configs" / f"cls_{stem}.txt").read_text().replace("\r", "")
            entry = [[t.strip() for t in line.split(sep)] for line in text.split("\n") if line != ""]
            key = hashlib.sha256(json.dumps(entry).encode()).hexdigest()
            seen.setdefault(key, f"{method}/{bench}")
            lists.setdefault(seen[key], entry)
            use[method][bench] = seen[key]
    out = {
        "about": "Class names and synonyms of the 8 open-vocabulary segmentation benchmarks, as each reference "
        "implementation's configs/cls_<benchmark>.txt lists them (one entry per class, in label order; "
        "synonyms as that repo splits a line). Identical lists are stored once.",
        "sources": {
            m: {"repo": REFS[m][0], "commit": REFS[m][1], "path": "configs/cls_<benchmark>.txt", "separator": sep}
            for m, sep in SEPARATORS.items()
        },  # fmt: skip
        "lists": lists,
        "use": use,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}: {len(lists)} distinct lists")


if __name__ == "__main__":
    main()
