import numpy as np
import torch

from clinassist.training import cxr_data
from clinassist.training.cxr_model import Preprocess
from clinassist.training.cxr_train import augmentations, default_config


def test_augmentations_keep_shape_and_a_plausible_range(records):
    from monai.utils import set_determinism

    set_determinism(0)
    image = torch.from_numpy(cxr_data.load_pixels(records[:1])[0]).float().unsqueeze(0)
    augment = augmentations(default_config())
    outputs = [torch.as_tensor(augment(image)) for _ in range(20)]
    for out in outputs:
        assert out.shape == (1, 224, 224)
        assert torch.isfinite(out).all()
        assert out.min() > -40 and out.max() < 300
    assert any(not torch.allclose(out, image) for out in outputs)


def test_preprocess_resizes_any_shape_and_standardises_each_image():
    pre = Preprocess(96)
    out = pre(torch.rand(3, 1, 300, 170) * 1000)
    assert out.shape == (3, 1, 96, 96)
    assert torch.allclose(out.mean(dim=(2, 3)), torch.zeros(3, 1), atol=1e-4)
    assert torch.allclose(out.std(dim=(2, 3)), torch.ones(3, 1), atol=1e-3)


def test_preprocess_gives_the_same_input_for_8_bit_and_16_bit_pixels(records):
    eight_bit = torch.from_numpy(cxr_data.load_pixels(records[:2]).astype(np.float32)).unsqueeze(1)
    sixteen_bit = eight_bit * 257.0 + 100.0
    pre = Preprocess(96)
    assert torch.allclose(pre(eight_bit), pre(sixteen_bit), atol=1e-4)
