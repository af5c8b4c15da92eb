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


def test_equalised_inputs_do_not_depend_on_the_grey_level_curve(records):
    images = torch.from_numpy(cxr_data.load_pixels(records[:2]).astype(np.float32)).unsqueeze(1)
    pre = Preprocess(96, equalize=True)
    plain = pre(images)
    assert torch.allclose(plain.mean(dim=(2, 3)), torch.zeros(2, 1), atol=0.02)
    assert torch.allclose(plain.std(dim=(2, 3)), torch.ones(2, 1), atol=0.02)
    for remapped in (images * 16 + 3, (images / 255) ** 2.2 * 4095, torch.log1p(images)):
        assert (pre(remapped) - plain).abs().mean() < 0.01
    assert (Preprocess(96)(images ** 2) - Preprocess(96)(images)).abs().mean() > 0.1


def test_equal_grey_levels_share_one_mid_rank():
    from clinassist.training.cxr_model import UNIFORM_STD, equalized

    image = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 20.0, 20.0, 30.0]]).reshape(1, 1, 2, 4)
    ranks = equalized(image, bins=31) * UNIFORM_STD + 0.5
    # the two 0s share the mid-rank (0 + 2) / 2 of 8 pixels, the three 10s (2 + 5) / 2, ...
    assert torch.allclose(ranks.reshape(2, 4), torch.tensor([[1, 1, 3.5, 3.5],
                                                             [3.5, 6, 6, 7.5]]) / 8)
