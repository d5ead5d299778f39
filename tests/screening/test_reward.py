"""RFFT mechanics on tiny randomly initialised diffusers models built here (nothing downloaded): the reward's
gradients reach only the ControlNet, L_CC is zero for identical models and positive otherwise, and a few reward
steps raise the reward. A mechanics test, not a quality claim."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers", reason="RFFT tests need the diffusers extra")

from PIL import Image  # noqa: E402

from c4u_engine.screening.reward import (UsabilityReward, consistency_condition_loss,  # noqa: E402
                                         differentiable_planes, predicted_x0)
from c4u_engine.errors import InvalidInputError  # noqa: E402
from c4u_engine.screening.rfnet import RFNet, RFNetConfig  # noqa: E402

T = 200  # one of the last DDIM steps of a 1000-step schedule (of 20 DDIM steps: the fourth from the end)


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8)
    controlnet = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8,))
    alpha_bar = diffusers.DDIMScheduler(num_train_timesteps=1000).alphas_cumprod[T]
    return unet.requires_grad_(False), controlnet, float(alpha_bar)


@pytest.fixture(scope="module")
def reward():
    torch.manual_seed(1)
    cutout = Image.new("RGBA", (40, 60), (0, 0, 0, 0))
    cutout.paste((200, 30, 30, 255), (5, 5, 35, 55))
    net = RFNet(RFNetConfig(dim=16, heads=2, fusion_layers=1))
    with torch.no_grad():  # a random head barely reacts to its input; a larger one makes the reward's slope visible
        net.head.weight.mul_(8.0)
    return UsabilityReward(net, "red perfume bottle", cutout)


def _inputs(seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    alpha_bar = float(diffusers.DDIMScheduler(num_train_timesteps=1000).alphas_cumprod[T])
    x0 = torch.rand(2, 3, 16, 16, generator=g) * 1.6 - 0.8  # an "image" in [-1, 1]
    x_t = alpha_bar ** 0.5 * x0 + (1 - alpha_bar) ** 0.5 * torch.randn(2, 3, 16, 16, generator=g)
    text = torch.randn(2, 5, 16, generator=g)
    cond = torch.rand(2, 3, 16, 16, generator=g)  # the product cut-out the ControlNet is conditioned on
    return x_t, text, cond


def _eps(unet, controlnet, x_t, text, cond):
    t = torch.full((x_t.shape[0],), T)
    down, mid = controlnet(x_t, t, encoder_hidden_states=text, controlnet_cond=cond, return_dict=False)
    return unet(x_t, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample


def _image(unet, controlnet, alpha_bar, x_t, text, cond):
    x0 = predicted_x0(x_t, _eps(unet, controlnet, x_t, text, cond), alpha_bar)
    return (x0.clamp(-1, 1) + 1) / 2


def _cc(unet, tuned, ref, alpha_bar, x_t, text, cond):
    empty = torch.zeros_like(text)
    # The reference runs with autograd on too, as the tuned model does: under no_grad torch may pick other
    # attention kernels, which differ in the last bits. consistency_condition_loss detaches it.
    ref_c, ref_u = _eps(unet, ref, x_t, text, cond), _eps(unet, ref, x_t, empty, cond)
    return consistency_condition_loss(_eps(unet, tuned, x_t, text, cond), _eps(unet, tuned, x_t, empty, cond),
                                      ref_c, ref_u, alpha_bar)


def test_gradients_reach_only_the_controlnet(generator, reward):
    unet, controlnet, alpha_bar = generator
    tuned = copy.deepcopy(controlnet)
    x_t, text, cond = _inputs()
    loss = reward.loss(_image(unet, tuned, alpha_bar, x_t, text, cond)) + \
        _cc(unet, tuned, controlnet, alpha_bar, x_t, text, cond)
    loss.backward()
    assert all(p.grad is None for p in unet.parameters())
    assert all(p.grad is None for p in reward.net.parameters())
    grads = [p.grad for p in tuned.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_consistency_condition_loss_is_zero_for_identical_models_and_positive_otherwise(generator):
    unet, controlnet, alpha_bar = generator
    x_t, text, cond = _inputs()
    same = copy.deepcopy(controlnet)
    assert float(_cc(unet, same, controlnet, alpha_bar, x_t, text, cond).detach()) == 0.0
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        for p in same.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    assert float(_cc(unet, same, controlnet, alpha_bar, x_t, text, cond).detach()) > 1e-6


def test_a_few_reward_steps_raise_the_reward(generator, reward):
    unet, controlnet, alpha_bar = generator
    tuned = copy.deepcopy(controlnet)
    opt = torch.optim.Adam(tuned.parameters(), lr=0.1)
    x_t, text, cond = _inputs()
    with torch.no_grad():
        before = float(reward(_image(unet, tuned, alpha_bar, x_t, text, cond)).mean())
    for _ in range(8):
        loss = reward.loss(_image(unet, tuned, alpha_bar, x_t, text, cond))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(reward(_image(unet, tuned, alpha_bar, x_t, text, cond)).mean())
    # A random reward network is nearly flat (optimising the image itself lifts P(available) ~60% in 30 steps);
    # through the generator, 8 steps lift it ~5%. Deterministic (fixed seeds); a wrong sign or a broken graph fails.
    assert after > 1.03 * before, (before, after)


def test_differentiable_planes_match_the_runtime_preprocessing():
    from c4u_engine.screening.preprocess import SIDE, generated_planes

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    ours = differentiable_planes(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0, SIDE)[0].numpy()
    # At the model's own size nothing is resized: the planes differ by the runtime's rounding only.
    assert np.abs(ours - generated_planes(img).astype(np.float32)).max() <= 0.5 + 1e-3


def test_encoder_strides_round_trip_through_the_model_directory(tmp_path):
    # a lighter encoder (stride 2 before the wide convolution) keeps the 8 x 8 token grid and reloads as exported
    from c4u_engine.screening.reward import load_rfnet
    from c4u_engine.train.screening_export import export_screening

    torch.manual_seed(0)
    net = RFNet(RFNetConfig(dim=16, heads=2, fusion_layers=1, encoder_strides=(2, 2, 1, 2))).eval()
    assert [m.stride[0] for m in net.gen_enc.convs if isinstance(m, torch.nn.Conv2d)] == [2, 2, 1, 2]
    out = export_screening(net, tmp_path / "light", threshold=0.5)
    again = load_rfnet(out)
    assert again.config.encoder_strides == (2, 2, 1, 2)
    x = torch.randint(0, 255, (2, 4, 64, 64), dtype=torch.uint8)
    text = torch.randint(1, 100, (1, 16))
    with torch.no_grad():
        assert torch.allclose(net(x, x[:1], text, torch.ones(1)), again(x, x[:1], text, torch.ones(1)))
    with pytest.raises(InvalidInputError, match="product is 8"):
        RFNetConfig(encoder_strides=(2, 2, 2, 2))
    # a model directory whose config names strides (or fields) no RFNet has: a typed error naming the file
    import json

    from c4u_engine.errors import ScreeningModelError

    for model in ({"encoder_strides": [2, 2, 2, 2]}, {"kernel": 5}):
        config = json.loads((out / "screen_config.json").read_text())
        config["model"].update(model)
        (out / "screen_config.json").write_text(json.dumps(config))
        with pytest.raises(ScreeningModelError, match="screen_config.json"):
            load_rfnet(out)
        config["model"] = again.config.to_dict()
        (out / "screen_config.json").write_text(json.dumps(config))
