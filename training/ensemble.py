"""A small ensemble of exported models as one ONNX graph (issue #13).

    PYTHONPATH=. .venv-train/bin/python -m training.ensemble --stage candidate \\
        --members inference/weights/oct-lite0-v1.onnx training/runs/s2/candidate/oct-lite0-v1.onnx \\
        --loso training/runs/s1 training/runs/s2 --out training/runs/ensemble
    # or every member trained from scratch, then shipped (1.5.0's one command, docs/training.md):
    PYTHONPATH=. .venv-train/bin/python -m training.ensemble --stage final --train-members band:1 full:3 --out training/runs/v15

The members are models exported by ``training.train``: the same input size, the same
preprocessing (but perhaps the window, below) and the same outputs. The ensemble's outputs
are the means of theirs:

- ``probabilities``: the mean of the members' *calibrated* probabilities (each member's
  temperature stays inside its own subgraph);
- ``heatmap``: the mean of the members' class-activation maps (each in [0, 1]);
- ``oct_score``: the mean of the members' OCT scores.

So ``inference.runtime``, the quality flag and the suite load it like any model.
Members may also differ in the window that frames the scan (``training.train --window``):
then each member gets its own graph input and heatmap output, the card lists them
(``member_inputs``), and the runtime crops each window from one band detection and
averages the members' heatmaps on the original image. The graph runs every member on each B-scan: the
serving cost grows with the number of members (``bench/model_ab.py --end-to-end``).

The ensemble's leave-one-source-out reading is the mean of the members' LOSO models'
calibrated probabilities, from the ``loso_logits.npz`` each ``--stage loso`` run writes.

``--stage candidate`` writes ``--out/candidate/`` (the graph and its model.json, for
``training.robustness``) and ``--out/loso.json``; it never touches inference/weights
and never reads the test split. ``--stage final`` is for an ensemble a written rule
has chosen (docs/training.md): it writes the graph into inference/weights, evaluates it
there through the serving runtime on the test split and writes the model card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from inference import evaluation as E
from inference import preprocessing as P
from inference.card import WEIGHTS_DIR
from training import data as D

OUTPUTS = ("probabilities", "heatmap", "oct_score")
ENSEMBLE_VERSION = "1.5.0"
ONNX_NAME = "oct-lite0-v1.onnx"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compose(members: list[Path], out: Path, *, own_inputs: bool = False) -> None:
    """Write one ONNX graph whose outputs are the element-wise means of the members' outputs.

    ``own_inputs``: members that frame scans differently. Member k then reads its own input
    (``input``, ``input_1``, ...) and its heatmap is its own output (``heatmap``,
    ``heatmap_1``, ...), because maps of different crops are averaged on the original image
    (inference.runtime), not in the graph; probabilities and OCT score are still the means.
    """
    import onnx
    from onnx import compose as C
    from onnx import helper

    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    models = [onnx.load(str(p)) for p in members]
    first = models[0]
    for p, m in zip(members, models):
        if [i.name for i in m.graph.input] != ["input"] or [o.name for o in m.graph.output] != list(OUTPUTS):
            raise ValueError(f"{p}: not a model exported by training.train (input 'input', outputs {', '.join(OUTPUTS)})")
        if m.graph.input[0].type != first.graph.input[0].type or list(m.opset_import) != list(first.opset_import):
            raise ValueError(f"{p}: another input shape or opset than {members[0]}")
    nodes, initializers, value_info = [], [], []
    inputs, outputs = list(first.graph.input), list(first.graph.output)
    for k, m in enumerate(models):
        prefixed = C.add_prefix(m, f"m{k}_")
        feed = input_name(k) if own_inputs else "input"
        nodes.append(helper.make_node("Identity", [feed], [f"m{k}_input"], name=f"m{k}_feed"))
        nodes.extend(prefixed.graph.node)
        initializers.extend(prefixed.graph.initializer)
        value_info.extend(prefixed.graph.value_info)
        if own_inputs and k:
            inp = onnx.ValueInfoProto()
            inp.CopyFrom(first.graph.input[0])
            inp.name = feed
            inputs.append(inp)
            heat = onnx.ValueInfoProto()
            heat.CopyFrom(next(o for o in first.graph.output if o.name == "heatmap"))
            heat.name = heatmap_name(k)
            outputs.append(heat)
            nodes.append(helper.make_node("Identity", [f"m{k}_heatmap"], [heat.name], name=f"out_heatmap_{k}"))
    for name in OUTPUTS:
        if own_inputs and name == "heatmap":
            nodes.append(helper.make_node("Identity", ["m0_heatmap"], ["heatmap"], name="out_heatmap_0"))
            continue
        nodes.append(helper.make_node("Mean", [f"m{k}_{name}" for k in range(len(models))], [name], name=f"mean_{name}"))
    graph = helper.make_graph(nodes, "ensemble", inputs, outputs, initializer=initializers, value_info=value_info)
    model = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="training.ensemble")
    model.ir_version = first.ir_version
    helper.set_model_props(model, {f"member_{k}_sha256": sha256(p) for k, p in enumerate(members)})
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))


def extract_member(ensemble: Path, k: int, out: Path) -> None:
    """Write member ``k`` of a graph made by :func:`compose` as a model of its own (input ``input``,
    outputs ``probabilities``, ``heatmap``, ``oct_score``): the members of a shipped ensemble can be
    recovered from the committed file, whose card lists their sha256s and temperatures."""
    import onnx
    from onnx import utils

    model = onnx.load(str(ensemble))
    feed = next(n for n in model.graph.node if n.name == f"m{k}_feed").input[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    utils.extract_model(str(ensemble), str(out), [feed], [f"m{k}_{o}" for o in OUTPUTS])
    member = onnx.load(str(out))
    rename = {feed: "input", **{f"m{k}_{o}": o for o in OUTPUTS}}
    for node in member.graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for v in [*member.graph.input, *member.graph.output]:
        v.name = rename.get(v.name, v.name)
    onnx.checker.check_model(member)
    onnx.save(member, str(out))


def parity(members: list[Path], ensemble: Path, x: np.ndarray | list[np.ndarray]) -> float:
    """Max abs difference between the ensemble graph and the mean of its members run one by one.

    ``x``: one input batch, or one per member for a graph of members' own inputs (then each
    heatmap output is compared with its member's).
    """
    import onnxruntime as ort

    xs = x if isinstance(x, list) else [x] * len(members)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(list(OUTPUTS), {"input": xk}) for p, xk in zip(members, xs)]
    want = [np.mean([o[i] for o in outs], axis=0) for i in range(len(OUTPUTS))]
    sess = ort.InferenceSession(str(ensemble), providers=["CPUExecutionProvider"])
    if not isinstance(x, list):
        got = sess.run(list(OUTPUTS), {"input": x})
        return float(max(np.abs(a - b).max() for a, b in zip(want, got)))
    got = sess.run(["probabilities", "oct_score", *[heatmap_name(k) for k in range(len(members))]],
                   {input_name(k): xk for k, xk in enumerate(xs)})
    diffs = [np.abs(got[0] - want[0]).max(), np.abs(got[1] - want[2]).max()]
    diffs += [np.abs(g - o[1]).max() for g, o in zip(got[2:], outs)]
    return float(max(diffs))


def mean_calibrated(arrays: list[Any], name: str) -> np.ndarray:
    """The mean over LOSO runs (their loaded ``loso_logits.npz``) of softmax(logits / temperature) of one array:
    an ensemble's reading of those images."""
    return np.mean([E.softmax(a[name] / float(a["temperature"])) for a in arrays], axis=0)


def ensemble_loso(dirs: list[Path], vary: tuple[str, ...] = ("train_seed",)) -> dict[str, Any]:
    """The members' LOSO runs (each a folder with loso.json and loso_logits.npz) read as one ensemble.

    The members may differ only in the recipe keys named in ``vary`` (recorded as lists): the
    training seed for a seed ensemble, also the window for one whose members frame scans differently.
    """
    records, arrays = loso_members(dirs, "loso", ("kermany_val_y", "octdl_in_set_y"), vary)

    def mean_probs(name: str) -> np.ndarray:
        return mean_calibrated(arrays, name)

    kval = mean_probs("kermany_val")
    rep = E.classification_report(mean_probs("octdl_in_set"), arrays[0]["octdl_in_set_y"])
    return {
        "epochs": records[0]["epochs"],
        "train_images": records[0]["train_images"],
        "temperature": [float(a["temperature"]) for a in arrays],
        "octdl_in_set": rep,
        "octdl_amd": E.out_of_set_report(mean_probs("octdl_amd")),
        "kermany_val_accuracy": float((kval.argmax(1) == arrays[0]["kermany_val_y"]).mean()),
        "wall_s": float(sum(r.get("wall_s", 0.0) for r in records)),
        "members": [{"train_seed": r.get("train_seed", D.RECIPE_KEYS["train_seed"]), "accuracy": r["octdl_in_set"]["accuracy"]} for r in records],
        **recipe_of(records, vary),
    }


def ensemble_loso_kermany(dirs: list[Path]) -> dict[str, Any]:
    """The members' train-without-Kermany runs (each a folder with loso_kermany.json and
    loso_kermany_logits.npz, ``training.train --stage loso-kermany``) read as one ensemble, in
    loso_kermany.json's form (``training.robustness --write-card --kermany-out`` tabulates it). The members
    may differ in training seed and window."""
    vary = ("train_seed", "window")
    records, arrays = loso_members(dirs, "loso_kermany", ("kermany_y", "octdl_val_y"), vary)
    y = arrays[0]["kermany_y"]
    lv = mean_calibrated(arrays, "octdl_val")
    return {
        "held_out_source": "kermany",
        "epochs": records[0]["epochs"],
        "train_images": records[0]["train_images"],
        "train_classes": records[0]["train_classes"],
        "temperature": [float(a["temperature"]) for a in arrays],
        **D.kermany_out_report(mean_calibrated(arrays, "kermany"), y),
        "octdl_val_accuracy": float((lv.argmax(1) == arrays[0]["octdl_val_y"]).mean()) if len(lv) else None,
        "wall_s": float(sum(r.get("wall_s", 0.0) for r in records)),
        "members": [{"train_seed": r.get("train_seed", D.RECIPE_KEYS["train_seed"]), "accuracy": r["kermany_in_set"]["accuracy"]} for r in records],
        **recipe_of(records, vary),
    }


def loso_members(dirs: list[Path], stem: str, labels: tuple[str, ...], vary: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Each folder's ``<stem>.json`` and ``<stem>_logits.npz``, checked to share the recipe but for the keys in
    ``vary``, the number of epochs, and the images evaluated (the label arrays named in ``labels``)."""
    records = [json.loads((d / f"{stem}.json").read_text()) for d in dirs]
    arrays = [np.load(d / f"{stem}_logits.npz") for d in dirs]
    for d, r in zip(dirs, records):
        for key, before in D.RECIPE_KEYS.items():
            if key not in vary and r.get(key, before) != records[0].get(key, before):
                raise ValueError(f"{d}/{stem}.json: another {key} than {dirs[0]}/{stem}.json; the members must share the recipe")
        if r["epochs"] != records[0]["epochs"]:
            raise ValueError(f"{d}/{stem}.json: {r['epochs']} epochs, not {records[0]['epochs']}")
    for name in labels:
        if any(not np.array_equal(a[name], arrays[0][name]) for a in arrays):
            raise ValueError(f"the members' runs were not evaluated on the same images ({name})")
    return records, arrays


def recipe_of(records: list[dict[str, Any]], vary: tuple[str, ...]) -> dict[str, Any]:
    """An ensemble's recipe keys: the shared ones as values, those in ``vary`` as lists per member."""
    return {
        **{key: records[0].get(key, want) for key, want in D.RECIPE_KEYS.items() if key not in vary},
        **{key: [r.get(key, D.RECIPE_KEYS[key]) for r in records] for key in vary},
    }


def member_cards(members: list[Path]) -> list[dict[str, Any]]:
    """Each member's model.json, checked to describe its file and to share the first member's
    preprocessing and class order (the graph feeds every member the same input)."""
    cards = []
    for p in members:
        card = json.loads((p.parent / "model.json").read_text())
        if card.get("onnx", ONNX_NAME) != p.name:
            raise ValueError(f"{p.parent / 'model.json'} describes {card.get('onnx')}, not {p.name}")
        if cards and card["classes"] != cards[0]["classes"]:
            raise ValueError(f"{p}: another class order than {members[0]}")
        if cards and not P.same_but_window(P.preprocessing_config(card), P.preprocessing_config(cards[0])):
            raise ValueError(f"{p}: another preprocessing than {members[0]} (members may differ in the window only)")
        cards.append(card)
    return cards


def own_windows(cards: list[dict[str, Any]]) -> bool:
    """Whether the members frame scans differently, so that each needs its own graph input."""
    return any(P.preprocessing_config(c) != P.preprocessing_config(cards[0]) for c in cards[1:])


def member_inputs(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """model.json's ``member_inputs`` for members that frame scans differently: per member its graph
    input, its heatmap output and its preprocessing (inference.runtime feeds and maps each)."""
    return [
        {"input": input_name(k), "heatmap": heatmap_name(k), "preprocessing": c["preprocessing"]}
        for k, c in enumerate(cards)
    ]


def input_name(k: int) -> str:
    return "input" if k == 0 else f"input_{k}"


def heatmap_name(k: int) -> str:
    return "heatmap" if k == 0 else f"heatmap_{k}"


def candidate_card(cards: list[dict[str, Any]], members: list[Path]) -> dict[str, Any]:
    """The candidate's model.json: the members' shared constants, the gate threshold of a candidate (0.5)."""
    first = cards[0]
    return {
        "name": first["name"],
        "version": f"candidate (mean of {len(members)} models: {'; '.join(c['version'] for c in cards)})",
        "onnx": ONNX_NAME,
        "classes": first["classes"],
        "temperature": [c["temperature"] for c in cards],
        "gate_threshold": 0.5,
        "preprocessing": first["preprocessing"],
        "ensemble": {"members": [{"version": c["version"], "sha256": sha256(p), "temperature": c["temperature"]} for p, c in zip(members, cards)]},
        **({"member_inputs": member_inputs(cards)} if own_windows(cards) else {}),
    }


def member_spec(text: str) -> tuple[str, int]:
    """``WINDOW:SEED`` (``full:3``) or a bare seed (the band window) -> (window, training seed)."""
    window, _, seed = text.rpartition(":")
    window = window or "band"
    if window not in ("band", "full") or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected WINDOW:SEED with WINDOW band or full, e.g. full:3")
    return window, int(seed)


def train_members(specs: list[tuple[str, int]], out: Path, *, jobs: int = 2, smoke: bool = False) -> tuple[list[Path], list[Path]]:
    """Run training.train's candidate and LOSO stages for each (window, training seed); return (members, LOSO folders)."""
    import subprocess

    folders = [out / (f"seed{s}" if w == "band" else f"{w}-seed{s}") for w, s in specs]
    todo = []
    for (window, seed), folder in zip(specs, folders):
        folder.mkdir(parents=True, exist_ok=True)
        for stage, done in (("candidate", folder / "candidate" / ONNX_NAME), ("loso", folder / "loso_logits.npz")):
            if not done.is_file():
                cmd = [sys.executable, "-m", "training.train", "--out", str(folder), "--stage", stage, "--threads", "1", "--train-seed", str(seed)]
                cmd += ["--window", window] if window != "band" else []
                cmd += ["--smoke"] if smoke else []
                todo.append((cmd, folder / f"{stage}.log"))
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    while todo or running:
        while todo and len(running) < max(1, jobs):
            cmd, log = todo.pop(0)
            print(f"started: {' '.join(cmd[1:])} (log: {log})", file=sys.stderr, flush=True)
            with open(log, "wb") as fh:
                running.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(D.REPO_ROOT)}), log))
        time.sleep(5)
        for proc, log in list(running):
            if proc.poll() is not None:
                running.remove((proc, log))
                if proc.returncode != 0:
                    for p, _ in running:
                        p.terminate()
                    raise SystemExit(f"a member's training failed (exit {proc.returncode}); see {log}")
    return [f / "candidate" / ONNX_NAME for f in folders], folders


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("candidate", "final", "loso", "loso-kermany"), default="candidate",
                    help="candidate: compose the graph; final: ship it; loso: only the LOSO reading of the --loso folders, whose "
                    "windows may differ (members that frame scans differently); loso-kermany: the same for the --loso folders' "
                    "train-without-Kermany runs (training.train --stage loso-kermany), into --out/loso_kermany.json")
    ap.add_argument("--members", type=Path, nargs="+", help="the members' .onnx files (each with its model.json beside it)")
    ap.add_argument("--loso", type=Path, nargs="+", help="each member's training.train --out folder holding loso.json and loso_logits.npz")
    ap.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        help="instead of --members and --loso: train each member from scratch with training.train's default recipe and "
        "this training seed (--stage candidate and --stage loso into --out/seed<N>, two 1-thread processes at a time), "
        "then use them; a member whose candidate and LOSO logits are already there is not retrained",
    )
    ap.add_argument(
        "--train-members",
        type=member_spec,
        nargs="+",
        metavar="WINDOW:SEED",
        help="as --train-seeds, with each member's window too (training.train --window): band:1 full:3 is 1.5.0's recipe",
    )
    ap.add_argument("--jobs", type=int, default=2, help="with --train-seeds or --train-members: trainings run at a time (1 torch thread each)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--card-note", default="", help="with --stage final: a paragraph for the card's Notes")
    ap.add_argument("--smoke", action="store_true", help="a pipeline check: --train-seeds / --train-members train tiny members (training.train --smoke); --stage final uses 40 images "
                    "per split and writes everything under --out only")
    args = ap.parse_args(argv)
    if args.train_seeds and args.train_members:
        ap.error("give --train-seeds or --train-members, not both")
    specs = args.train_members or [("band", s) for s in args.train_seeds or []]
    if specs:
        if args.members or args.loso:
            ap.error("--train-seeds and --train-members train the members: give one instead of --members and --loso")
        args.members, args.loso = train_members(specs, args.out, jobs=args.jobs, smoke=args.smoke)
    if args.stage in ("loso", "loso-kermany"):
        if not args.loso or len(args.loso) < 2:
            ap.error(f"--stage {args.stage}: give two or more --loso folders")
        args.out.mkdir(parents=True, exist_ok=True)
        if args.stage == "loso":
            loso = ensemble_loso(args.loso, vary=("train_seed", "window"))
            (args.out / "loso.json").write_text(json.dumps(E.json_safe(loso), indent=1))
            print(E.format_report("LOSO (mean of the members' LOSO models): all OCTDL DME/NORMAL", loso["octdl_in_set"]))
        else:
            lk = ensemble_loso_kermany(args.loso)
            (args.out / "loso_kermany.json").write_text(json.dumps(E.json_safe(lk), indent=1))
            print(E.format_report("Kermany-out (mean of the members' models): every Kermany CNV/DME/NORMAL scan", lk["kermany_in_set"]))
        return 0
    if not args.members or not args.loso or len(args.loso) != len(args.members):
        ap.error("give --members and one --loso folder per member, or --train-seeds / --train-members")
    t0 = time.time()
    cards = member_cards(args.members)
    own = own_windows(cards)
    loso = ensemble_loso(args.loso, vary=("train_seed", "window") if own else ("train_seed",))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loso.json").write_text(json.dumps(E.json_safe(loso), indent=1))
    print(E.format_report("LOSO (mean of the members' LOSO models): all OCTDL DME/NORMAL", loso["octdl_in_set"]), file=sys.stderr)
    if args.stage == "candidate":
        cand = args.out / "candidate"
        compose(args.members, cand / ONNX_NAME, own_inputs=own)
        (cand / "model.json").write_text(json.dumps(candidate_card(cards, args.members), indent=1))
        size = int(cards[0]["preprocessing"]["input_size"])
        rng = np.random.default_rng(0)
        x = [rng.random((4, 1, size, size), dtype=np.float32) for _ in cards] if own else rng.random((4, 1, size, size), dtype=np.float32)
        diff = parity(args.members, cand / ONNX_NAME, x)
        print(f"ensemble of {len(args.members)} written to {cand} (graph vs mean of the members: max abs diff {diff:.2e}); "
              f"{time.time() - t0:.0f}s; inference/weights untouched, test split unread", file=sys.stderr)
        return 0
    from training import ensemble_final

    return ensemble_final.ship(args, cards, loso, t0)


if __name__ == "__main__":
    raise SystemExit(main())
