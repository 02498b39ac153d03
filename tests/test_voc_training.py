"""The `paper` path: the papers' configuration trains and evaluates on a tiny VOC-format fixture."""
import json

import pytest
import torch
import yaml

from scribbleseg.lab.config import thaw
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import VOCData, load_data, run_experiment
from scribbleseg.baseline import PartialCE
from scribbleseg.lab.study import train_config
from test_voc import voc  # noqa: F401  (the fixture: a 3-image VOC + ScribbleSup tree)


def test_paper_configuration_runs_two_iterations_on_voc_fixture(voc, tmp_path):  # noqa: F811
    paper = yaml.safe_load(open("params/paper/01_baselines.yaml"))
    train = dict(paper["train"])
    assert (train["model"], train["backbone"], train["output_stride"]) == ("deeplabv2", "resnet101", 8)
    train.update(epochs=2, batch_size=2, weights=None)  # 3 images, batch 2: one iteration per epoch
    data = VOCData(str(voc.root), train_split="trainaug", val_split="val", crop=65)
    cfg = train_config(0, **train)
    r = run_experiment(data, ScribbleVariant(), cfg, PartialCE(), log=lambda *_: None, root=tmp_path)
    assert [h["epoch"] for h in r.history] == [1, 2] and all(torch.isfinite(torch.tensor(h["ce"])) for h in r.history)
    assert r.metrics["num_classes"] == 21 and 0.0 <= r.metrics["miou"] <= 100.0
    assert "border_error_rate" not in r.metrics  # variable-size images: no border analysis
    model = r.load_model()
    assert model.output_stride == 8
    spec = json.loads((r.folder / "config.json").read_text())
    assert spec["train"]["optimizer"] == "sgd" and spec["dataset"].startswith("voc-")


def test_voc_batches_are_fixed_size_and_normalised(voc):  # noqa: F811
    train = load_data(VOCData(str(voc.root), crop=33), "train")
    item = train[0]
    assert item["image"].shape == (3, 33, 33) and item["image"].dtype == torch.float32
    assert item["scribble"].shape == (33, 33)
    val = load_data(VOCData(str(voc.root)), "val")
    v = val[0]
    assert "scribble" not in v and v["image"].dtype == torch.float32
    assert v["image"].shape[-2:] == v["mask"].shape


def test_missing_voc_folder_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        load_data(VOCData(str(tmp_path / "nowhere")), "train")


def test_evaluate_voc_dataset_with_crf(voc):  # noqa: F811
    pytest.importorskip("pydensecrf")
    from scribbleseg.evaluate import evaluate
    from scribbleseg.models.build import build_model

    model = build_model("small", 21, width=4).eval()
    val = load_data(VOCData(str(voc.root)), "val")
    plain, refined = evaluate(model, val), evaluate(model, val, crf=True)
    assert plain["num_classes"] == 21 and 0 <= refined["miou"] <= 100


def test_potts_paper_configuration_runs_two_iterations_on_voc_fixture(voc, tmp_path, monkeypatch):  # noqa: F811
    """params/paper/potts/04: DeepLabV3+ MobileNetV2, SGD poly, two stages, H_CCE + P_CD self-labeling on NN."""
    from scribbleseg.potts.method import SelfLabeling
    from scribbleseg.potts.study import TwoStage

    paper = yaml.safe_load(open("params/paper/potts/04_table3_relaxations.yaml"))
    stages = []
    for name in ("stage1", "stage2"):
        s = dict(paper[name])
        assert (s["model"], s["backbone"], s["batch_size"], s["optimizer"], s["schedule"]) == \
            ("deeplabv3plus", "mobilenetv2", 12, "sgd", "poly")
        s.update(epochs=2, batch_size=2, weights=None)  # 3 images, batch 2: one iteration per epoch
        stages.append(s)
    assert (paper["stage1"]["lr"], paper["stage2"]["lr"]) == (0.007, 0.0007)
    data = VOCData(str(voc.root), train_split="trainaug", val_split="val", crop=65)
    monkeypatch.setenv("SCRIBBLESEG_CACHE", str(tmp_path))
    two = TwoStage(data, stages[0], stages[1], log=lambda *_: None)
    r = two.second(SelfLabeling("CD", "CCE", "grid", steps=paper["solver_steps"] // 100), 1.0, 0)
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor([h["ce"], h["self"]])).all() for h in r.history)
    assert r.spec["init"] and r.metrics["num_classes"] == 21


def test_blpseg_paper_configuration_runs_two_iterations_on_voc_fixture(voc, tmp_path):  # noqa: F811
    """params/paper/blpseg/01: UperNet ResNet-101, AdamW poly, LAM + BLP with self-training, on the VOC fixture."""
    from scribbleseg.blpseg.method import BLPSeg

    paper = yaml.safe_load(open("params/paper/blpseg/01_table1_ablation.yaml"))
    train = dict(paper["train"])
    assert (train["model"], train["backbone"], train["optimizer"], train["lr"], train["batch_size"]) == \
        ("upernet", "resnet101", "adamw", 0.0003, 10)
    train.update(epochs=2, batch_size=2, weights=None)  # 3 images, batch 2: one iteration per epoch
    data = VOCData(str(voc.root), train_split="trainaug", val_split="val", crop=64)
    method = BLPSeg(sigma=paper["sigma"], self_train=paper["self_training"], self_train_from=1)  # self-training on in step 2
    r = run_experiment(data, ScribbleVariant(), train_config(0, **train), method, log=lambda *_: None, root=tmp_path)
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor([h["scribble_head"], h["seg"]])).all() for h in r.history)
    assert r.metrics["num_classes"] == 21 and r.load_model(method).lam is not None


def test_urss_paper_configuration_runs_two_stages_on_voc_fixture(voc, tmp_path):  # noqa: F811
    """params/paper/urss/02: DeepLabV2 dilated ResNet-50 OS8, SGD, rotation + blur, stage 1 (UR) then stage 2
    (eigenspace self-supervision on a grid that does not divide the crop: 65 px -> 9 x 9 at stride 8)."""
    from scribbleseg.urss import study

    paper = yaml.safe_load(open("params/paper/urss/02_table2_self_supervision.yaml"))
    stages = []
    for name in ("train", "stage2"):
        s = dict(paper[name])
        assert (s["model"], s["backbone"], s["output_stride"], s["optimizer"], s["batch_size"], s["weight_decay"]) == \
            ("deeplabv2", "resnet50", 8, "sgd", 16, 0.0005)
        s.update(epochs=2, batch_size=2, weights=None)  # 3 images, batch 2: one iteration per epoch
        stages.append(s)
    v = paper["voc"]
    assert (v["crop"], v["scale"], v["rotation"], v["blur_sigma"]) == (465, [0.5, 2.0], 10.0, 1.1)
    data = VOCData(str(voc.root), crop=65, scale=(0.5, 2.0), rotation=10.0, blur_sigma=1.1)
    quiet = {"log": lambda *_: None, "root": tmp_path}
    first = run_experiment(data, ScribbleVariant(), train_config(0, **stages[0]), study.ur(), **quiet)
    second = run_experiment(data, ScribbleVariant(), train_config(0, **stages[1]), study.urss(), init=first, **quiet)
    for r, terms in ((first, ("ce", "entropy")), (second, ("ce", "entropy", "ss"))):
        assert [h["epoch"] for h in r.history] == [1, 2]
        assert all(torch.isfinite(torch.tensor([h[t] for t in terms])).all() for h in r.history)
    assert second.spec["init"] == first.key and second.metrics["num_classes"] == 21


def test_cdsp_paper_configuration_runs_two_iterations_on_voc_fixture(voc, tmp_path):  # noqa: F811
    """params/paper/cdsp/02: DeepLabV2 ResNet-50 OS8, SGD with warm-up + cosine, every term of Eq. (5), with
    pseudo-labels read from a folder of PNGs (the released code's BMP / AFA / SEAM) and cropped with the image."""
    from scribbleseg.cdsp import stage1, study
    from scribbleseg.data.io import read_label, write_label

    paper = yaml.safe_load(open("params/paper/cdsp/02_table2_ablation.yaml"))
    train = dict(paper["train"])
    assert (train["model"], train["backbone"], train["optimizer"], train["lr"], train["weight_decay"], train["epochs"],
            train["batch_size"], train["warmup"]) == ("deeplabv2", "resnet50", "sgd", 0.001, 0.0005, 50, 16, 0.2)
    assert paper["voc"]["crop"] == 465 and paper["voc"]["pseudo_dir"]
    pseudo_dir = tmp_path / "BMP"
    pseudo_dir.mkdir()
    for sid in (voc.splits / "trainaug.txt").read_text().split():
        write_label(pseudo_dir / f"{sid}.png", read_label(voc.masks_aug / f"{sid}.png", 21))  # perfect labels
    data = VOCData(str(voc.root), crop=65, pseudo_dir=str(pseudo_dir))
    pseudo, score = stage1.pseudo_label_set(data, log=lambda *_: None)
    assert pseudo.key.startswith("dir-") and score != score  # NaN: not scored over VOC
    train.update(epochs=2, batch_size=2, weights=None)
    r = run_experiment(data, ScribbleVariant(), train_config(0, **train), study.full(pseudo), log=lambda *_: None,
                       root=tmp_path / "cache")
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor([h[t] for t in ("segs", "segc", "ds", "dc", "lorm")])).all() for h in r.history)
    with pytest.raises(ValueError, match="pseudo_dir"):
        stage1.pseudo_label_set(VOCData(str(voc.root)), log=lambda *_: None)
