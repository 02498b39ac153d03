import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A 24/8-image embedded dataset built once per test session (about 1 s)."""
    from scribbleseg.data.embedded import EmbeddedConfig, SceneConfig, ensure_embedded

    cfg = EmbeddedConfig(n_train=24, n_val=8, scene=SceneConfig(size=64, object_size=(16, 32)))
    root = tmp_path_factory.mktemp("data")
    return cfg, ensure_embedded(cfg, root)
