"""The ensemble of exported models (training/ensemble.py) and the paired shipping rule."""
from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from training import data as D
from training import ensemble as En
from training import robustness as R

CNV, DME, DRUSEN, NORMAL = (D.CLASSES.index(c) for c in ("CNV", "DME", "DRUSEN", "NORMAL"))


def _tiny_member(path, weights: np.ndarray, scale: float) -> None:
    """A graph with training.train's interface on 2x2 inputs: input -> probabilities, heatmap, oct_score."""
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (training-only dependency, requirements-train.txt)")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("Mul", ["input", "scale"], ["scaled"]),
        helper.make_node("Sigmoid", ["scaled"], ["sig"]),
        helper.make_node("Squeeze", ["sig", "axis1"], ["heatmap"]),
        helper.make_node("ReduceMean", ["sig"], ["oct_score"], axes=[1, 2, 3], keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(weights.astype(np.float32), "w"),
        numpy_helper.from_array(np.array(scale, np.float32), "scale"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    graph = helper.make_graph(
        nodes,
        "member",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["batch", 2, 2]),
            helper.make_tensor_value_info("oct_score", TensorProto.FLOAT, ["batch"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _two_tiny_members(tmp_path, seed: int):
    """Two different tiny members a.onnx and b.onnx, and the generator that drew them."""
    rng = np.random.default_rng(seed)
    members = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    _tiny_member(members[0], rng.normal(size=(4, 4)), 1.0)
    _tiny_member(members[1], rng.normal(size=(4, 4)), 3.0)
    return rng, members


def test_the_ensemble_graph_outputs_the_mean_of_its_members(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    rng, members = _two_tiny_members(tmp_path, 0)
    En.compose(members, tmp_path / "e.onnx")
    x = rng.normal(size=(5, 1, 2, 2)).astype(np.float32)
    assert En.parity(members, tmp_path / "e.onnx", x) < 1e-6
    probs, heat, score = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    a = ort.InferenceSession(str(members[0]), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    # The members really differ, so the mean is not either of them.
    assert not np.allclose(a[0], probs, atol=1e-3)
    assert probs.shape == (5, 4) and heat.shape == (5, 2, 2) and score.shape == (5,)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


def test_members_of_two_windows_get_their_own_inputs_and_heatmaps(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    rng, members = _two_tiny_members(tmp_path, 1)
    En.compose(members, tmp_path / "e.onnx", own_inputs=True)
    x0, x1 = (rng.normal(size=(3, 1, 2, 2)).astype(np.float32) for _ in range(2))
    assert En.parity(members, tmp_path / "e.onnx", [x0, x1]) < 1e-6
    sess = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input", "input_1"]
    assert [o.name for o in sess.get_outputs()] == ["probabilities", "heatmap", "oct_score", "heatmap_1"]
    probs, heat, score, heat1 = sess.run(None, {"input": x0, "input_1": x1})
    a = ort.InferenceSession(str(members[0]), providers=["CPUExecutionProvider"]).run(None, {"input": x0})
    b = ort.InferenceSession(str(members[1]), providers=["CPUExecutionProvider"]).run(None, {"input": x1})
    np.testing.assert_allclose(probs, (a[0] + b[0]) / 2, atol=1e-6)
    np.testing.assert_allclose(score, (a[2] + b[2]) / 2, atol=1e-6)
    np.testing.assert_allclose(heat, a[1], atol=1e-6)  # each member's map on its own crop
    np.testing.assert_allclose(heat1, b[1], atol=1e-6)


def test_the_runtime_serves_members_of_two_windows(oct_data):
    """The shipped 1.5.0 graph has one input per member window: the runtime feeds each its crop
    and averages the members' heatmaps on the original image."""
    ort = pytest.importorskip("onnxruntime")
    from inference import preprocessing as P
    from inference import runtime as RT

    weights = D.REPO_ROOT / "inference" / "weights" / "oct-lite0-v1.onnx"
    card = json.loads((weights.parent / "model.json").read_text())
    if not card.get("member_inputs"):
        pytest.skip("the shipped model has one window")
    cfgs = [P.preprocessing_config({"preprocessing": m["preprocessing"]}) for m in card["member_inputs"]]
    assert len({(c["window_min_frac"], c["window_max_frac"]) for c in cfgs}) == len(cfgs)  # the windows differ
    model = RT.load_model(weights)
    sess = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    items = R.select_items("val", 1, oct_data)
    images = [Image.open(oct_data / it.path) for it in items]
    got = model.predict_images(images)
    for img, g in zip(images, got):
        pre = [P.preprocess(img, c) for c in cfgs]
        outs = sess.run(["probabilities", "oct_score", *(m["heatmap"] for m in card["member_inputs"])],
                        {m["input"]: p.array[None] for m, p in zip(card["member_inputs"], pre)})
        assert [g.probabilities[c] for c in D.CLASSES] == pytest.approx(outs[0][0].tolist(), abs=1e-6)
        assert g.oct_score == pytest.approx(float(outs[1][0]), abs=1e-6)
        grids = [P.heatmap_to_grid(h[0], p.geometry) for h, p in zip(outs[2:], pre)]
        assert not np.allclose(grids[0], grids[1])  # the crops differ
        np.testing.assert_allclose(g.heatmap, np.mean(grids, axis=0), atol=1e-6)
        # One band detection feeds every crop: the same arrays as preprocessing once per window.
        for p, q in zip(P.preprocess_many(img, cfgs), pre):
            np.testing.assert_array_equal(p.array, q.array)
    with pytest.raises(ValueError, match="more than the window"):
        P.preprocess_many(images[0], [cfgs[0], {**cfgs[0], "input_size": 96}])
    with pytest.raises(ValueError, match="inputs"):
        model._run([np.zeros((1, 1, 192, 192), np.float32)])


def test_compose_refuses_one_member_and_graphs_of_another_interface(tmp_path):
    pytest.importorskip("onnx")
    rng = np.random.default_rng(1)
    _tiny_member(tmp_path / "a.onnx", rng.normal(size=(4, 4)), 1.0)
    with pytest.raises(ValueError, match="at least two"):
        En.compose([tmp_path / "a.onnx"], tmp_path / "e.onnx")
    import onnx

    m = onnx.load(str(tmp_path / "a.onnx"))
    m.graph.output[2].name = "gate"
    m.graph.node[-1].output[0] = "gate"
    onnx.save(m, str(tmp_path / "b.onnx"))
    with pytest.raises(ValueError, match="not a model exported by training.train"):
        En.compose([tmp_path / "a.onnx", tmp_path / "b.onnx"], tmp_path / "e.onnx")
    assert not (tmp_path / "e.onnx").exists()


def _loso_run(folder, seed: int, logits_scale: float, temperature: float, epochs: int = 5, augment: str = "robust-strong"):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    y_k = np.array([0, 1, 2, 3] * 5)
    y_o = np.array([DME] * 6 + [NORMAL] * 6)
    kv = np.eye(4)[y_k] * logits_scale + rng.normal(0, 1, (20, 4))
    oi = np.eye(4)[y_o] * logits_scale + rng.normal(0, 2, (12, 4))
    amd = rng.normal(0, 1, (7, 4))
    np.savez(folder / "loso_logits.npz", kermany_val=kv, kermany_val_y=y_k, octdl_in_set=oi, octdl_in_set_y=y_o, octdl_amd=amd,
             temperature=np.float64(temperature))
    (folder / "loso.json").write_text(json.dumps({
        "epochs": epochs, "train_images": 1000, "temperature": temperature, "wall_s": 60.0,
        "octdl_in_set": {"accuracy": float((oi.argmax(1) == y_o).mean())},
        "augment": augment, "window": "band", "frozen_blocks": 5, "train_seed": seed,
    }))
    return kv, oi, amd, y_o


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_the_ensembles_loso_reading_is_the_mean_of_the_members_calibrated_probabilities(tmp_path):
    _, oi1, _, y = _loso_run(tmp_path / "s1", 1, 2.0, 1.5)
    _, oi2, _, _ = _loso_run(tmp_path / "s2", 2, 3.0, 0.8)
    lo = En.ensemble_loso([tmp_path / "s1", tmp_path / "s2"])
    want = (_softmax(oi1 / 1.5) + _softmax(oi2 / 0.8)) / 2
    assert lo["octdl_in_set"]["accuracy"] == pytest.approx(float((want.argmax(1) == y).mean()))
    assert lo["octdl_in_set"]["n"] == 12 and lo["octdl_amd"]["n"] == 7
    assert lo["train_seed"] == [1, 2] and lo["temperature"] == [1.5, 0.8] and lo["augment"] == "robust-strong"
    assert D.recipe_label(lo) == "robust-strong, training seeds 1 and 2"
    assert [m["train_seed"] for m in lo["members"]] == [1, 2]


def test_the_ensembles_loso_refuses_members_of_another_recipe(tmp_path):
    _loso_run(tmp_path / "s1", 1, 2.0, 1.5)
    _loso_run(tmp_path / "s2", 2, 2.0, 1.5, augment="1.3")
    with pytest.raises(ValueError, match="augment"):
        En.ensemble_loso([tmp_path / "s1", tmp_path / "s2"])


def _row(true: list[int], pred: list[int]) -> dict:
    """A suite row from each image's label and prediction, with the figures run_suite derives from them."""
    y, p = np.asarray(true), np.asarray(pred)
    probs = np.eye(4)[p]
    return {**R.row_metrics(probs, y), "true": list(map(int, y)), "pred": list(map(int, p))}


def _suite(rows: dict) -> dict:
    return {"split": "val", "seed": 0, "n_images": 100, "limit": None, "rows": rows}


def test_paired_margin_is_two_standard_errors_of_the_disagreement():
    assert R.paired_margin(4, 264) == pytest.approx(2 * 2 / 264)
    assert R.paired_margin(0, 100) == pytest.approx(2 / 100)  # d floored at 1
    assert R.paired_margin(9, 100, standard_errors=1.0) == pytest.approx(0.03)


def test_the_paired_rule_counts_disagreement_and_asks_for_a_pooled_gain():
    # 100 images per row: 25 per class.
    y = [CNV] * 25 + [DME] * 25 + [DRUSEN] * 25 + [NORMAL] * 25
    shipped = list(y)
    shipped[50] = NORMAL  # one DRUSEN missed
    shipped[51] = NORMAL
    cand = list(y)  # fixes both
    cand[0] = DME  # a CNV called DME: still urgent, one error
    rows_s = {k: _row(y, shipped) for k in ("clean", "shadows", "off_fovea", "hospital")}
    rows_c = {k: _row(y, cand) for k in ("clean", "shadows", "off_fovea", "hospital")}
    fragile_y = [NORMAL] * 25
    fragile = _suite({**rows_s, "off_fovea": _row(fragile_y, [CNV] * 3 + [NORMAL] * 22),
                      "shadows": _row(y, y[:75] + [DME] * 2 + [NORMAL] * 23), "hospital": _row(y, y[:75] + [DME] * 9 + [NORMAL] * 16)})
    rows_s["off_fovea"] = _row(fragile_y, [NORMAL] * 25)
    rows_c["off_fovea"] = _row(fragile_y, [NORMAL] * 25)
    verdict = R.check_rule(_suite(rows_c), _suite(rows_s), 0.91, "paired", fragile)
    failed = [name for name, ok, _ in verdict if not ok]
    # Pooled over the 325 images, 9 predictions differ: 6 fixed, 3 lost, a gain of 3 of 325, exactly one SE (sqrt(9) / 325).
    assert failed == [], failed
    detail = dict((name, d) for name, _, d in verdict)
    assert "3 of 100 predictions differ" in detail["clean: >= 95% floors, accuracy >= shipped - 2 SE"]

    # The same model as the shipped one is not better by a standard error.
    same = R.check_rule(_suite(rows_s), _suite(rows_s), 0.91, "paired", fragile)
    assert [name for name, ok, _ in same if not ok] == ["pooled accuracy >= shipped + 1 SE"]

    # Three CNV scans called NORMAL on clean: three errors there against the shipped model's two.
    worse_clean = list(y)
    worse_clean[0:3] = [NORMAL] * 3
    rows_w = {**rows_c, "clean": _row(y, worse_clean)}
    failed = [name for name, ok, _ in R.check_rule(_suite(rows_w), _suite(rows_s), 0.91, "paired", fragile) if not ok]
    assert "clean errors no more than shipped" in failed

    # Losing ten CNV scans on one row is outside its margin (12 differ: 8 points lost, margin 2*sqrt(12)/100 = 6.9).
    bad = list(y)
    bad[0:10] = [NORMAL] * 10
    rows_b = {**rows_c, "hospital": _row(y, bad)}
    failed = [name for name, ok, _ in R.check_rule(_suite(rows_b), _suite(rows_s), 0.91, "paired", fragile) if not ok]
    assert "hospital: >= 95% floors, accuracy >= shipped - 2 SE" in failed
    assert "pooled CNV recall >= shipped - 2 SE" in failed
    assert "pooled urgent sensitivity >= shipped - 2 SE" in failed

    # The comparison with 1.3.0 where it is fragile and the LOSO guard are still there.
    names = dict((n, ok) for n, ok, _ in R.check_rule(_suite(rows_c), _suite(rows_s), 0.89, "paired", fragile))
    assert names["off_fovea: NORMAL specificity strictly higher than 1.3.0"]
    assert not names["LOSO OCTDL accuracy >= 90%"]
    with pytest.raises(ValueError, match="1.3.0"):
        R.check_rule(_suite(rows_c), _suite(rows_s), 0.91, "paired")


def test_the_device_rule_asks_for_non_inferiority_on_the_suite_and_a_paired_loso_gain(tmp_path):
    y = [CNV] * 25 + [DME] * 25 + [DRUSEN] * 25 + [NORMAL] * 25
    shipped = list(y)
    shipped[50] = NORMAL
    cand = list(y)
    cand[0] = DME  # a CNV called DME where the shipped model missed a DRUSEN: as accurate, not better
    rows_s = {k: _row(y, shipped) for k in ("clean", "shadows", "hospital")}
    rows_c = {k: _row(y, cand) for k in ("clean", "shadows", "hospital")}
    rows_s["off_fovea"] = rows_c["off_fovea"] = _row([NORMAL] * 25, [NORMAL] * 25)
    fragile = _suite({**rows_s, "off_fovea": _row([NORMAL] * 25, [CNV] * 3 + [NORMAL] * 22),
                      "shadows": _row(y, y[:75] + [DME] * 2 + [NORMAL] * 23), "hospital": _row(y, y[:75] + [DME] * 9 + [NORMAL] * 16)})
    # LOSO on 100 OCTDL images: the shipped recipe gets 85 right, the candidate 92; 9 predictions differ.
    y_o = np.array([DME] * 30 + [NORMAL] * 70)
    p_b = y_o.copy()
    p_b[:15] = NORMAL
    p_c = y_o.copy()
    p_c[:6] = NORMAL
    p_c[40:42] = DME
    kwargs = {"rule": "device", "fragile": fragile}
    verdict = R.check_rule(_suite(rows_c), _suite(rows_s), None, loso_paired=(y_o, p_c, p_b), **kwargs)
    failed = [name for name, ok, _ in verdict if not ok]
    assert failed == [], failed
    detail = dict((name, d) for name, _, d in verdict)
    assert detail["LOSO OCTDL accuracy >= shipped recipe's on this machine + 1 SE"].startswith("92.0% vs 85.0% over 100 images; 11 differ")
    assert detail["LOSO OCTDL accuracy >= 90%"] == "92.0%"
    # The paired rule would refuse the same candidate: it is not better pooled.
    assert "pooled accuracy >= shipped + 1 SE" in [n for n, ok, _ in R.check_rule(_suite(rows_c), _suite(rows_s), 0.92, "paired", fragile) if not ok]

    # A LOSO gain of exactly one paired standard error passes (86 vs 85, one differs); no gain fails.
    def loso_gain(p):
        return dict((n, ok) for n, ok, _ in R.check_rule(_suite(rows_c), _suite(rows_s), None, loso_paired=(y_o, p, p_b), **kwargs))[
            "LOSO OCTDL accuracy >= shipped recipe's on this machine + 1 SE"]
    one = p_b.copy()
    one[14] = DME
    assert loso_gain(one)
    swapped = p_b.copy()
    swapped[0:2] = DME  # two fixed, two lost: 85 vs 85 with 4 differing
    swapped[40:42] = DME
    assert not loso_gain(swapped) and not loso_gain(p_b)

    # A loss pooled over the suite fails non-inferiority.
    bad = list(y)
    bad[0:8] = [NORMAL] * 8
    rows_b = {k: (_row(y, bad) if k != "off_fovea" else v) for k, v in rows_c.items()}
    failed = [n for n, ok, _ in R.check_rule(_suite(rows_b), _suite(rows_s), None, loso_paired=(y_o, p_c, p_b), **kwargs) if not ok]
    assert "pooled accuracy >= shipped - 2 SE" in failed and "clean errors at most 8" not in failed
    with pytest.raises(ValueError, match="LOSO"):
        R.check_rule(_suite(rows_c), _suite(rows_s), None, "device", fragile)


def test_loso_predictions_pair_two_runs_on_the_same_octdl_images(tmp_path):
    y = np.array([DME, NORMAL, NORMAL, DME])
    np.savez(tmp_path / "c.npz", octdl_in_set=np.eye(4)[[DME, NORMAL, DME, DME]], octdl_in_set_y=y, temperature=np.float64(1.0))
    np.savez(tmp_path / "b.npz", octdl_in_set=np.eye(4)[[NORMAL, NORMAL, NORMAL, DME]], octdl_in_set_y=y, temperature=np.float64(1.0))
    yy, pc, pb = R.loso_predictions(tmp_path / "c.npz", tmp_path / "b.npz")
    assert yy.tolist() == y.tolist() and pc.tolist() == [DME, NORMAL, DME, DME] and pb.tolist() == [NORMAL, NORMAL, NORMAL, DME]
    np.savez(tmp_path / "o.npz", octdl_in_set=np.eye(4)[[DME] * 4], octdl_in_set_y=np.array([NORMAL, DME, NORMAL, DME]),
             temperature=np.float64(1.0))
    with pytest.raises(ValueError, match="same OCTDL images"):
        R.loso_predictions(tmp_path / "c.npz", tmp_path / "o.npz")


def test_the_paired_rule_needs_each_images_prediction_on_the_same_images():
    y = [CNV, DME, DRUSEN, NORMAL] * 5
    old = {k: {kk: v for kk, v in _row(y, y).items() if kk not in ("pred", "true")} for k in ("clean", "shadows", "off_fovea", "hospital")}
    new = {k: _row(y, y) for k in old}
    with pytest.raises(ValueError, match="prediction"):
        R.check_rule(_suite(new), _suite(old), 0.91, "paired", _suite(new))
    shuffled = {**new, "clean": _row(y[::-1], y[::-1])}
    with pytest.raises(ValueError, match="same images"):
        R.check_rule(_suite(shuffled), _suite(new), 0.91, "paired", _suite(new))


def _single_model(weights, folder):
    """The shipped model itself when it is one model, else its first member (extract_member), with its card."""
    card = json.loads((weights.parent / "model.json").read_text())
    if not card.get("ensemble"):
        return weights
    En.extract_member(weights, 0, folder / weights.name)
    member = {**card, "version": card["ensemble"]["members"][0]["version"], "temperature": card["ensemble"]["members"][0]["temperature"],
              "preprocessing": (card.get("member_inputs") or [card])[0]["preprocessing"], "onnx": weights.name}
    for key in ("ensemble", "member_inputs"):
        member.pop(key, None)
    (folder / "model.json").write_text(json.dumps(member))
    return folder / weights.name


def test_a_member_extracted_from_the_shipped_ensemble_is_that_member(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx", reason="onnx is not installed (training-only dependency, requirements-train.txt)")
    weights = D.REPO_ROOT / "inference" / "weights" / "oct-lite0-v1.onnx"
    card = json.loads((weights.parent / "model.json").read_text())
    if not card.get("ensemble"):
        pytest.skip("the shipped model is not an ensemble")
    names = [m["input"] for m in card.get("member_inputs") or [{"input": "input"}] * len(card["ensemble"]["members"])]
    members = []
    for k in range(len(card["ensemble"]["members"])):
        En.extract_member(weights, k, tmp_path / f"m{k}.onnx")
        members.append(tmp_path / f"m{k}.onnx")
    x = [np.random.default_rng(k).normal(size=(2, 1, 192, 192)).astype(np.float32) for k in range(len(members))]
    assert En.parity(members, weights, x if card.get("member_inputs") else x[0]) < 1e-5
    sess = ort.InferenceSession(str(members[-1]), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"] and [o.name for o in sess.get_outputs()] == list(En.OUTPUTS)
    assert len(set(names)) == len(names)


def test_the_final_stage_writes_an_ensemble_card_from_the_served_graph(oct_data, tmp_path):
    """--stage final --smoke on real images: one model twice (so the mean is that model), all under --out."""
    pytest.importorskip("onnx", reason="onnx is not installed (training-only dependency, requirements-train.txt)")
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (requirements-train.txt)")
    weights = D.REPO_ROOT / "inference" / "weights" / "oct-lite0-v1.onnx"
    shipped = _single_model(weights, tmp_path / "m0")
    _loso_run(tmp_path / "s1", 1, 2.0, 1.5)
    _loso_run(tmp_path / "s2", 2, 3.0, 0.8)
    out = tmp_path / "ens"
    before, served_before = shipped.read_bytes(), weights.read_bytes()
    assert En.main(["--stage", "final", "--smoke", "--members", str(shipped), str(shipped),
                    "--loso", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(out)]) == 0
    assert weights.read_bytes() == served_before  # --smoke never touches inference/weights
    card = json.loads((out / "weights" / "model.json").read_text())
    assert card["version"] == En.ENSEMBLE_VERSION and len(card["ensemble"]["members"]) == 2
    assert card["card"]["parity_max_abs_diff"] < 1e-5
    assert card["card"]["hyperparameters"]["train_seed"] == [1, 2]
    # Two identical members: the calibration "before" is the member's own softmax(logits), not the calibrated output.
    cal = card["card"]["calibration"]
    assert cal["test_ece_before"] != cal["test_ece_after"]
    md = (out / "model-card.md").read_text()
    assert f"# Model card: oct-lite0 {En.ENSEMBLE_VERSION}" in md
    assert "The mean of 2 models" in md and "each member's own temperature" in md
    assert "One LOSO model per member" in md and "training seeds 1 and 2" in md
    assert (out / "members" / "m0" / "oct-lite0-v1.onnx").read_bytes() == before


def test_member_specs_name_a_window_and_a_seed():
    assert En.member_spec("full:3") == ("full", 3) and En.member_spec("band:1") == ("band", 1) and En.member_spec("2") == ("band", 2)
    for bad in ("wide:1", "full:x", "full:"):
        with pytest.raises(argparse.ArgumentTypeError):
            En.member_spec(bad)


def test_train_members_trains_each_member_and_its_loso_model_then_ships(oct_data, tmp_path):
    """The one command of 1.5.0's recipe, on tiny trainings (training.train --smoke): a band-window and a
    full-window member, candidate stage then final stage."""
    pytest.importorskip("torch", reason="torch is not installed (training-only dependency, requirements-train.txt)")
    out = tmp_path / "ens"
    assert En.main(["--stage", "candidate", "--smoke", "--train-members", "band:1", "full:2", "--out", str(out)]) == 0
    for folder in ("seed1", "full-seed2"):
        assert (out / folder / "candidate" / "oct-lite0-v1.onnx").is_file()
        assert (out / folder / "loso_logits.npz").is_file()
    card = json.loads((out / "candidate" / "model.json").read_text())
    assert len(card["ensemble"]["members"]) == 2
    assert card["ensemble"]["members"][0]["sha256"] != card["ensemble"]["members"][1]["sha256"]
    assert [m["preprocessing"]["window_min_frac"] for m in card["member_inputs"]] == [0.3, 1.0]
    lo = json.loads((out / "loso.json").read_text())
    assert lo["train_seed"] == [1, 2] and lo["window"] == ["band", "full"]
    # The final stage from the same folder retrains nothing (the logs would be rewritten) and writes the card
    # from the members' own training records; the served graph has one input per window.
    mtime = (out / "seed1" / "candidate.log").stat().st_mtime
    assert En.main(["--stage", "final", "--smoke", "--train-members", "band:1", "full:2", "--out", str(out)]) == 0
    assert (out / "seed1" / "candidate.log").stat().st_mtime == mtime
    final = json.loads((out / "weights" / "model.json").read_text())
    assert final["card"]["hyperparameters"]["train_seed"] == [1, 2]
    assert "--window full" in final["card"]["member_commands"][1] and "--window" not in final["card"]["member_commands"][0]
    assert [m["input"] for m in final["member_inputs"]] == ["input", "input_1"]
    assert set(final["inputs"]) == {"input", "input_1"} and "heatmap_1" in final["outputs"]
    assert final["card"]["parity_max_abs_diff"] < 1e-5
    assert "training seeds 1 and 2" in (out / "model-card.md").read_text()


def test_members_must_share_the_preprocessing_in_every_stage(tmp_path):
    """Members may frame scans with other windows (each then gets its own input), nothing else: member_cards (both stages)."""
    card = {"onnx": "oct-lite0-v1.onnx", "classes": list(D.CLASSES), "preprocessing": {"input_size": 192, "window_min_frac": 0.3}}
    paths = []
    for name, pre in (("a", card["preprocessing"]), ("b", {**card["preprocessing"], "window_min_frac": 1.0}),
                      ("c", {**card["preprocessing"], "input_size": 224})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.json").write_text(json.dumps({**card, "preprocessing": pre}))
        paths.append(tmp_path / name / "oct-lite0-v1.onnx")
    assert not En.own_windows(En.member_cards([paths[0], paths[0]]))
    cards = En.member_cards(paths[:2])
    assert En.own_windows(cards)
    assert [(m["input"], m["heatmap"]) for m in En.member_inputs(cards)] == [("input", "heatmap"), ("input_1", "heatmap_1")]
    with pytest.raises(ValueError, match="another preprocessing"):
        En.member_cards([paths[0], paths[2]])


def test_the_loso_stage_reads_members_of_two_windows_as_one_ensemble(tmp_path):
    _, oi1, _, y = _loso_run(tmp_path / "s1", 1, 2.0, 1.5)
    _, oi2, _, _ = _loso_run(tmp_path / "s3", 3, 3.0, 0.8)
    rec = json.loads((tmp_path / "s3" / "loso.json").read_text())
    (tmp_path / "s3" / "loso.json").write_text(json.dumps({**rec, "window": "full"}))
    with pytest.raises(ValueError, match="window"):
        En.ensemble_loso([tmp_path / "s1", tmp_path / "s3"])  # a seed ensemble shares the window
    assert En.main(["--stage", "loso", "--loso", str(tmp_path / "s1"), str(tmp_path / "s3"), "--out", str(tmp_path / "e")]) == 0
    lo = json.loads((tmp_path / "e" / "loso.json").read_text())
    want = (_softmax(oi1 / 1.5) + _softmax(oi2 / 0.8)) / 2
    assert lo["octdl_in_set"]["accuracy"] == pytest.approx(float((want.argmax(1) == y).mean()))
    assert lo["window"] == ["band", "full"] and lo["train_seed"] == [1, 3]
    assert D.recipe_label(lo) == "robust-strong, windows band and full, training seeds 1 and 3"
    # The device rule pairs the same ensemble's predictions with the shipped recipe's LOSO model.
    yy, pc, pb = R.loso_predictions([tmp_path / "s1" / "loso_logits.npz", tmp_path / "s3" / "loso_logits.npz"], tmp_path / "s1" / "loso_logits.npz")
    assert yy.tolist() == y.tolist() and pc.tolist() == want.argmax(1).tolist() and pb.tolist() == oi1.argmax(1).tolist()



def _kermany_out_run(folder, seed: int, window: str, logits_scale: float, temperature: float):
    """A member's train-without-Kermany run as training.train --stage loso-kermany leaves it."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    y = np.array([0, 1, 2, 3] * 6)
    lk = np.eye(4)[y] * logits_scale + rng.normal(0, 2, (24, 4))
    y_v = np.array([DME, NORMAL] * 4)
    lv = np.eye(4)[y_v] * logits_scale + rng.normal(0, 1, (8, 4))
    np.savez(folder / "loso_kermany_logits.npz", kermany=lk, kermany_y=y, octdl_val=lv, octdl_val_y=y_v, temperature=np.float64(temperature))
    rep = D.kermany_out_report(_softmax(lk / temperature), y)
    (folder / "loso_kermany.json").write_text(json.dumps({
        "held_out_source": "kermany", "epochs": 5, "train_images": 900, "train_classes": {"CNV": 300, "DME": 100, "NORMAL": 500},
        "temperature": temperature, "wall_s": 60.0, "kermany_in_set": {"accuracy": rep["kermany_in_set"]["accuracy"]},
        "augment": "robust-strong", "window": window, "frozen_blocks": 0, "train_seed": seed,
    }))
    return lk, y


def test_the_kermany_out_stage_reads_the_members_runs_as_one_ensemble(tmp_path):
    lk1, y = _kermany_out_run(tmp_path / "band", 1, "band", 2.0, 1.5)
    lk3, _ = _kermany_out_run(tmp_path / "full", 3, "full", 3.0, 0.8)
    assert En.main(["--stage", "loso-kermany", "--loso", str(tmp_path / "band"), str(tmp_path / "full"), "--out", str(tmp_path / "e")]) == 0
    lo = json.loads((tmp_path / "e" / "loso_kermany.json").read_text())
    want = (_softmax(lk1 / 1.5) + _softmax(lk3 / 0.8)) / 2
    drusen = y == D.CLASSES.index("DRUSEN")
    assert lo["kermany_in_set"]["n"] == int((~drusen).sum())
    assert lo["kermany_in_set"]["accuracy"] == pytest.approx(float((want[~drusen].argmax(1) == y[~drusen]).mean()))
    assert lo["kermany_drusen"]["n"] == int(drusen.sum())
    assert sum(lo["kermany_drusen"]["predicted"].values()) == int(drusen.sum())
    assert lo["window"] == ["band", "full"] and lo["train_seed"] == [1, 3] and lo["temperature"] == [1.5, 0.8]
    # The card's Kermany-out table takes it as it takes a single model's run.
    assert "robust-strong, windows band and full, training seeds 1 and 3" in R.card_section([], "test", kermany_out=[lo])
    # Members evaluated on other images are refused.
    z = dict(np.load(tmp_path / "full" / "loso_kermany_logits.npz"))
    np.savez(tmp_path / "full" / "loso_kermany_logits.npz", **{**z, "kermany_y": z["kermany_y"][::-1]})
    with pytest.raises(ValueError, match="same images"):
        En.ensemble_loso_kermany([tmp_path / "band", tmp_path / "full"])


def test_the_suite_scores_a_mean_of_models_each_with_its_own_window(oct_data, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from inference import preprocessing as P
    from inference import runtime as RT

    weights = D.REPO_ROOT / "inference" / "weights" / "oct-lite0-v1.onnx"
    if not weights.is_file():
        pytest.skip(f"the shipped model is not at {weights}")
    # A second member: the same graph framing scans with the full-height window (training.train --window full).
    full = tmp_path / "full"
    full.mkdir()
    shutil.copy(weights, full / weights.name)
    card = json.loads((weights.parent / "model.json").read_text())
    full_window = {"window_min_frac": 1.0, "window_max_frac": 1.0}
    card["preprocessing"] = {**card["preprocessing"], **full_window}
    for m in card.get("member_inputs") or []:  # the shipped 1.5.0 frames scans per member
        m["preprocessing"] = {**m["preprocessing"], **full_window}
    card["version"] = "full-window copy"
    (full / "model.json").write_text(json.dumps(card))
    monkeypatch.setenv("OCT_DATA_DIR", str(oct_data))
    out = tmp_path / "mean.json"
    assert R.main(["--mean-of", str(weights), str(full / weights.name), "--limit", "2", "--threads", "1",
                   "--stress", "clean", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [m["path"] for m in res["members"]] == [str(weights), str(full / weights.name)]
    assert res["members"][1]["version"] == "full-window copy"
    assert res["model"]["version"].startswith("candidate (mean of ") and res["leave_one_source_out"] is None

    # The row is the argmax of the two members' mean probabilities, each member preprocessing the scan itself.
    items = R.select_items("val", 2, oct_data)
    images = []
    for it in items:
        with Image.open(oct_data / it.path) as img:
            images.append(Image.fromarray(P.remove_fill(P.to_grey(img))))
    members = [RT.load_model(weights), RT.load_model(full / weights.name)]
    probs = [np.array([[r.probabilities[c] for c in D.CLASSES] for r in m.predict_images(images)]) for m in members]
    assert not np.allclose(probs[0], probs[1])  # the windows differ, so do the readings
    assert res["rows"]["clean"]["pred"] == np.mean(probs, axis=0).argmax(1).tolist()
    assert res["rows"]["clean"]["true"] == [D.CLASSES.index(it.label) for it in items]
    assert R.main(["--mean-of", str(weights), str(weights), "--calibrate-quality"]) == 2
