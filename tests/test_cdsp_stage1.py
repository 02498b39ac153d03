"""CDSP stage 1 through the cache: classifier and pseudo-labels are made once per key and reloaded."""
import numpy as np

from scribbleseg.cdsp.classifier import ClassifierConfig
from scribbleseg.cdsp.stage1 import PseudoLabelRecipe, classifier, pseudo_label_set
from scribbleseg.data.folder import ScribbleVariant


def test_pseudo_labels_are_cached_per_recipe_and_variant(tiny_dataset, tmp_path, monkeypatch):
    cfg_ds, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    recipe = PseudoLabelRecipe(ClassifierConfig(width=4, epochs=1, batch_size=8), threshold=0.3)
    logs = []
    first, score = pseudo_label_set(cfg_ds, recipe, root=tmp_path, log=logs.append)
    assert first.labels.shape == (24, 64, 64) and 0.0 <= score <= 100.0 and len(logs) >= 2
    again, score2 = pseudo_label_set(cfg_ds, recipe, root=tmp_path, log=logs.append)
    assert again.key == first.key and score2 == score and np.array_equal(again.labels, first.labels)
    n_logs = len(logs)
    model, history = classifier(cfg_ds, recipe.classifier, root=tmp_path, log=logs.append)  # loaded: no training
    assert len(logs) == n_logs and history[0]["epoch"] == 1 and not model.training
    other, _ = pseudo_label_set(cfg_ds, PseudoLabelRecipe(recipe.classifier, threshold=0.6), root=tmp_path, log=logs.append)
    assert other.key != first.key and (other.labels == 0).sum() >= (first.labels == 0).sum()  # more background
    dropped, _ = pseudo_label_set(cfg_ds, recipe, ScribbleVariant(3, drop=0.5), root=tmp_path, log=logs.append)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("cls-")]) == 2  # its own classifier


def test_oracle_pseudo_labels_are_the_masks(tiny_dataset, monkeypatch):
    from scribbleseg.cdsp.stage1 import oracle_pseudo_labels
    from scribbleseg.experiment import load_data

    cfg_ds, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    pseudo, score = oracle_pseudo_labels(cfg_ds)
    assert score == 100.0 and np.array_equal(pseudo.labels, load_data(cfg_ds, "train", ScribbleVariant(3)).masks)
